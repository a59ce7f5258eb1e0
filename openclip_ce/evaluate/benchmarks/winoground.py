"""Winoground (Thrush et al., CVPR 2022): text, image and group scores.

Official files (huggingface.co/datasets/facebook/winoground ``data/``), under ``DATA_ROOT/winoground/``::

    examples.jsonl   {"id": 0, "caption_0": ..., "caption_1": ..., "image_0": "ex_0_img_0", "image_1": "ex_0_img_1",
                      "tag": ..., "secondary_tag": ..., "num_main_preds": ..., "collapsed_tag": ...}
    images/          images.zip extracted (``<image_k>.png``; a name that already has an extension is used as is)

Scores (Thrush et al., Sec. 3), with s(c, i) the image-caption similarity:
text  = s(c0,i0) > s(c1,i0) and s(c1,i1) > s(c0,i1);
image = s(c0,i0) > s(c0,i1) and s(c1,i1) > s(c1,i0);  group = text and image.
Per ``collapsed_tag`` breakdowns are in the JSON.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy as np

from ..common import (BenchmarkDataError, BenchmarkMissing, Case, EvalOptions, ImageRef, drop_missing_images,
                     field_of, load_jsonl)
from ..registry import Benchmark

NAME = "winoground"


def _image_path(image_dir: Path, name: str) -> str:
    if os.path.splitext(name)[1]:
        return str(image_dir / name)
    for ext in (".png", ".jpg", ".jpeg"):
        if (image_dir / f"{name}{ext}").is_file():
            return str(image_dir / f"{name}{ext}")
    return str(image_dir / f"{name}.png")


def read_examples(path: Path, image_dir: Path) -> List[Dict]:
    rows = load_jsonl(path)
    out = []
    for i, e in enumerate(rows):
        where = f"{path} line {i + 1}"
        ex = {"id": e.get("id", i) if isinstance(e, dict) else i,
              "tag": e.get("collapsed_tag") if isinstance(e, dict) else None,
              "captions": (field_of(e, "caption_0", str, where), field_of(e, "caption_1", str, where)),
              "images": tuple(ImageRef(_image_path(image_dir, field_of(e, f"image_{k}", str, where)), None, where)
                              for k in (0, 1))}
        out.append(ex)
    return out


def winoground_scores(s: np.ndarray) -> Dict[str, np.ndarray]:
    """``s[n, i, c]`` = similarity of image i and caption c of example n -> per-example booleans."""
    text = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    image = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    return {"text": text, "image": image, "group": text & image}


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    base = root / "winoground"
    path = base / "examples.jsonl"
    if not path.is_file():
        raise BenchmarkMissing(f"expected examples.jsonl at {path}")
    examples = read_examples(path, opts.image_root("winoground", base / "images"))
    examples, n_missing = drop_missing_images(examples, lambda ex: ex["images"], opts.missing_policy(), "winoground")
    if not examples:
        raise BenchmarkDataError(f"{path}: no examples")
    cases = [Case(ex["images"][i], ex["captions"]) for ex in examples for i in (0, 1)]
    s = scorer.score(cases, desc="winoground").reshape(len(examples), 2, 2)
    res = winoground_scores(s)
    by_tag = defaultdict(list)
    for n, ex in enumerate(examples):
        by_tag[ex["tag"] or "untagged"].append(n)
    per_tag = {tag: {k: float(v[idx].mean()) for k, v in res.items()} | {"n": len(idx)}
               for tag, idx in sorted(by_tag.items())}
    summary = {k: float(v.mean()) for k, v in res.items()}
    return {"n": len(examples), "per_collapsed_tag": per_tag, "missing_images_skipped": n_missing,
            "summary": summary, "ids_group_correct": [examples[n]["id"] for n in np.flatnonzero(res["group"])]}


BENCHMARK = Benchmark(
    name=NAME, order=50, evaluate=evaluate,
    title="Winoground (Thrush et al., CVPR 2022): text, image and group scores",
    headline=("text", "image", "group"),
    image_roots=("winoground",),
    protocol=lambda cfg: {"winoground": "text/image/group scores of Thrush et al. (strict inequalities)"},
    chance=(("text", 0.25), ("image", 0.25), ("group", 1 / 6)),
)
