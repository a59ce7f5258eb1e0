"""ColorSwap (Burapacheep et al., ACL Findings 2024): Winoground's text, image and group scores on color swaps.

Official files, under ``DATA_ROOT/colorswap/``, in either of the two forms the authors release:

    data/test.json + data/images/   the GitHub release (github.com/Top34051/colorswap, now
                                    stanfordnlp/colorswap): the Google Drive archive extracted, i.e.
                                    ``data/{train,test}.json`` and ``images.zip`` unpacked to ``data/images/``
        [{"id": 0, "caption_1": ..., "caption_2": ..., "image_1": "images/img_0_1.png",
          "image_2": "images/img_0_2.png", "image_source": "midjourney", "caption_source": "human"}, ...]
        (``image_k`` is relative to the JSON's folder; test.json + images/ directly under colorswap/ work too)
    data/test-*.parquet             the Hugging Face dataset stanfordnlp/colorswap (gated; ``huggingface-cli
                                    download stanfordnlp/colorswap --repo-type dataset --local-dir
                                    DATA_ROOT/colorswap``): columns id, image_1, image_2 (image structs
                                    {bytes, path}), caption_1, caption_2, image_source, caption_source

Parquet shards win when both are there. The test split (300 examples) is evaluated, the split the
paper's image-text matching results are on. With s(c, i) the similarity of caption c and image i
(caption_1 belongs to image_1): text = s(c1,i1) > s(c2,i1) and s(c2,i2) > s(c1,i2); image =
s(c1,i1) > s(c1,i2) and s(c2,i2) > s(c2,i1); group = both (Winoground's definitions, strict).
Per ``image_source`` and ``caption_source`` breakdowns are in the JSON.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from ..common import (BenchmarkDataError, BenchmarkMissing, Case, EvalOptions, ImageRef, drop_missing_images, field_of,
                      embedded_image, load_json_list, parquet_rows, parquet_shards)
from ..outcomes import Outcomes
from ..registry import Benchmark
from .winoground import winoground_scores

NAME = "colorswap"
SPLIT = "test"
COLUMNS = ("id", "caption_1", "caption_2", "image_1", "image_2")


def _id(e: Any, where: str) -> int:
    return field_of(e, "id", int, where)


def read_json(path: Path, image_dir: Path) -> List[Dict]:
    out = []
    for i, e in enumerate(load_json_list(path, "ColorSwap examples")):
        where = f"{path} entry {i}"
        out.append({"id": _id(e, where), "sources": (e.get("image_source"), e.get("caption_source")),
                    "captions": (field_of(e, "caption_1", str, where), field_of(e, "caption_2", str, where)),
                    "images": tuple(ImageRef(str(image_dir / field_of(e, f"image_{k}", str, where)), None, where)
                                    for k in (1, 2))})
    return out


def read_parquet(paths: Sequence[Path]) -> List[Dict]:
    out = []
    for path, row, where, e in parquet_rows(paths, COLUMNS, ("image_source", "caption_source"), "ColorSwap"):
        out.append({"id": _id(e, where), "sources": (e.get("image_source"), e.get("caption_source")),
                    "captions": (field_of(e, "caption_1", str, where), field_of(e, "caption_2", str, where)),
                    "images": tuple(ImageRef(f"{path}#row={row}/image_{k}", None, where,
                                             embedded_image(e[f"image_{k}"], where, f"image_{k}")) for k in (1, 2))})
    return out


def find_files(base: Path) -> Tuple[str, List[Path]]:
    """``("parquet", shards)`` or ``("json", [test.json])`` under ``base`` (see module docstring)."""
    for d in (base / "data", base):
        shards = parquet_shards(d, f"{SPLIT}-*.parquet")
        if shards:
            return "parquet", shards
    for d in (base / "data", base):
        if (d / f"{SPLIT}.json").is_file():
            return "json", [d / f"{SPLIT}.json"]
    raise BenchmarkMissing(f"expected data/{SPLIT}.json + data/images/ (GitHub release) or data/{SPLIT}-*.parquet "
                           f"(Hugging Face) in {base}")


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    base = root / NAME
    layout, files = find_files(base)
    examples = read_parquet(files) if layout == "parquet" else read_json(files[0], files[0].parent)
    seen = set()
    for ex in examples:
        if ex["id"] in seen:
            raise BenchmarkDataError(f"{files[0].parent}: example id {ex['id']} appears more than once")
        seen.add(ex["id"])
    examples, n_missing = drop_missing_images(examples, lambda ex: ex["images"], opts.missing_policy(), NAME)
    cases = [Case(ex["images"][i], ex["captions"]) for ex in examples for i in (0, 1)]
    s = scorer.score(cases, desc=NAME).reshape(len(examples), 2, 2)
    res = winoground_scores(s)
    breakdown: Dict[str, Dict[str, List[int]]] = {"image_source": defaultdict(list), "caption_source": defaultdict(list)}
    for n, ex in enumerate(examples):
        breakdown["image_source"][ex["sources"][0] or "unknown"].append(n)
        breakdown["caption_source"][ex["sources"][1] or "unknown"].append(n)
    per_source = {kind: {src: {k: float(v[idx].mean()) for k, v in res.items()} | {"n": len(idx)}
                         for src, idx in sorted(groups.items())} for kind, groups in breakdown.items()}
    summary = {k: (float(v.mean()) if len(examples) else float("nan")) for k, v in res.items()}
    outcomes = Outcomes("the example's id field")
    for k, v in res.items():
        outcomes.add_group(k, [ex["id"] for ex in examples], v)
        outcomes.add_metric(k, [k])
    return {"n": len(examples), "split": SPLIT, "layout": layout, "files": [str(f) for f in files],
            "per_source": per_source, "missing_images_skipped": n_missing, "summary": summary,
            "outcomes": outcomes.to_json()}


BENCHMARK = Benchmark(
    name=NAME, order=60, evaluate=evaluate,
    title="ColorSwap (Burapacheep et al., ACL Findings 2024): color-word swaps; text, image and group scores",
    headline=("text", "image", "group"),
    image_roots=(),
    protocol=lambda cfg: {NAME: "test split; Winoground's text/image/group scores (strict inequalities)"},
    chance=(("text", 0.25), ("image", 0.25), ("group", 1 / 6)),
)
