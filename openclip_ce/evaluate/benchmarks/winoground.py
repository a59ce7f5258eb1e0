"""Winoground (Thrush et al., CVPR 2022): text, image and group scores.

Official files (huggingface.co/datasets/facebook/winoground), under ``DATA_ROOT/winoground/``, in
either of the two layouts the dataset has been served in (``huggingface-cli download
facebook/winoground --repo-type dataset --local-dir DATA_ROOT/winoground`` gives the current one)::

    data/test-*.parquet   today's layout: parquet shards with the images embedded; columns
                          id (int32), image_0, image_1 (struct {bytes, path}: the PNG itself),
                          caption_0, caption_1, tag, secondary_tag, num_main_preds, collapsed_tag
                          (also read from *.parquet directly under winoground/)
    data/examples.jsonl   the earlier layout: {"id": 0, "caption_0": ..., "caption_1": ...,
    data/images/            "image_0": "ex_0_img_0", "image_1": "ex_0_img_1", "tag": ..., "collapsed_tag": ...}
                          and images.zip extracted next to it (``<image_k>.png``; a name that already
                          has an extension is used as is); examples.jsonl + images/ directly under
                          winoground/ work too

Both layouts give the same examples, images and results; parquet shards win when both are there.
The parquet files are read with pyarrow alone (no ``datasets`` dependency).

Scores (Thrush et al., Sec. 3), with s(c, i) the image-caption similarity:
text  = s(c0,i0) > s(c1,i0) and s(c1,i1) > s(c0,i1);
image = s(c0,i0) > s(c0,i1) and s(c1,i1) > s(c1,i0);  group = text and image.
Per ``collapsed_tag`` breakdowns are in the JSON.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..common import (BenchmarkDataError, BenchmarkMissing, Case, EvalOptions, ImageRef, drop_missing_images,
                     embedded_image, field_of, load_jsonl, parquet_rows, parquet_shards)
from ..outcomes import Outcomes
from ..registry import Benchmark

NAME = "winoground"


def _image_path(image_dir: Path, name: str) -> str:
    if os.path.splitext(name)[1]:
        return str(image_dir / name)
    for ext in (".png", ".jpg", ".jpeg"):
        if (image_dir / f"{name}{ext}").is_file():
            return str(image_dir / f"{name}{ext}")
    return str(image_dir / f"{name}.png")


def _example_id(e: Any, row: int, where: str) -> int:
    value = e.get("id", row) if isinstance(e, dict) else row
    if value is None:
        return row
    if isinstance(value, bool) or not isinstance(value, int):
        raise BenchmarkDataError(f"{where}: field 'id' must be int, got {type(value).__name__}")
    return value


def read_examples(path: Path, image_dir: Path) -> List[Dict]:
    """The examples of the jsonl layout: ``{"id", "tag", "captions", "images"}`` with images on disk."""
    out = []
    for i, (lineno, e) in enumerate(load_jsonl(path)):
        where = f"{path} line {lineno}"
        ex = {"id": _example_id(e, i, where),
              "tag": e.get("collapsed_tag") if isinstance(e, dict) else None,
              "captions": (field_of(e, "caption_0", str, where), field_of(e, "caption_1", str, where)),
              "images": tuple(ImageRef(_image_path(image_dir, field_of(e, f"image_{k}", str, where)), None, where)
                              for k in (0, 1))}
        out.append(ex)
    return out


PARQUET_COLUMNS = ("caption_0", "caption_1", "image_0", "image_1")


def read_parquet_examples(paths: Sequence[Path]) -> List[Dict]:
    """The examples of the parquet layout, in shard then row order, with each image's bytes in memory."""
    out = []
    for path, row, where, e in parquet_rows(paths, PARQUET_COLUMNS, ("id", "collapsed_tag"), "Winoground"):
        out.append({"id": _example_id(e, len(out), where), "tag": e.get("collapsed_tag"),
                    "captions": (field_of(e, "caption_0", str, where), field_of(e, "caption_1", str, where)),
                    "images": tuple(ImageRef(f"{path}#row={row}/image_{k}", None, where,
                                             embedded_image(e[f"image_{k}"], where, f"image_{k}")) for k in (0, 1))})
    return out


def find_files(base: Path) -> Tuple[str, List[Path]]:
    """``("parquet", shards)`` or ``("jsonl", [examples.jsonl])`` under ``base`` (see module docstring)."""
    for d in (base / "data", base):
        shards = parquet_shards(d)
        if shards:
            return "parquet", shards
    for d in (base, base / "data"):
        if (d / "examples.jsonl").is_file():
            return "jsonl", [d / "examples.jsonl"]
    raise BenchmarkMissing(f"expected data/test-*.parquet (Hugging Face layout) or examples.jsonl + images/ in {base}")


def winoground_scores(s: np.ndarray) -> Dict[str, np.ndarray]:
    """``s[n, i, c]`` = similarity of image i and caption c of example n -> per-example booleans."""
    text = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    image = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    return {"text": text, "image": image, "group": text & image}


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    base = root / "winoground"
    layout, files = find_files(base)
    if layout == "parquet":
        examples = read_parquet_examples(files)
    else:
        examples = read_examples(files[0], opts.image_root("winoground", files[0].parent / "images"))
    ids = [ex["id"] for ex in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise BenchmarkDataError(f"{files[0].parent}: example id {dup} appears more than once")
    examples, n_missing = drop_missing_images(examples, lambda ex: ex["images"], opts.missing_policy(), "winoground")
    if not examples:
        raise BenchmarkDataError(f"{files[0]}: no examples")
    cases = [Case(ex["images"][i], ex["captions"]) for ex in examples for i in (0, 1)]
    s = scorer.score(cases, desc="winoground").reshape(len(examples), 2, 2)
    res = winoground_scores(s)
    by_tag = defaultdict(list)
    for n, ex in enumerate(examples):
        by_tag[ex["tag"] or "untagged"].append(n)
    per_tag = {tag: {k: float(v[idx].mean()) for k, v in res.items()} | {"n": len(idx)}
               for tag, idx in sorted(by_tag.items())}
    summary = {k: float(v.mean()) for k, v in res.items()}
    outcomes = Outcomes("the example's id field")
    for k, v in res.items():
        outcomes.add_group(k, [ex["id"] for ex in examples], v)
        outcomes.add_metric(k, [k])
    return {"n": len(examples), "layout": layout, "files": [str(f) for f in files],
            "per_collapsed_tag": per_tag, "missing_images_skipped": n_missing, "summary": summary,
            "ids_group_correct": [examples[n]["id"] for n in np.flatnonzero(res["group"])],
            "outcomes": outcomes.to_json()}


BENCHMARK = Benchmark(
    name=NAME, order=50, evaluate=evaluate,
    title="Winoground (Thrush et al., CVPR 2022): text, image and group scores",
    headline=("text", "image", "group"),
    image_roots=("winoground",),
    protocol=lambda cfg: {"winoground": "text/image/group scores of Thrush et al. (strict inequalities)"},
    chance=(("text", 0.25), ("image", 0.25), ("group", 1 / 6)),
)
