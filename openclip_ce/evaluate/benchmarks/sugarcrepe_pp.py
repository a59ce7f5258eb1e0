"""SugarCrepe++ (Dumpala et al., NeurIPS 2024 D&B): two positive captions and a hard negative per COCO image.

Official files (github.com/Sri-Harsha/scpp ``data/``), under ``DATA_ROOT/sugarcrepe-pp/``::

    replace_obj.json replace_att.json replace_rel.json swap_obj.json swap_att.json
        [{"id": 0, "filename": "000000222235.jpg", "caption": P1, "caption2": P2,
          "negative_caption": N}, ...]
    val2017/    COCO 2017 validation images (or --image-root sugarcrepe-pp=DIR; when
                sugarcrepe-pp/val2017/ does not exist, sugarcrepe/val2017/ is used if it does)

Metrics, per split, exactly as the authors' evaluation (``VLMs/test_*.py``, e.g. the open_clip one,
``test_Variants_CLIP.py``), with s the cosine similarity and every comparison strict:

* **ITT** (image-to-text): s(I, P1) > s(I, N) and s(I, P2) > s(I, N);
* **TOT** (text-only): s(P1, P2) > s(P1, N) and s(P1, P2) > s(P2, N), text encoder alone.

The JSON also has the authors' two side scores per split, s(I, P1) > s(I, N) (``itt_p1``) and
s(I, P2) > s(I, N) (``itt_p2``). ``itt`` and ``tot`` are the means over the five splits.
A few released items have a negative identical to a positive; identical texts score the same, so such
an item is a miss under the strict comparisons, as in the authors' code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from ..common import (Case, EvalOptions, ImageRef, drop_missing_images, field_of, load_json_list,
                      mean, present_parts)
from ..outcomes import Outcomes
from ..registry import Benchmark

log = logging.getLogger(__name__)

NAME = "sugarcrepe-pp"
SPLITS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att")
TASKS = ("itt", "tot")


def read_split(path: Path, image_dir: Path) -> List[Case]:
    """One Case per entry: the image and (caption, caption2, negative_caption), in file order."""
    cases = []
    for i, e in enumerate(load_json_list(path, "SugarCrepe++ items")):
        where = f"{path} entry {i}"
        ref = ImageRef(str(image_dir / field_of(e, "filename", str, where)), None, where)
        cases.append(Case(ref, tuple(field_of(e, k, str, where) for k in ("caption", "caption2", "negative_caption"))))
    return cases


def triplet_outcomes(image_scores: np.ndarray, text_scores: np.ndarray) -> Dict[str, np.ndarray]:
    """Per item booleans of the authors' metrics.

    ``image_scores[n] = (s(I,P1), s(I,P2), s(I,N))``; ``text_scores[n] = (s(P1,P2), s(P1,N), s(P2,N))``."""
    s = np.asarray(image_scores, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(text_scores, dtype=np.float64).reshape(-1, 3)
    p1, p2 = s[:, 0] > s[:, 2], s[:, 1] > s[:, 2]
    return {"itt": p1 & p2, "tot": (t[:, 0] > t[:, 1]) & (t[:, 0] > t[:, 2]), "itt_p1": p1, "itt_p2": p2}


def image_dir_for(root: Path, opts: EvalOptions) -> Path:
    base = root / NAME
    own, shared = base / "val2017", root / "sugarcrepe" / "val2017"
    default = shared if not own.is_dir() and shared.is_dir() else own
    return opts.image_root(NAME, default)


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    base = root / NAME
    present, missing_splits = present_parts(base, SPLITS, NAME, "the SugarCrepe++ split files")
    image_dir = image_dir_for(root, opts)
    items: List[Tuple[Case, str, int]] = []  # (case, split, position in the split file)
    for sp in present:
        items += [(c, sp, i) for i, c in enumerate(read_split(base / f"{sp}.json", image_dir))]
    kept, n_missing = drop_missing_images(items, lambda it: [it[0].image], opts.missing_policy(), NAME)
    cases = [c for c, _, _ in kept]
    image_scores = scorer.score(cases, desc=NAME)
    text_pairs = [p for c in cases for p in ((c.texts[0], c.texts[1]), (c.texts[0], c.texts[2]), (c.texts[1], c.texts[2]))]
    text_scores = scorer.score_texts(text_pairs, desc=f"{NAME} text-only")
    res = triplet_outcomes(image_scores, text_scores)
    split_of = np.array([sp for _, sp, _ in kept], dtype=object)
    ids = np.array([i for _, _, i in kept], dtype=np.int64)
    splits, summary, outcomes = {}, {}, Outcomes()
    for sp in present:
        mask = split_of == sp
        n = int(mask.sum())
        splits[sp] = {k: (float(v[mask].mean()) if n else float("nan")) for k, v in res.items()} | {"n": n}
        for task in TASKS:
            summary[f"{sp}/{task}"] = splits[sp][task]
            outcomes.add_group(f"{sp}/{task}", ids[mask].tolist(), res[task][mask])
            outcomes.add_metric(f"{sp}/{task}", [f"{sp}/{task}"])
    if not missing_splits:
        for task in TASKS:
            summary[task] = mean(splits[sp][task] for sp in SPLITS)
            outcomes.add_metric(task, [f"{sp}/{task}" for sp in SPLITS])
    return {"splits": splits, "missing_splits": missing_splits, "image_dir": str(image_dir),
            "missing_images_skipped": n_missing, "summary": summary, "outcomes": outcomes.to_json()}


BENCHMARK = Benchmark(
    name=NAME, order=25, evaluate=evaluate,
    title="SugarCrepe++ (Dumpala et al., NeurIPS 2024): two paraphrased positives vs a hard negative, "
          "image-to-text (ITT) and text-only (TOT)",
    headline=("itt", "tot"),
    image_roots=(NAME,),
    protocol=lambda cfg: {NAME: "per split, ITT: s(I,P1) > s(I,N) and s(I,P2) > s(I,N); TOT: s(P1,P2) > s(P1,N) "
                                "and s(P1,P2) > s(P2,N) (text encoder only); strict, as the authors' code; "
                                "itt/tot = mean of the 5 splits"},
    chance=(("*", 1 / 3),),
)
