"""SPEC, EqBen and BiVLC readers against hand-computed metrics on fixtures in the released layouts."""

import json

import numpy as np
import pytest

from openclip_ce.evaluate.benchmarks import bivlc, eqben, spec
from openclip_ce.evaluate.common import BenchmarkDataError, BenchmarkMissing, EvalOptions, ImageRef
from openclip_ce.evaluate.scorer import load_image

from openclip_ce.testing.eval_bidir_benchmarks import (EQBEN_SUBSETS, SPEC_MIX, SPEC_SUBSETS, TableScorer, build_bivlc,
                                  build_eqben, build_spec)

OPTS = EvalOptions()


def _same(res, expected):
    assert set(res["summary"]) == set(expected)
    for k, v in expected.items():
        assert res["summary"][k] == pytest.approx(v), k


# --------------------------------------------------------------------------- SPEC


def test_spec_accuracies_per_subset_and_direction(tmp_path):
    expected, scorer = build_spec(tmp_path)
    res = spec.evaluate(tmp_path, scorer, OPTS)
    _same(res, expected)
    # hand check of two cells: absolute_size i2t holds queries 0 (right), 1 (tie, label first: right), 3 (wrong)
    assert res["summary"]["absolute_size/i2t"] == pytest.approx(2 / 3)
    assert res["summary"]["absolute_spatial/t2i"] == 1.0  # query 1 alone: the tie the label wins
    assert res["subsets"]["count"]["i2t"] == {"accuracy": pytest.approx(3 / 5), "n": 5, "candidates": [3, 4]}
    # i2t queries are one image against texts, t2i queries one text against images
    i2t = [c for c in scorer.cases if "-i2t-" in c.image.path]
    t2i = [c for c in scorer.cases if "-t2i-" in c.image.path]
    assert len({c.image for c in i2t}) == sum(len(v) for (s, d), v in SPEC_MIX.items() if d == "i2t")
    assert all(c.texts[0].endswith("query") for c in t2i) and not any(c.texts[0].endswith("query") for c in i2t)
    out = res["outcomes"]
    assert out["groups"]["count/i2t"]["ids"] == "0-4" and out["metrics"]["t2i"] == [f"{s}/t2i" for s in SPEC_SUBSETS]
    assert res["chance"]["existence/i2t"] == pytest.approx(np.mean([1 / 2, 1 / 3]))


def test_spec_first_maximum_wins_a_tie():
    scores = [np.array([0.5, 0.5, 0.1]), np.array([0.5, 0.5, 0.1]), np.array([0.1, 0.3, 0.3])]
    assert spec.first_argmax_hits(scores, [0, 1, 1]).tolist() == [True, False, True]


def test_spec_zip_layout_image_root_and_missing_subset(tmp_path):
    expected, scorer = build_spec(tmp_path / "a", under_data=True)  # spec/data/<subset>/ as the zip extracts
    assert spec.evaluate(tmp_path / "a", scorer, OPTS)["summary"]["i2t"] == pytest.approx(expected["i2t"])
    # images elsewhere: --image-root spec=DIR reads DIR/<subset>/<path>
    moved = tmp_path / "imgs"
    (tmp_path / "a" / "spec" / "data").rename(moved)
    (tmp_path / "a" / "spec" / "data").mkdir()
    for s in SPEC_SUBSETS:
        (tmp_path / "a" / "spec" / "data" / s).mkdir()
        for f in ("image2text.json", "text2image.json"):
            (moved / s / f).rename(tmp_path / "a" / "spec" / "data" / s / f)
    res = spec.evaluate(tmp_path / "a", scorer, EvalOptions(image_roots={"spec": str(moved)}))
    assert res["summary"]["t2i"] == pytest.approx(expected["t2i"])
    (tmp_path / "a" / "spec" / "data" / "count" / "text2image.json").unlink()
    res = spec.evaluate(tmp_path / "a", scorer, EvalOptions(image_roots={"spec": str(moved)}))
    assert "t2i" not in res["summary"] and "count/t2i" not in res["summary"] and "i2t" in res["summary"]
    assert res["missing_files"] == ["count/text2image.json"]


@pytest.mark.parametrize("change, pattern", [
    (lambda d: d[1].update(label=3), r"image2text\.json entry 1: label 3 is not an index into its 3 keys"),
    (lambda d: d[0].update(keys="a text"), r"image2text\.json entry 0: field 'keys' must be list, got str"),
    (lambda d: d[2].pop("query"), r"image2text\.json entry 2: missing field 'query'"),
    (lambda d: d[0].update(keys=["only one"]), r"entry 0: field 'keys' must be a list of at least two"),
    (lambda d: d[1].update(label=True), r"entry 1: field 'label' must be int, got bool"),
])
def test_spec_malformed_entry_is_one_line_naming_file_and_entry(tmp_path, change, pattern):
    _, scorer = build_spec(tmp_path)
    f = tmp_path / "spec" / "absolute_size" / "image2text.json"
    data = json.loads(f.read_text())
    change(data)
    f.write_text(json.dumps(data))
    with pytest.raises(BenchmarkDataError, match=pattern) as e:
        spec.evaluate(tmp_path, scorer, OPTS)
    assert "\n" not in str(e.value)


def test_spec_missing_files_and_images(tmp_path):
    with pytest.raises(BenchmarkMissing, match=r"image2text\.json .*" + str(tmp_path / "spec")):
        spec.evaluate(tmp_path, TableScorer(lambda k, t: 0.0), OPTS)
    _, scorer = build_spec(tmp_path)
    img = next((tmp_path / "spec" / "existence").glob("existence-t2i-1/*-1.png"))
    img.unlink()
    with pytest.raises(BenchmarkDataError, match=r"existence/text2image\.json entry 1: image not found: .*-1\.png"):
        spec.evaluate(tmp_path, scorer, OPTS)
    res = spec.evaluate(tmp_path, scorer, EvalOptions(missing_images="skip"))
    assert res["missing_images_skipped"] == 1 and res["subsets"]["existence"]["t2i"]["n"] == 2
    # the skipped query is entry 1; the outcomes keep the file positions of the others
    assert res["outcomes"]["groups"]["existence/t2i"]["ids"] == "0,2"


# --------------------------------------------------------------------------- EqBen


def test_eqben_scores_per_subset_kubric_and_five_source_means(tmp_path):
    expected, scorer = build_eqben(tmp_path)
    res = eqben.evaluate(tmp_path, scorer, OPTS)
    _same(res, expected)
    # by hand: eqbengebc holds samples 4 (tie c0i0 = c1i0), 0, 5 (tie c0i0 = c0i1), 1
    assert res["subsets"]["eqbengebc"] == {"text": 3 / 4, "image": 2 / 4, "group": 1 / 4, "n": 4}
    assert res["summary"]["group"] == pytest.approx(np.mean([1 / 3, 1 / 2, 1 / 4, np.mean([0, 2 / 3, 0]), 1 / 6]))
    assert res["n_samples"] == sum(1 for _ in scorer.cases) // 4
    # each entry is scored with its own image and caption: 4 one-caption cases per sample
    assert all(len(c.texts) == 1 for c in scorer.cases)
    # the light release: the annotation says .png, only the .jpg is on disk, and the .jpg is read
    gebc = [c.image.path for c in scorer.cases if "/eqbengebc/" in c.image.path]
    assert gebc and all(p.endswith(".jpg") for p in gebc)
    assert set(res["outcomes"]["metrics"]["group"]) == {f"{s}/group" for s in EQBEN_SUBSETS}
    assert res["outcomes"]["metrics"]["eqbenkubric/text"] == [f"eqbenkubric_{k}/text" for k in ("loc", "attr", "cnt")]


def test_eqben_youcook2_frames_are_bgr_arrays(tmp_path):
    a = np.zeros((4, 6, 3), dtype=np.uint8)
    a[..., 0], a[..., 2] = 10, 250  # blue 10, red 250 in BGR order
    np.save(tmp_path / "f.npy", a)
    img = load_image(ImageRef(str(tmp_path / "f.npy")))
    assert img.mode == "RGB" and img.size == (6, 4) and img.getpixel((0, 0)) == (250, 0, 10)
    np.save(tmp_path / "bad.npy", np.zeros((4, 6), dtype=np.float32))
    with pytest.raises(BenchmarkDataError, match=r"e\.json entry 3: cannot read image .*bad\.npy .*H x W x 3 uint8"):
        load_image(ImageRef(str(tmp_path / "bad.npy"), None, "e.json entry 3"))


def test_eqben_missing_subset_drops_the_means(tmp_path):
    _, scorer = build_eqben(tmp_path)
    f = tmp_path / "eqben" / "ann_json_finegrained_random.json"
    f.write_text(json.dumps([e for e in json.loads(f.read_text()) if e["private_info"]["dataset"] != "eqbensd"]))
    res = eqben.evaluate(tmp_path, scorer, OPTS)
    assert res["missing_subsets"] == ["eqbensd"] and "group" not in res["summary"]
    assert "eqbenkubric/group" in res["summary"] and "eqbensd/group" not in res["summary"]


@pytest.mark.parametrize("case, pattern", [
    ("dup", r"entry \d+ field 'private_info': sample_cnt 3 has a second 'c1i1' entry"),
    ("lack", r"ann_json_finegrained_random\.json: sample_cnt 3 \(first entry \d+\) has no 'c0i1' entry"),
    ("name", r"entry \d+ field 'private_info': name 'c2i0' is not one of c0i0, c0i1, c1i0, c1i1"),
    ("dataset", r"sample_cnt 3 is in dataset 'eqbensd' here and 'eqbenyoucook2' in entry \d+"),
    ("field", r"entry \d+: missing field 'private_info'"),
])
def test_eqben_malformed_annotation_is_one_line(tmp_path, case, pattern):
    _, scorer = build_eqben(tmp_path)
    f = tmp_path / "eqben" / "ann_json_finegrained_random.json"
    data = json.loads(f.read_text())
    of3 = [e for e in data if e["private_info"]["sample_cnt"] == 3]
    if case == "dup":
        c1i1 = next(e for e in of3 if e["private_info"]["name"] == "c1i1")
        data.append(json.loads(json.dumps(c1i1)))
    elif case == "lack":
        data.remove(next(e for e in of3 if e["private_info"]["name"] == "c0i1"))
    elif case == "name":
        of3[-1]["private_info"]["name"] = "c2i0"
    elif case == "dataset":
        of3[-1]["private_info"]["dataset"] = "eqbensd"
        data.sort(key=lambda e: e is of3[-1])  # the odd entry last, so the message names the first one
    else:
        of3[0].pop("private_info")
    f.write_text(json.dumps(data))
    with pytest.raises(BenchmarkDataError, match=pattern) as e:
        eqben.evaluate(tmp_path, scorer, OPTS)
    assert "\n" not in str(e.value)


def test_eqben_missing_annotation_or_image(tmp_path):
    with pytest.raises(BenchmarkMissing, match=r"expected ann_json_finegrained_random\.json \(\+ images/\) in "):
        eqben.evaluate(tmp_path, TableScorer(lambda k, t: 0.0), OPTS)
    _, scorer = build_eqben(tmp_path)
    victim = next((tmp_path / "eqben" / "images" / "eqbensd").rglob("*.png"))
    victim.unlink()
    with pytest.raises(BenchmarkDataError, match=r"image not found: .*" + victim.name):
        eqben.evaluate(tmp_path, scorer, OPTS)
    res = eqben.evaluate(tmp_path, scorer, EvalOptions(missing_images="skip"))
    assert res["missing_images_skipped"] == 1 and res["subsets"]["eqbensd"]["n"] == 5


# --------------------------------------------------------------------------- BiVLC


def test_bivlc_i2t_t2i_group_overall_and_per_type(tmp_path):
    expected, scorer, _ = build_bivlc(tmp_path, shards=2)
    res = bivlc.evaluate(tmp_path, scorer, OPTS)
    _same(res, expected)
    assert res["summary"]["i2t"] == pytest.approx(4 / 7) and res["summary"]["t2i"] == pytest.approx(4 / 7)
    assert res["summary"]["group"] == pytest.approx(2 / 7) and res["summary"]["swap/i2t"] == 0.5
    # the four one-direction scores, by hand over the 7 rows
    assert res["directions"] == pytest.approx({"Ipos_2T": 4 / 7, "Ineg_2T": 6 / 7, "Tpos_2I": 4 / 7, "Tneg_2I": 6 / 7})
    assert res["per_subtype"]["add_att"] == {"i2t": 1.0, "t2i": 1.0, "group": 1.0, "n": 1}
    assert res["n"] == 7 and len(res["files"]) == 2
    assert res["outcomes"]["groups"]["group"] == {"ids": "0-6", "correct": "1000001"}
    # every image is the embedded file itself
    assert all(c.image.data for c in scorer.cases) and len({c.image.path for c in scorer.cases}) == 14


def test_bivlc_missing_and_malformed_files(tmp_path, monkeypatch):
    with pytest.raises(BenchmarkMissing, match=r"expected data/test-\*\.parquet .* in " + str(tmp_path / "bivlc")):
        bivlc.evaluate(tmp_path, TableScorer(lambda k, t: 0.0), OPTS)
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, scorer, paths = build_bivlc(tmp_path, shards=1)
    table = pq.read_table(paths[0])
    pq.write_table(table.drop(["negative_image"]), paths[0])
    with pytest.raises(BenchmarkDataError, match=r"test-00000-of-00001\.parquet: missing column\(s\) 'negative_image'"):
        bivlc.evaluate(tmp_path, scorer, OPTS)
    bad = table.set_column(table.schema.get_field_index("caption"), "caption",
                           pa.array([None] + table.column("caption").to_pylist()[1:], pa.string()))
    pq.write_table(bad, paths[0])
    with pytest.raises(BenchmarkDataError, match=r"test-00000-of-00001\.parquet row 0: field 'caption' must be str"):
        bivlc.evaluate(tmp_path, scorer, OPTS)
    paths[0].write_bytes(b"not a parquet file")
    with pytest.raises(BenchmarkDataError, match=r"test-00000-of-00001\.parquet: not a readable parquet file"):
        bivlc.evaluate(tmp_path, scorer, OPTS)


def test_parquet_shards_of_two_downloads_or_with_one_missing_are_refused(tmp_path):
    """Hugging Face renamed BiVLC's shards between revisions (``test-00000-of-00002-<hash>.parquet`` ->
    ``test-00000-of-00002.parquet``): both in one folder would count every row twice."""
    import shutil

    _, scorer, paths = build_bivlc(tmp_path, shards=2)
    assert bivlc.evaluate(tmp_path, scorer, OPTS)["n"] == 7
    shutil.copy(paths[0], paths[0].with_name("test-00000-of-00002-0123abcd.parquet"))
    with pytest.raises(BenchmarkDataError, match=r"test-00000-of-00002-0123abcd\.parquet and test-00000-of-00002\.parquet "
                                                 r"are the same shard"):
        bivlc.evaluate(tmp_path, scorer, OPTS)
    paths[0].with_name("test-00000-of-00002-0123abcd.parquet").unlink()
    paths[1].unlink()
    with pytest.raises(BenchmarkDataError, match=r"test shard\(s\) \[1\] of 2 missing"):
        bivlc.evaluate(tmp_path, scorer, OPTS)
