"""SugarCrepe++: ITT and TOT per split as the authors compute them, on hand-written files in the released schema."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from openclip_ce.evaluate.benchmarks import sugarcrepe_pp
from openclip_ce.evaluate.common import BenchmarkDataError, BenchmarkMissing, EvalOptions

from openclip_ce.testing.eval_scpp_spatial_color import SCPP_SPLITS, TextPairFakeScorer, build_scpp

OPTS = EvalOptions()


def test_itt_tot_per_split_and_means(assert_summary, tmp_path):
    expected, table, pairs = build_scpp(tmp_path)
    scorer = TextPairFakeScorer(text_pairs=pairs, text_scores=table)
    res = sugarcrepe_pp.evaluate(tmp_path, scorer, OPTS)
    assert_summary(res["summary"], expected)
    assert set(res["summary"]) == {f"{s}/{t}" for s in SCPP_SPLITS for t in ("itt", "tot")} | {"itt", "tot"}
    # the authors' side scores: P1 vs N and P2 vs N alone (replace_obj = A, A, B: B has P2 below N)
    assert res["splits"]["replace_obj"]["itt_p1"] == 1.0
    assert res["splits"]["replace_obj"]["itt_p2"] == pytest.approx(2 / 3)
    assert res["splits"]["swap_att"]["n"] == 5 and res["missing_images_skipped"] == 0


def test_reader_asks_the_authors_comparisons(tmp_path):
    _, table, pairs = build_scpp(tmp_path)
    scorer = TextPairFakeScorer(text_pairs=pairs, text_scores=table)
    sugarcrepe_pp.evaluate(tmp_path, scorer, OPTS)
    items = json.loads((tmp_path / "sugarcrepe-pp" / "replace_rel.json").read_text())
    case = next(c for c in scorer.cases if c.texts[0] == items[1]["caption"])
    assert case.texts == (items[1]["caption"], items[1]["caption2"], items[1]["negative_caption"])
    assert case.image.path.endswith(items[1]["filename"])
    p1, p2, n = case.texts
    k = scorer.pairs_asked.index((p1, p2))
    assert scorer.pairs_asked[k:k + 3] == [(p1, p2), (p1, n), (p2, n)]


def test_metric_definitions_and_strict_ties():
    # rows: s(I,P1), s(I,P2), s(I,N) | s(P1,P2), s(P1,N), s(P2,N)
    image = np.array([[0.3, 0.3, 0.2], [0.3, 0.2, 0.2], [0.1, 0.4, 0.3], [0.5, 0.6, 0.1]])
    text = np.array([[0.8, 0.7, 0.7], [0.8, 0.8, 0.1], [0.9, 0.1, 0.2], [0.2, 0.3, 0.1]])
    r = sugarcrepe_pp.triplet_outcomes(image, text)
    assert r["itt"].tolist() == [True, False, False, True]
    assert r["tot"].tolist() == [True, False, True, False]
    assert r["itt_p1"].tolist() == [True, True, False, True] and r["itt_p2"].tolist() == [True, False, True, True]


def test_missing_split_drops_the_means(tmp_path, caplog):
    _, table, pairs = build_scpp(tmp_path)
    (tmp_path / "sugarcrepe-pp" / "swap_obj.json").unlink()
    res = sugarcrepe_pp.evaluate(tmp_path, TextPairFakeScorer(text_pairs=pairs, text_scores=table), OPTS)
    assert res["missing_splits"] == ["swap_obj"] and "itt" not in res["summary"] and "tot" not in res["summary"]
    assert res["summary"]["replace_rel/tot"] == pytest.approx(1 / 3)
    assert "swap_obj" in caplog.text


def test_missing_benchmark_is_skipped_with_a_note(tmp_path):
    with pytest.raises(BenchmarkMissing, match=r"replace_obj\.json") as e:
        sugarcrepe_pp.evaluate(tmp_path, TextPairFakeScorer(), OPTS)
    assert str(tmp_path / "sugarcrepe-pp") in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("case", ["field", "type", "not-a-list", "json"])
def test_malformed_file_names_file_and_entry(tmp_path, case):
    build_scpp(tmp_path)
    f = tmp_path / "sugarcrepe-pp" / "replace_rel.json"
    data = json.loads(f.read_text())
    if case == "field":
        del data[1]["caption2"]
        f.write_text(json.dumps(data))
        pattern = r"replace_rel\.json entry 1: missing field 'caption2'"
    elif case == "type":
        data[2]["negative_caption"] = 3
        f.write_text(json.dumps(data))
        pattern = r"replace_rel\.json entry 2: field 'negative_caption' must be str, got int"
    elif case == "not-a-list":
        f.write_text(json.dumps({str(i): e for i, e in enumerate(data)}))
        pattern = r"replace_rel\.json: expected a JSON list of SugarCrepe\+\+ items, got dict"
    else:
        f.write_text('[{"id": 0, "filename": ')
        pattern = r"replace_rel\.json: not valid UTF-8 JSON"
    with pytest.raises(BenchmarkDataError, match=pattern) as e:
        sugarcrepe_pp.evaluate(tmp_path, TextPairFakeScorer(default=0.0), OPTS)
    assert "\n" not in e.value.one_line()


def test_missing_image_is_an_error_naming_entry_or_skipped(tmp_path):
    _, table, pairs = build_scpp(tmp_path)
    (tmp_path / "sugarcrepe-pp" / "val2017" / "000000000001.jpg").unlink()
    with pytest.raises(BenchmarkDataError, match=r"replace_obj\.json entry 1: image not found: .*000000000001\.jpg"):
        sugarcrepe_pp.evaluate(tmp_path, TextPairFakeScorer(text_pairs=pairs, text_scores=table), OPTS)
    res = sugarcrepe_pp.evaluate(tmp_path, TextPairFakeScorer(text_pairs=pairs, text_scores=table),
                                 EvalOptions(missing_images="skip"))
    # items 1 and 4 of each split use image 1: 1 + 1 + 1 + 1 + 2 of the 17 items
    assert res["missing_images_skipped"] == 6
    assert sum(v["n"] for v in res["splits"].values()) == 17 - 6
    assert res["summary"]["swap_obj/itt"] == 1.0   # item 1 (the identical-negative one) is gone


def test_image_directory_shared_with_sugarcrepe_or_given(tmp_path):
    expected, table, pairs = build_scpp(tmp_path, image_dir=tmp_path / "sugarcrepe" / "val2017")
    assert not (tmp_path / "sugarcrepe-pp" / "val2017").exists()
    res = sugarcrepe_pp.evaluate(tmp_path, TextPairFakeScorer(text_pairs=pairs, text_scores=table), OPTS)
    assert res["image_dir"] == str(tmp_path / "sugarcrepe" / "val2017")
    assert res["summary"]["itt"] == pytest.approx(expected["itt"])
    moved = tmp_path / "coco" / "val2017"
    moved.parent.mkdir()
    (tmp_path / "sugarcrepe" / "val2017").rename(moved)
    with pytest.raises(BenchmarkDataError, match="image not found"):
        sugarcrepe_pp.evaluate(tmp_path, TextPairFakeScorer(text_pairs=pairs, text_scores=table), OPTS)
    res = sugarcrepe_pp.evaluate(tmp_path, TextPairFakeScorer(text_pairs=pairs, text_scores=table),
                                 EvalOptions(image_roots={"sugarcrepe-pp": str(moved)}))
    assert res["image_dir"] == str(moved) and res["summary"]["tot"] == pytest.approx(expected["tot"])


def test_outcomes_pool_the_splits(tmp_path):
    _, table, pairs = build_scpp(tmp_path)
    res = sugarcrepe_pp.evaluate(tmp_path, TextPairFakeScorer(text_pairs=pairs, text_scores=table), OPTS)
    out = res["outcomes"]
    assert out["metrics"]["itt"] == [f"{s}/itt" for s in SCPP_SPLITS]
    assert out["groups"]["swap_att/itt"] == {"ids": "0-4", "correct": "00011"}
    assert out["groups"]["swap_att/tot"] == {"ids": "0-4", "correct": "01110"}


def test_tiny_model_matches_the_authors_per_item_loop(tmp_path):
    """The reader's batched ITT/TOT equal the authors' loop (each image and text encoded on its own, cosine)."""
    from openclip_ce.evaluate.models import load_model
    from openclip_ce.evaluate.scorer import ClipScorer
    from openclip_ce.testing.tiny_clip import write_tiny_model_dir

    build_scpp(tmp_path)
    loaded = load_model(write_tiny_model_dir(tmp_path / "model"))
    scorer = ClipScorer(loaded.model, loaded.preprocess, loaded.tokenizer, "cpu", 4, 0)
    res = sugarcrepe_pp.evaluate(tmp_path, scorer, OPTS)
    model, tok = loaded.model.eval(), loaded.tokenizer
    for split in SCPP_SPLITS:
        itt = tot = 0
        items = json.loads((tmp_path / "sugarcrepe-pp" / f"{split}.json").read_text())
        with torch.no_grad():
            for e in items:
                img = model.encode_image(loaded.preprocess(Image.open(tmp_path / "sugarcrepe-pp" / "val2017" /
                                                                       e["filename"])).unsqueeze(0))
                img = F.normalize(img, dim=-1)
                p1, p2, n = (F.normalize(model.encode_text(tok([e[k]])), dim=-1)
                             for k in ("caption", "caption2", "negative_caption"))
                cos = lambda a, b: F.cosine_similarity(a, b, dim=1, eps=1e-6).item()  # noqa: E731
                itt += cos(img, p1) > cos(img, n) and cos(img, p2) > cos(img, n)
                tot += cos(p1, p2) > cos(p1, n) and cos(p1, p2) > cos(p2, n)
        assert res["summary"][f"{split}/itt"] == pytest.approx(itt / len(items)), split
        assert res["summary"][f"{split}/tot"] == pytest.approx(tot / len(items)), split
