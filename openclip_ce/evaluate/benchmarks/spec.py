"""SPEC (Peng et al., CVPR 2024): image-to-text and text-to-image retrieval among candidates that differ
in one concept: absolute size, relative size, absolute position, relative position, existence, count.

Official files (huggingface.co/datasets/wjpoom/SPEC ``data.zip``, extracted), under ``DATA_ROOT/spec/``
(or ``DATA_ROOT/spec/data/`` as the zip extracts), one folder per subset::

    absolute_size/  relative_size/  absolute_spatial/  relative_spatial/  existence/  count/
        image2text.json   [{"query": "<image path>", "keys": ["<text>", ...], "label": <int>}, ...]
        text2image.json   [{"query": "<text>", "keys": ["<image path>", ...], "label": <int>}, ...]
        <the images>      paths in the json are relative to the subset folder

``--image-root spec=DIR`` reads the images from ``DIR/<subset>/<path>`` instead.

Metric (the authors' ``spec/models/clip_wrapper.py``): per query the prediction is the ``argmax`` of
the similarities over the candidates, and the query is right when it equals ``label``. ``argmax`` takes
the first maximum, so a tie is won by the candidate that comes first: the label wins a tie only with
candidates after it. Accuracy per subset and direction; ``i2t`` / ``t2i`` are the means over the six
subsets (the authors' "average all subset"), left out when a subset is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..common import (BenchmarkDataError, BenchmarkMissing, Case, EvalOptions, ImageRef, drop_missing_images,
                      field_of, load_json_list, log, mean)
from ..outcomes import Outcomes
from ..registry import Benchmark

NAME = "spec"
SUBSETS = ("absolute_size", "relative_size", "absolute_spatial", "relative_spatial", "existence", "count")
DIRECTIONS = {"i2t": "image2text.json", "t2i": "text2image.json"}


def find_base(root: Path) -> Path:
    """The folder holding the subset folders: ``spec/`` or ``spec/data/``."""
    for base in (root / NAME, root / NAME / "data"):
        if any((base / s / f).is_file() for s in SUBSETS for f in DIRECTIONS.values()):
            return base
    raise BenchmarkMissing(f"expected <subset>/image2text.json and <subset>/text2image.json for the subsets "
                           f"{', '.join(SUBSETS)} in {root / NAME} (or {root / NAME / 'data'})")


def read_direction(path: Path, direction: str, image_dir: Path) -> List[Dict]:
    """The queries of one ``image2text.json`` / ``text2image.json``: ``{"images", "texts", "label"}``,
    where ``images`` and ``texts`` are the pairs to score, candidate by candidate."""
    items = []
    for i, e in enumerate(load_json_list(path, "SPEC queries")):
        where = f"{path} entry {i}"
        query = field_of(e, "query", str, where)
        keys = field_of(e, "keys", list, where)
        label = field_of(e, "label", int, where)
        if len(keys) < 2 or not all(isinstance(k, str) and k.strip() for k in keys):
            raise BenchmarkDataError(f"{where}: field 'keys' must be a list of at least two non-empty strings")
        if not 0 <= label < len(keys):
            raise BenchmarkDataError(f"{where}: label {label} is not an index into its {len(keys)} keys")
        if direction == "i2t":
            image = ImageRef(str(image_dir / query), None, where)
            items.append({"images": [image] * len(keys), "texts": list(keys), "label": label})
        else:
            images = [ImageRef(str(image_dir / k), None, where) for k in keys]
            items.append({"images": images, "texts": [query] * len(keys), "label": label})
    return items


def first_argmax_hits(scores: Sequence[np.ndarray], labels: Sequence[int]) -> np.ndarray:
    """Per query: the first maximum of its scores is at ``label`` (the authors' ``argmax == label``)."""
    return np.array([int(np.argmax(s)) == lab for s, lab in zip(scores, labels)], dtype=bool)


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    base = find_base(root)
    image_base = opts.image_root(NAME, base)
    parts: List[Tuple[str, str]] = [(s, d) for s in SUBSETS for d in DIRECTIONS if (base / s / DIRECTIONS[d]).is_file()]
    missing = [f"{s}/{DIRECTIONS[d]}" for s in SUBSETS for d in DIRECTIONS if (s, d) not in parts]
    if missing:
        log.warning("spec: files missing from %s: %s", base, ", ".join(missing))
    items = []  # (subset, direction, position in its file, query)
    for s, d in parts:
        for i, q in enumerate(read_direction(base / s / DIRECTIONS[d], d, image_base / s)):
            items.append((s, d, i, q))
    kept, n_missing = drop_missing_images(items, lambda it: it[3]["images"], opts.missing_policy(), NAME)
    # every (image, caption) pair of every query, scored once: one caption per case
    cases = [Case(img, (txt,)) for _, _, _, q in kept for img, txt in zip(q["images"], q["texts"])]
    flat = scorer.score(cases, desc=NAME)[:, 0] if cases else np.zeros(0)
    bounds = np.cumsum([0] + [len(q["texts"]) for _, _, _, q in kept])
    hits = first_argmax_hits([flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])], [q["label"] for *_, q in kept])
    outcomes = Outcomes()
    subsets: Dict[str, Dict] = {}
    summary: Dict[str, float] = {}
    chance: Dict[str, float] = {}
    for s, d in parts:
        idx = [k for k, (ks, kd, _, _) in enumerate(kept) if (ks, kd) == (s, d)]
        acc = float(hits[idx].mean()) if idx else float("nan")
        subsets.setdefault(s, {})[d] = {"accuracy": acc, "n": len(idx),
                                        "candidates": sorted({len(kept[k][3]["texts"]) for k in idx})}
        key = f"{s}/{d}"
        summary[key] = acc
        chance[key] = mean(1 / len(kept[k][3]["texts"]) for k in idx)
        outcomes.add_group(key, [kept[k][2] for k in idx], hits[idx])
        outcomes.add_metric(key, [key])
    for d in DIRECTIONS:
        if all((s, d) in parts for s in SUBSETS):
            summary[d] = mean(summary[f"{s}/{d}"] for s in SUBSETS)
            chance[d] = mean(chance[f"{s}/{d}"] for s in SUBSETS)
            outcomes.add_metric(d, [f"{s}/{d}" for s in SUBSETS])
    return {"subsets": subsets, "missing_files": missing, "missing_images_skipped": n_missing,
            "summary": summary, "chance": chance, "outcomes": outcomes.to_json()}


BENCHMARK = Benchmark(
    name=NAME, order=70, evaluate=evaluate,
    title="SPEC (Peng et al., CVPR 2024): size, position, existence and count, image-to-text and text-to-image",
    headline=("i2t", "t2i"),
    image_roots=(NAME,),
    protocol=lambda cfg: {"spec": "per query argmax over the candidates == label (first maximum wins a tie), "
                                  "per subset and direction; i2t/t2i = mean over the 6 subsets"},
)
