"""BiVLC (Miranda et al., NeurIPS 2024 D&B): SugarCrepe with a generated negative image, both directions.

Official files (huggingface.co/datasets/imirandam/BiVLC, split ``test``), under ``DATA_ROOT/bivlc/``
(``huggingface-cli download imirandam/BiVLC --repo-type dataset --local-dir DATA_ROOT/bivlc``)::

    data/test-*.parquet   (or *.parquet directly under bivlc/) columns image and negative_image (Hugging
                          Face image structs {bytes, path}: the files themselves), caption,
                          negative_caption, type (replace / swap / add), subtype (obj / att / rel)

Read with pyarrow; the images stay in memory as the encoded files they are.

Scores (the authors' ``evaluate_BiVLC`` in ``src/CLIP_fine_tuning/CLIP_utils.py``), with C0 the caption,
C1 the negative caption, I0 the image and I1 the negative image, strict inequalities:
``Ipos_2T`` = s(C0,I0) > s(C1,I0), ``Ineg_2T`` = s(C1,I1) > s(C0,I1), ``Tpos_2I`` = s(C0,I0) > s(C0,I1),
``Tneg_2I`` = s(C1,I1) > s(C1,I0); ``i2t`` = Ipos_2T and Ineg_2T, ``t2i`` = Tpos_2I and Tneg_2I,
``group`` = both. Accuracies over all instances, and per ``type`` as the authors print them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from ..common import (BenchmarkDataError, BenchmarkMissing, Case, EvalOptions, ImageRef, embedded_image, field_of,
                      parquet_rows, parquet_shards)
from ..outcomes import Outcomes
from ..registry import Benchmark
from .winoground import winoground_scores

NAME = "bivlc"
COLUMNS = ("image", "caption", "negative_caption", "negative_image", "type")
TYPES = ("replace", "swap", "add")
SCORES = ("i2t", "t2i", "group")
DIRECTIONS = ("Ipos_2T", "Ineg_2T", "Tpos_2I", "Tneg_2I")


def find_shards(root: Path) -> List[Path]:
    base = root / NAME
    for d in (base / "data", base):
        shards = parquet_shards(d)
        if shards:
            return shards
    raise BenchmarkMissing(f"expected data/test-*.parquet (the Hugging Face layout of imirandam/BiVLC) in {base}")


def read_instances(paths: Sequence[Path]) -> List[Dict]:
    """Every row of the shards, in shard then row order: ``{"id", "type", "subtype", "captions", "images"}``."""
    out: List[Dict] = []
    for path, row, where, e in parquet_rows(paths, COLUMNS, ("subtype",), "BiVLC"):
        images = tuple(ImageRef(f"{path}#row={row}/{col}", None, where, embedded_image(e[col], where, col))
                       for col in ("image", "negative_image"))
        out.append({"id": len(out), "type": field_of(e, "type", str, where), "subtype": e.get("subtype") or "",
                    "captions": (field_of(e, "caption", str, where), field_of(e, "negative_caption", str, where)),
                    "images": images})
    return out


def bivlc_scores(s: np.ndarray) -> Dict[str, np.ndarray]:
    """``s[n, i, c]``: similarity of image i and caption c of instance n (0 = positive, 1 = negative)."""
    w = winoground_scores(s)  # BiVLC's I2T / T2I / group are Winoground's text / image / group scores
    return {"Ipos_2T": s[:, 0, 0] > s[:, 0, 1], "Ineg_2T": s[:, 1, 1] > s[:, 1, 0],
            "Tpos_2I": s[:, 0, 0] > s[:, 1, 0], "Tneg_2I": s[:, 1, 1] > s[:, 0, 1],
            "i2t": w["text"], "t2i": w["image"], "group": w["group"]}


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    shards = find_shards(root)
    inst = read_instances(shards)
    if not inst:
        raise BenchmarkDataError(f"{shards[0].parent}: the parquet files hold no rows")
    cases = [Case(x["images"][i], x["captions"]) for x in inst for i in (0, 1)]
    s = scorer.score(cases, desc=NAME).reshape(len(inst), 2, 2)
    res = bivlc_scores(s)
    ids = [x["id"] for x in inst]
    kinds = [x["type"] for x in inst]
    outcomes = Outcomes("the row's position in the parquet shards (sorted by name)")
    summary = {m: float(res[m].mean()) for m in SCORES}
    for m in SCORES:
        outcomes.add_group(m, ids, res[m])
        outcomes.add_metric(m, [m])
    per_type: Dict[str, Dict] = {}
    for t in [t for t in TYPES if t in kinds] + sorted(set(kinds) - set(TYPES)):
        idx = [k for k, x in enumerate(kinds) if x == t]
        per_type[t] = {m: float(res[m][idx].mean()) for m in (*SCORES, *DIRECTIONS)} | {"n": len(idx)}
        for m in SCORES:
            summary[f"{t}/{m}"] = per_type[t][m]
            outcomes.add_group(f"{t}/{m}", [ids[k] for k in idx], res[m][idx])
            outcomes.add_metric(f"{t}/{m}", [f"{t}/{m}"])
    per_subtype: Dict[str, Dict] = {}
    for key in sorted({f"{x['type']}_{x['subtype']}" for x in inst}):
        idx = [k for k, x in enumerate(inst) if f"{x['type']}_{x['subtype']}" == key]
        per_subtype[key] = {m: float(res[m][idx].mean()) for m in SCORES} | {"n": len(idx)}
    return {"n": len(inst), "files": [str(p) for p in shards],
            "directions": {m: float(res[m].mean()) for m in DIRECTIONS},
            "per_type": per_type, "per_subtype": per_subtype, "summary": summary, "outcomes": outcomes.to_json()}


BENCHMARK = Benchmark(
    name=NAME, order=80, evaluate=evaluate,
    title="BiVLC (Miranda et al., NeurIPS 2024): image-to-text and text-to-image with negative captions and images",
    headline=("i2t", "t2i", "group"),
    protocol=lambda cfg: {"bivlc": "I2T = s(C0,I0)>s(C1,I0) and s(C1,I1)>s(C0,I1); T2I = s(C0,I0)>s(C0,I1) and "
                                   "s(C1,I1)>s(C1,I0); group = both (strict, the authors' evaluate_BiVLC)"},
    chance=(("i2t", 0.25), ("t2i", 0.25), ("group", 1 / 6), ("*/i2t", 0.25), ("*/t2i", 0.25), ("*/group", 1 / 6)),
)
