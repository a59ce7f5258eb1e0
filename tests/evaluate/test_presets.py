"""`--benchmarks all` / `ce-clip`, the zero-shot suites, and `eval` + `compare` end to end on SPEC, EqBen and BiVLC."""

import inspect
import json
import re

import numpy as np
import pytest

from openclip_ce.cli import main
from openclip_ce.evaluate import registry
from openclip_ce.evaluate.benchmarks import zeroshot, zeroshot_suites
from openclip_ce.evaluate.common import EvalOptions
from openclip_ce.evaluate.reference import load_reference
from openclip_ce.testing.tiny_clip import write_tiny_model_dir

from openclip_ce.testing.eval_bidir_benchmarks import build_bivlc, build_eqben, build_spec
from openclip_ce.testing.eval_benchmarks import build_aro, build_imagefolder, build_sugarcrepe


# --------------------------------------------------------------------------- presets


def test_all_is_every_registered_benchmark_and_ce_clip_what_the_paper_reports(monkeypatch):
    assert registry.expand("all") == registry.names()
    assert {"spec", "eqben", "bivlc", "zeroshot"} <= set(registry.expand("all"))
    paper = {k.split("/", 1)[0] for k in load_reference("paper").values}
    assert set(registry.expand("ce-clip")) == paper == {"aro", "valse", "vl-checklist", "sugarcrepe"}
    assert registry.expand("paper") == registry.expand("ce-clip")
    assert registry.expand("winoground, ce-clip,aro") == ["aro", "sugarcrepe", "valse", "vl-checklist", "winoground"]
    with pytest.raises(ValueError, match=r"unknown benchmark\(s\) \['nope'\]; choose from .*spec.* or all,ce-clip"):
        registry.expand("aro,nope")
    # a benchmark another module registers is in `all` without being listed anywhere
    from openclip_ce.evaluate.registry import Benchmark

    real = registry._load()
    monkeypatch.setattr(registry, "_load", lambda: (*real, Benchmark(name="zz-new", order=99, evaluate=None)))
    assert registry.expand("all")[-1] == "zz-new" and "zz-new" not in registry.expand("ce-clip")


def test_unknown_benchmark_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--model", "x", "--data-root", str(tmp_path), "--out", str(tmp_path / "r.json"),
              "--benchmarks", "ce-clip,sugarcrepepp"])
    assert e.value.code == 2
    assert "unknown benchmark(s) ['sugarcrepepp']" in capsys.readouterr().err


# --------------------------------------------------------------------------- zero-shot suites


def _builder_names():
    """Dataset names clip_benchmark's build_dataset / build_vtab_dataset branch on (read from its source)."""
    from clip_benchmark.datasets import builder

    def names(fn):
        src = inspect.getsource(fn)
        found = set(re.findall(r'dataset_name == "([^"]+)"', src))
        for group in re.findall(r'dataset_name in \(([^)]*)\)', src):
            found |= set(re.findall(r'"([^"]+)"', group))
        return found | {p + "_" for p in re.findall(r'dataset_name\.startswith\("([^"]+)_"\)', src)}

    return names(builder.build_dataset), names(builder.build_vtab_dataset)


def test_elevater21_is_the_21_tasks_and_every_candidate_is_a_clip_benchmark_dataset():
    tasks = zeroshot_suites.suite_tasks("elevater21")
    names = [t for t, _ in tasks]
    assert len(names) == len(set(names)) == 21 and "imagenet1k" in names and "hateful_memes" in names
    top, vtab = _builder_names()
    for task, candidates in tasks:
        for c in candidates:
            if c.startswith("folder:"):
                assert task == "hateful_memes"  # the one ELEVATER task clip_benchmark has no loader for
            elif c.startswith("wds/"):
                continue  # clip_benchmark's webdataset copies: any name
            elif c.startswith("vtab/"):
                short = c[len("vtab/"):]
                assert short in vtab or any(short.startswith(p) for p in vtab if p.endswith("_")), c
            else:
                assert c in top, c


def test_clip_benchmark_collections_are_read_from_clip_benchmark():
    from clip_benchmark.datasets.builder import dataset_collection

    plus = zeroshot_suites.suite_tasks("vtab+")
    assert [t for t, _ in plus] == [d for d in dataset_collection["vtab+"] if d != "voc2007_multilabel"]
    assert len(plus) == 35 and dict(plus)["vtab/cifar10"] == ("vtab/cifar10", "wds/vtab/cifar10")
    assert zeroshot_suites.suite_tasks("cifar10") is None


def test_plan_runs_each_dataset_once():
    runs, suites = zeroshot_suites.plan(["cifar10", "folder:toy", "elevater21", "toy"])
    labels = [label for label, _ in runs]
    assert labels[:2] == ["cifar10", "toy"] and len(labels) == len(set(labels)) == 22
    assert dict(runs)["cifar10"] == ("cifar10",)  # asked by name first: read as named
    assert list(suites) == ["elevater21"] and len(suites["elevater21"]) == 21


def test_suite_average_needs_every_task(tmp_path, monkeypatch):
    """<suite>/avg = mean of the tasks' top-1 accuracies, pooled outcomes; left out when one is missing."""
    acc = {"folder:a": [1, 1, 0, 0], "b": [1, 0, 0], "wds/c": [1, 1, 1, 1, 1]}
    monkeypatch.setattr(zeroshot_suites, "suite_tasks", lambda name: (
        ("a", ("folder:a",)), ("b", ("b",)), ("c", ("c", "wds/c"))) if name == "toy3" else None)

    def fake(name, root, scorer, backend):
        hits = np.array(acc[name], dtype=bool)
        return {"acc1": hits.mean(), "acc5": float("nan"), "mean_per_class_recall": hits.mean(), "n": len(hits),
                "num_classes": 4, "hits": {"acc1": hits, "acc5": hits}}

    monkeypatch.setattr(zeroshot, "evaluate_dataset", fake)
    for d in ("a", "b", "wds/c"):
        (tmp_path / "zeroshot" / d).mkdir(parents=True)
    opts = EvalOptions(settings={"zeroshot": {"datasets": ("toy3",)}})
    res = zeroshot.evaluate(tmp_path, None, opts)
    assert res["summary"]["toy3/avg"] == pytest.approx(np.mean([0.5, 1 / 3, 1.0]))
    assert res["suites"]["toy3"]["datasets"] == {"a": "folder:a", "b": "b", "c": "wds/c"}
    assert res["outcomes"]["metrics"]["toy3/avg"] == ["a/acc1", "b/acc1", "c/acc1"]
    assert res["chance"]["toy3/avg"] == pytest.approx(0.25)
    (tmp_path / "zeroshot" / "b").rmdir()
    res = zeroshot.evaluate(tmp_path, None, opts)
    assert "toy3/avg" not in res["summary"] and res["suites"]["toy3"]["missing"] == ["b"]
    assert res["suites"]["toy3"]["mean_of_present"] == pytest.approx(0.75)
    assert res["skipped"] == {"b": f"expected the dataset directory {tmp_path / 'zeroshot' / 'b'}"}


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bidir")
    build_spec(tmp / "data")
    build_eqben(tmp / "data")
    build_bivlc(tmp / "data")
    build_imagefolder(tmp / "data", name="hateful_memes", per_class=2)
    return tmp, write_tiny_model_dir(tmp / "model")


def _eval(tmp, model, out, *extra):
    return main(["eval", "--model", model, "--data-root", str(tmp / "data"), "--out", str(out), "--workers", "0",
                 "--batch-size", "8", "--device", "cpu", *extra])


def test_eval_all_runs_the_new_benchmarks_and_compare_tests_them(bench, caplog):
    tmp, model = bench
    outs = [tmp / "r" / f"m{i}.json" for i in range(2)]
    assert _eval(tmp, model, outs[0], "--zeroshot-datasets", "elevater21") == 0  # default: --benchmarks all
    assert _eval(tmp, write_tiny_model_dir(tmp / "model2"), outs[1], "--benchmarks", "spec,eqben,bivlc") == 0
    res = json.loads(outs[0].read_text())
    assert res["protocol"]["benchmarks_requested"] == registry.names()
    for key in ("spec/i2t", "spec/t2i", "spec/count/t2i", "eqben/group", "eqben/eqbenkubric/text",
                "eqben/eqbenag/image", "bivlc/i2t", "bivlc/t2i", "bivlc/group", "bivlc/swap/t2i",
                "zeroshot/hateful_memes/acc1"):
        assert 0.0 <= res["summary"][key] <= 1.0, key
    assert {"aro", "sugarcrepe", "valse", "vl-checklist", "winoground"} <= set(res["skipped"])
    zs = res["benchmarks"]["zeroshot"]
    assert "zeroshot/elevater21/avg" not in res["summary"] and len(zs["suites"]["elevater21"]["missing"]) == 20
    assert zs["suites"]["elevater21"]["datasets"] == {"hateful_memes": "folder:hateful_memes"}
    assert len(res["protocol"]["zeroshot_suites"]["elevater21"]) == 21
    md = outs[0].with_suffix(".md").read_text()
    assert "## spec" in md and "## eqben" in md and "## bivlc" in md
    # BiVLC's group score is the mean of the per-example outcomes the file records (what compare pairs)
    js = res["benchmarks"]["bivlc"]
    assert js["summary"]["group"] == pytest.approx(js["outcomes"]["groups"]["group"]["correct"].count("1") / 7)
    prefix = tmp / "cmp"
    assert main(["compare", *map(str, outs), "--out", str(prefix)]) == 0
    cmp = json.loads((tmp / "cmp.json").read_text())
    assert cmp["n"]["bivlc/group"] == {lab: 7 for lab in cmp["models"]}
    assert cmp["n"]["eqben/group"][cmp["models"][0]] == 21 and cmp["chance"]["spec/existence/i2t"] is not None
    assert cmp["chance"]["eqben/eqbensd/group"] == pytest.approx(1 / 6)
    assert cmp["difference_vs_first"]["spec/i2t"][cmp["models"][1]]["n"] == 17


def test_ce_clip_preset_and_compare_reference_paper_lists_what_is_missing(bench, tmp_path, caplog):
    tmp, model = bench
    data = tmp_path / "data"
    build_aro(data, with_order=False)
    build_sugarcrepe(data)
    build_spec(data)
    out = tmp_path / "ce.json"
    assert main(["eval", "--model", model, "--data-root", str(data), "--out", str(out), "--workers", "0",
                 "--device", "cpu", "--benchmarks", "paper"]) == 0
    res = json.loads(out.read_text())
    assert res["protocol"]["benchmarks_requested"] == ["aro", "sugarcrepe", "valse", "vl-checklist"]
    assert "spec" not in res["benchmarks"] and set(res["skipped"]) == {"valse", "vl-checklist"}
    assert main(["compare", str(out), "--reference", "paper", "--out", str(tmp_path / "c")]) == 0
    md = (tmp_path / "c.md").read_text()
    line = next(l for l in md.splitlines() if l.startswith("Benchmarks of the paper not in these results"))
    assert "valse, vl-checklist." in line and "`openclip-ce eval --benchmarks paper` runs every benchmark" in line
    assert "not in these results" in caplog.text and "valse/avg" in caplog.text
