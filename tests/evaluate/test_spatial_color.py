"""What'sUp, ColorSwap and MMVP-VLM: readers and metrics on hand-written files in the released schema, and
`openclip-ce eval` / `compare` end to end on them (with SugarCrepe++) with a tiny model."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from openclip_ce.evaluate.benchmarks import colorswap, mmvp_vlm, whatsup
from openclip_ce.evaluate.common import BenchmarkDataError, BenchmarkMissing, EvalOptions

from openclip_ce.testing.eval_scpp_spatial_color import (MMVP_LAYOUT, WHATSUP_EXPECTED, build_all_new, build_colorswap,
                                                build_colorswap_parquet, build_mmvp, build_whatsup)
from openclip_ce.testing.eval_benchmarks import FakeScorer

OPTS = EvalOptions()


# --------------------------------------------------------------------------- What'sUp


def test_whatsup_accuracies_pairs_sets_and_macros(assert_summary, tmp_path):
    expected, table = build_whatsup(tmp_path)
    res = whatsup.evaluate(tmp_path, FakeScorer(pair_scores=table), OPTS)
    assert_summary(res["summary"], expected)
    assert set(res["summary"]) == set(WHATSUP_EXPECTED)
    a = res["subsets"]["controlled_a"]
    assert a["n"] == 8 and a["object_pairs"] == 2
    assert a["per_preposition"]["right_of"] == {"accuracy": 0.5, "n": 2}
    assert res["subsets"]["controlled_b"]["per_preposition"]["in-front_of"] == {"accuracy": 1.0, "n": 1}
    assert res["subsets"]["gqa_spatial_two"]["per_preposition"]["behind"] == {"accuracy": 1.0, "n": 1}
    assert res["subsets"]["coco_spatial_one"]["per_preposition"]["top"] == {"accuracy": 0.0, "n": 1}


def test_whatsup_tie_with_the_correct_caption_counts_as_right(tmp_path):
    build_whatsup(tmp_path)
    res = whatsup.evaluate(tmp_path, FakeScorer(default=0.5), OPTS)   # every caption ties
    assert all(v == 1.0 for k, v in res["summary"].items()), res["summary"]


def test_whatsup_images_and_order(tmp_path):
    _, table = build_whatsup(tmp_path)
    scorer = FakeScorer(pair_scores=table)
    whatsup.evaluate(tmp_path, scorer, OPTS)
    entries = json.loads((tmp_path / "whatsup" / "controlled_clevr_dataset.json").read_text())
    case = next(c for c in scorer.cases if c.image.path.endswith("cube_behind_sphere.jpeg"))
    assert case.image.path == str(tmp_path / "whatsup" / "controlled_clevr" / "cube_behind_sphere.jpeg")
    assert case.texts == tuple(entries[1]["caption_options"]) and case.texts[0] == "A cube behind a sphere"
    coco = next(c for c in scorer.cases if c.texts[0] == "A photo of a dog on the left")
    assert coco.image.path == str(tmp_path / "whatsup" / "val2017" / "000000000139.jpg")
    gqa = next(c for c in scorer.cases if c.texts[0] == "A man in front of a bus")
    assert gqa.image.path == str(tmp_path / "whatsup" / "vg_images" / "2400002.jpg")


def test_whatsup_pair_and_set_outcomes(tmp_path):
    _, table = build_whatsup(tmp_path)
    res = whatsup.evaluate(tmp_path, FakeScorer(pair_scores=table), OPTS)
    g = res["outcomes"]["groups"]
    assert g["controlled_a/pair"] == {"ids": "0-3", "correct": "1101"}   # per object pair: left/right, then on/under
    assert g["controlled_a/set"] == {"ids": "0-1", "correct": "10"}
    assert g["controlled_b/pair"] == {"ids": "0-1", "correct": "01"}
    assert res["outcomes"]["metrics"]["avg"] == list(whatsup.SUBSETS)


def test_whatsup_coco_images_shared_with_sugarcrepe(tmp_path):
    expected, table = build_whatsup(tmp_path, coco_dir=tmp_path / "sugarcrepe" / "val2017")
    res = whatsup.evaluate(tmp_path, FakeScorer(pair_scores=table), OPTS)
    assert res["image_dirs"]["coco"] == str(tmp_path / "sugarcrepe" / "val2017")
    assert res["summary"]["coco_spatial"] == pytest.approx(expected["coco_spatial"])
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "whatsup" / "vg_images"), elsewhere)
    res = whatsup.evaluate(tmp_path, FakeScorer(pair_scores=table), EvalOptions(image_roots={"whatsup-gqa": str(elsewhere)}))
    assert res["summary"]["gqa_spatial"] == pytest.approx(expected["gqa_spatial"])


def test_whatsup_partial_files(tmp_path, caplog):
    _, table = build_whatsup(tmp_path)
    (tmp_path / "whatsup" / "vg_qa_two_obj.json").unlink()
    res = whatsup.evaluate(tmp_path, FakeScorer(pair_scores=table), OPTS)
    assert "avg" not in res["summary"] and "gqa_spatial" not in res["summary"] and "controlled" in res["summary"]
    assert res["missing_files"] == ["vg_qa_two_obj.json"] and "vg_qa_two_obj" in caplog.text


@pytest.mark.parametrize("case", ["qa-shape", "options", "image_path"])
def test_whatsup_malformed(tmp_path, case):
    build_whatsup(tmp_path)
    base = tmp_path / "whatsup"
    if case == "qa-shape":
        rows = json.loads((base / "coco_qa_two_obj.json").read_text())
        rows[1] = rows[1][:2]
        (base / "coco_qa_two_obj.json").write_text(json.dumps(rows))
        pattern = r"coco_qa_two_obj\.json entry 1: expected \[image_id, correct caption, wrong caption\]"
    elif case == "options":
        rows = json.loads((base / "controlled_images_dataset.json").read_text())
        rows[3]["caption_options"] = "A mug on a table"
        (base / "controlled_images_dataset.json").write_text(json.dumps(rows))
        pattern = r"controlled_images_dataset\.json entry 3: field 'caption_options' must be list, got str"
    else:
        rows = json.loads((base / "controlled_clevr_dataset.json").read_text())
        rows[2]["image_path"] = "data/controlled_clevr/cube_near_sphere.jpeg"
        (base / "controlled_clevr_dataset.json").write_text(json.dumps(rows))
        pattern = r"controlled_clevr_dataset\.json entry 2: image_path 'data/controlled_clevr/cube_near_sphere\.jpeg'"
    with pytest.raises(BenchmarkDataError, match=pattern):
        whatsup.evaluate(tmp_path, FakeScorer(default=0.0), OPTS)


def test_whatsup_missing_image_and_missing_benchmark(tmp_path):
    with pytest.raises(BenchmarkMissing, match=r"controlled_images_dataset\.json"):
        whatsup.evaluate(tmp_path, FakeScorer(), OPTS)
    _, table = build_whatsup(tmp_path)
    (tmp_path / "whatsup" / "controlled_images" / "mug_under_table.jpeg").unlink()
    with pytest.raises(BenchmarkDataError, match=r"controlled_images_dataset\.json entry 1: image not found: "
                                                 r".*mug_under_table\.jpeg"):
        whatsup.evaluate(tmp_path, FakeScorer(pair_scores=table), OPTS)
    res = whatsup.evaluate(tmp_path, FakeScorer(pair_scores=table), EvalOptions(missing_images="skip"))
    assert res["missing_images_skipped"] == 1 and res["subsets"]["controlled_a"]["n"] == 7
    assert res["summary"]["controlled_a"] == pytest.approx(6 / 7)
    # the mug's on/under pair and its set lose an image: right pairs 2 of 7/2, right sets 0 of 7/4
    assert res["summary"]["controlled_a/pair"] == pytest.approx(2 / 3.5)
    assert res["summary"]["controlled_a/set"] == 0.0


# --------------------------------------------------------------------------- ColorSwap


def test_colorswap_text_image_group(assert_summary, tmp_path):
    expected, pair_scores = build_colorswap(tmp_path)
    res = colorswap.evaluate(tmp_path, FakeScorer(pair_scores=pair_scores), OPTS)
    assert_summary(res["summary"], expected)
    assert res["layout"] == "json" and res["n"] == 5 and res["split"] == "test"   # train.json is not read
    assert res["per_source"]["image_source"]["dalle3"]["n"] == 2
    assert res["outcomes"]["groups"]["group"] == {"ids": "3,7,12,40-41", "correct": "10000"}


def test_colorswap_parquet_layout_gives_the_same(assert_summary, tmp_path):
    expected, pair_scores = build_colorswap(tmp_path / "a")
    build_colorswap_parquet(tmp_path / "a", tmp_path / "b")
    rows = json.loads((tmp_path / "a" / "colorswap" / "data" / "test.json").read_text())

    class RowScorer(FakeScorer):
        """Parquet images are named FILE#row=N/image_K: score them as the JSON's image of row N."""

        def _one(self, case, text):
            row, k = case.image.path.split("#row=")[1].split("/image_")
            return pair_scores[(Path(rows[int(row)][f"image_{k}"]).name, text)]

    res = colorswap.evaluate(tmp_path / "b", RowScorer(), OPTS)
    assert res["layout"] == "parquet" and res["n"] == 5
    assert_summary(res["summary"], expected)
    assert res["outcomes"]["groups"]["text"]["ids"] == "3,7,12,40-41"


def test_colorswap_missing_and_malformed(tmp_path):
    with pytest.raises(BenchmarkMissing, match=r"data/test\.json"):
        colorswap.evaluate(tmp_path, FakeScorer(), OPTS)
    build_colorswap(tmp_path)
    f = tmp_path / "colorswap" / "data" / "test.json"
    rows = json.loads(f.read_text())
    rows[2].pop("caption_2")
    f.write_text(json.dumps(rows))
    with pytest.raises(BenchmarkDataError, match=r"test\.json entry 2: missing field 'caption_2'"):
        colorswap.evaluate(tmp_path, FakeScorer(default=0.0), OPTS)
    rows[2]["caption_2"], rows[3]["id"] = "x", rows[0]["id"]
    f.write_text(json.dumps(rows))
    with pytest.raises(BenchmarkDataError, match=r"example id 3 appears more than once"):
        colorswap.evaluate(tmp_path, FakeScorer(default=0.0), OPTS)


def test_colorswap_missing_image(tmp_path):
    _, pair_scores = build_colorswap(tmp_path)
    (tmp_path / "colorswap" / "data" / "images" / "img_12_2.png").unlink()
    with pytest.raises(BenchmarkDataError, match=r"test\.json entry 2: image not found: .*img_12_2\.png"):
        colorswap.evaluate(tmp_path, FakeScorer(pair_scores=pair_scores), OPTS)
    res = colorswap.evaluate(tmp_path, FakeScorer(pair_scores=pair_scores), EvalOptions(missing_images="skip"))
    assert res["n"] == 4 and res["summary"]["image"] == pytest.approx(1 / 4)


# --------------------------------------------------------------------------- MMVP-VLM


def test_mmvp_pairs_by_pattern_as_the_authors(assert_summary, tmp_path):
    expected, pair_scores = build_mmvp(tmp_path)
    res = mmvp_vlm.evaluate(tmp_path, FakeScorer(pair_scores=pair_scores), OPTS)
    assert_summary(res["summary"], expected)
    assert set(res["summary"]) == set(expected)              # an excerpt: no average over the nine patterns
    assert not res["complete"] and res["n_pairs"] == len(MMVP_LAYOUT)
    assert res["per_pattern"]["Presence of Specific Features"]["types"] == ["Presence"]
    assert res["outcomes"]["groups"]["orientation_and_direction"]["correct"] == "100011101010110"


def test_mmvp_texts_images_and_parity(tmp_path):
    _, pair_scores = build_mmvp(tmp_path)
    scorer = FakeScorer(pair_scores=pair_scores)
    mmvp_vlm.evaluate(tmp_path, scorer, OPTS)
    rows = list(csv.reader(open(tmp_path / "mmvp-vlm" / "Questions.csv")))
    first = scorer.cases[0]
    assert first.texts == ("a photo of " + rows[1][2], "a photo of " + rows[2][2])
    assert first.image.path == str(tmp_path / "mmvp-vlm" / "MLLM_VLM Images" / "Orientation" / "1.jpg")
    s = np.array([[[0.9, 0.2], [0.1, 0.8]]])   # s[pair, image, text]
    assert mmvp_vlm.pair_outcomes(s, np.array([[1, 2]]))["pair"].tolist() == [True]
    assert mmvp_vlm.pair_outcomes(s, np.array([[2, 1]]))["pair"].tolist() == [False]
    assert mmvp_vlm.pair_outcomes(s, np.array([[1, 3]]))["pair"].tolist() == [False]  # both odd: both want image 1


def test_mmvp_full_file_gives_the_average(tmp_path):
    layout = (["right"] * 3 + ["t1_wrong"] * 12) + ["right"] * 15 + ["t2_tie"] * 15 + ["t1_tie"] * 90
    _, pair_scores = build_mmvp(tmp_path, layout=layout, images_dir="MMVP_VLM_Images")
    res = mmvp_vlm.evaluate(tmp_path, FakeScorer(pair_scores=pair_scores), OPTS)
    assert res["complete"] and res["summary"]["orientation_and_direction"] == pytest.approx(3 / 15)
    assert res["summary"]["state_and_condition"] == 1.0 and res["summary"]["texts"] == 0.0
    assert res["summary"]["avg"] == pytest.approx((0.2 + 1 + 1) / 9)
    assert res["outcomes"]["metrics"]["avg"] == [mmvp_vlm.key(p) for p in mmvp_vlm.PATTERNS]


@pytest.mark.parametrize("case", ["odd", "columns", "qid"])
def test_mmvp_malformed(tmp_path, case):
    build_mmvp(tmp_path)
    f = tmp_path / "mmvp-vlm" / "Questions.csv"
    rows = list(csv.reader(open(f)))
    if case == "odd":
        rows = rows[:-1]
        pattern = r"Questions\.csv: 33 statements, not a whole number of pairs"
    elif case == "columns":
        rows[4] = rows[4][:2]
        pattern = r"Questions\.csv row 5: expected 3 columns"
    else:
        rows[6][0] = "six"
        pattern = r"Questions\.csv row 7: Question ID must be a whole number, got 'six'"
    with open(f, "w", newline="") as out:
        csv.writer(out).writerows(rows)
    with pytest.raises(BenchmarkDataError, match=pattern):
        mmvp_vlm.evaluate(tmp_path, FakeScorer(default=0.0), OPTS)


def test_mmvp_missing(tmp_path):
    with pytest.raises(BenchmarkMissing, match="Questions.csv"):
        mmvp_vlm.evaluate(tmp_path, FakeScorer(), OPTS)
    _, pair_scores = build_mmvp(tmp_path)
    (tmp_path / "mmvp-vlm" / "MLLM_VLM Images" / "Presence" / "34.jpg").unlink()
    with pytest.raises(BenchmarkDataError, match=r"Questions\.csv row 34: image not found: .*Presence/34\.jpg"):
        mmvp_vlm.evaluate(tmp_path, FakeScorer(pair_scores=pair_scores), OPTS)


def test_mmvp_tiny_model_picks_as_the_authors_softmax(tmp_path):
    """Our strict comparison picks the image the authors' softmax over the two images (> 0.5) picks."""
    import torch

    from openclip_ce.evaluate.models import load_model
    from openclip_ce.evaluate.scorer import ClipScorer
    from openclip_ce.testing.tiny_clip import write_tiny_model_dir

    build_mmvp(tmp_path)
    loaded = load_model(write_tiny_model_dir(tmp_path / "model"))
    scorer = ClipScorer(loaded.model, loaded.preprocess, loaded.tokenizer, "cpu", 8, 0)
    res = mmvp_vlm.evaluate(tmp_path, scorer, OPTS)
    pairs = mmvp_vlm.read_pairs(tmp_path / "mmvp-vlm" / "Questions.csv", tmp_path / "mmvp-vlm" / "MLLM_VLM Images")
    from PIL import Image
    right = {p: 0 for p in mmvp_vlm.PATTERNS}
    with torch.no_grad():
        for p in pairs:
            imgs = torch.stack([loaded.preprocess(Image.open(r.path)) for r in p["images"]])
            fi = torch.nn.functional.normalize(loaded.model.encode_image(imgs), dim=-1)
            ok = True
            for t, q in zip(p["texts"], p["qids"]):
                ft = torch.nn.functional.normalize(loaded.model.encode_text(loaded.tokenizer([t])), dim=-1)
                prob_image1 = (100.0 * ft @ fi.T).softmax(dim=-1)[0, 0].item()
                ok &= ("img1" if prob_image1 > 0.5 else "img2") == ("img1" if q % 2 == 1 else "img2")
            right[p["pattern"]] += ok
    assert res["summary"]["orientation_and_direction"] == pytest.approx(right[mmvp_vlm.PATTERNS[0]] / 15)
    assert res["summary"]["presence_of_specific_features"] == pytest.approx(right[mmvp_vlm.PATTERNS[1]] / 2)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, evaluate_twice):
    tmp = tmp_path_factory.mktemp("eval_new")
    _, outs = evaluate_twice(tmp, build_all_new, "--benchmarks", "sugarcrepe-pp,whatsup,colorswap,mmvp-vlm",
                             "--batch-size", "8", "--image-root", f"whatsup-gqa={tmp / 'bench' / 'whatsup' / 'vg_images'}")
    return tmp, outs


def test_eval_cli_writes_the_new_benchmarks(evaluated):
    tmp, outs = evaluated
    res = json.loads(outs[0].read_text())
    keys = {"sugarcrepe-pp": ["replace_obj/itt", "swap_att/tot", "itt", "tot"],
            "whatsup": ["controlled_a", "controlled_a/pair", "controlled_b/set", "controlled", "coco_spatial",
                        "gqa_spatial", "avg"],
            "colorswap": ["text", "image", "group"],
            "mmvp-vlm": ["orientation_and_direction", "presence_of_specific_features"]}
    for bench, ks in keys.items():
        for k in ks:
            v = res["summary"][f"{bench}/{k}"]
            assert 0.0 <= v <= 1.0, (bench, k, v)
    assert not res["skipped"]
    proto = res["protocol"]
    assert "ITT" in proto["sugarcrepe-pp"] and "argmax" in proto["whatsup"] and "parity" in proto["mmvp-vlm"]
    assert proto["image_roots"] == {"whatsup-gqa": str(tmp / "bench" / "whatsup" / "vg_images")}
    md = outs[0].with_suffix(".md").read_text()
    for bench in keys:
        assert f"## {bench}" in md
    row = next(line for line in md.splitlines() if line.startswith("| controlled_a/set |"))
    assert row.split("|")[2].strip() == "2" and row.split("|")[3].strip() == "0.4"   # 2 sets, chance 1/256
    row = next(line for line in md.splitlines() if line.startswith("| itt |"))
    assert row.split("|")[2].strip() == "17" and row.split("|")[3].strip() == "33.3"


def test_compare_pairs_the_new_benchmarks(evaluated, mcnemar_p):
    from openclip_ce.cli import main

    tmp, outs = evaluated
    prefix = tmp / "cmp" / "a_vs_b"
    assert main(["compare", *map(str, outs), "--out", str(prefix), "--labels", "a,b"]) == 0
    js = json.loads(Path(f"{prefix}.json").read_text())
    full = [json.loads(o.read_text()) for o in outs]
    assert js["n"]["whatsup/avg"] == {"a": 23, "b": 23} and js["n"]["mmvp-vlm/orientation_and_direction"]["a"] == 15
    assert js["n"]["colorswap/group"] == {"a": 5, "b": 5}
    # the McNemar p-value of colorswap/group, recomputed from the two files' per-example outcomes
    g0, g1 = (f["benchmarks"]["colorswap"]["outcomes"]["groups"]["group"]["correct"] for f in full)
    p = mcnemar_p(g0, g1)
    assert js["difference_vs_first"]["colorswap/group"]["b"]["p"] == pytest.approx(p)
    md = Path(f"{prefix}.md").read_text()
    assert "## sugarcrepe-pp" in md and "## mmvp-vlm" in md


def test_published_rows_name_metrics_the_readers_write(tmp_path):
    """Every published.json row of the four benchmarks is a summary key their readers produce."""
    from openclip_ce.evaluate.benchmarks import sugarcrepe_pp
    from openclip_ce.evaluate.published import load_published

    from openclip_ce.testing.eval_scpp_spatial_color import TextPairFakeScorer, build_scpp

    build_scpp(tmp_path)
    build_whatsup(tmp_path)
    build_colorswap(tmp_path)
    build_mmvp(tmp_path, layout=["right"] * 135)
    scorer = TextPairFakeScorer(default=0.0, text_pairs={})
    scorer.score_texts = lambda pairs, desc: np.zeros(len(pairs))
    produced = {f"{m.NAME}/{k}" for m in (sugarcrepe_pp, whatsup, colorswap, mmvp_vlm)
                for k in m.evaluate(tmp_path, scorer, OPTS)["summary"]}
    data = load_published()
    ours = [k for k in data["metrics"] if k.split("/")[0] in ("sugarcrepe-pp", "whatsup", "colorswap", "mmvp-vlm")]
    assert len(ours) == 10 + 6 + 3 + 10
    assert set(ours) <= produced, set(ours) - produced
    assert data["metrics"]["colorswap/group"]["value"] == 0.12 and not data["metrics"]["colorswap/group"]["check"]
