"""SugarCrepe (Hsieh et al., NeurIPS 2023 D&B): seven hard-negative splits on COCO val2017.

Official files (github.com/RAIVNLab/sugar-crepe ``data/``), under ``DATA_ROOT/sugarcrepe/``::

    replace_obj.json replace_att.json replace_rel.json swap_obj.json swap_att.json add_obj.json add_att.json
        {"0": {"filename": "000000565045.jpg", "caption": ..., "negative_caption": ...}, ...}
    val2017/    COCO 2017 validation images (or --image-root sugarcrepe=DIR)

An item is right when the caption scores strictly above the negative caption (the authors'
``main_eval.py``). Category scores are the means of their splits; ``avg`` is the mean of the seven.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

from ..common import (BenchmarkDataError, Case, EvalOptions, ImageRef, drop_missing_images,
                     accuracy_by_group, field_of, load_json, mean, pos_wins, present_parts)
from ..outcomes import Outcomes
from ..registry import Benchmark

log = logging.getLogger(__name__)

NAME = "sugarcrepe"
SPLITS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")
CATEGORIES = {"replace": SPLITS[:3], "swap": SPLITS[3:5], "add": SPLITS[5:]}


def read_split(path: Path, image_dir: Path) -> List[Case]:
    data = load_json(path)
    if not isinstance(data, dict):
        raise BenchmarkDataError(f"{path}: expected a JSON object keyed by item id, got {type(data).__name__}")
    cases = []
    for key, e in data.items():
        where = f"{path} entry {key!r}"
        ref = ImageRef(str(image_dir / field_of(e, "filename", str, where)), None, where)
        cases.append(Case(ref, (field_of(e, "caption", str, where), field_of(e, "negative_caption", str, where))))
    return cases


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    base = root / "sugarcrepe"
    image_dir = opts.image_root("sugarcrepe", base / "val2017")
    present, missing_splits = present_parts(base, SPLITS, "sugarcrepe", "the SugarCrepe split files")
    items = []  # (case, split, position in the split file)
    for s in present:
        items += [(c, s, i) for i, c in enumerate(read_split(base / f"{s}.json", image_dir))]
    kept, n_missing = drop_missing_images(items, lambda it: [it[0].image], opts.missing_policy(), "sugarcrepe")
    scores = scorer.score([c for c, _, _ in kept], desc="sugarcrepe")
    correct = pos_wins(scores, 0)
    split_of = [sp for _, sp, _ in kept]
    splits = {s: {"accuracy": acc, "n": n}
              for s, (acc, n) in accuracy_by_group(correct, split_of, present).items()}
    outcomes = Outcomes()
    outcomes.add_grouped(split_of, [i for _, _, i in kept], correct, names=present)
    for s in present:
        outcomes.add_metric(s, [s])
    summary = {s: splits[s]["accuracy"] for s in present}
    for cat, members in CATEGORIES.items():
        if all(m in splits for m in members):
            summary[cat] = mean(splits[m]["accuracy"] for m in members)
            outcomes.add_metric(cat, members)
    if not missing_splits:
        summary["avg"] = mean(splits[s]["accuracy"] for s in SPLITS)
        outcomes.add_metric("avg", SPLITS)
    return {"splits": splits, "missing_splits": missing_splits, "missing_images_skipped": n_missing,
            "summary": summary, "outcomes": outcomes.to_json()}


BENCHMARK = Benchmark(
    name=NAME, order=20, evaluate=evaluate,
    title="SugarCrepe (Hsieh et al., NeurIPS 2023): replace / swap / add of objects, attributes, relations",
    headline=("replace", "swap", "add", "avg"),
    image_roots=("sugarcrepe",),
    protocol=lambda cfg: {"sugarcrepe": "caption vs negative_caption per item, strict win; "
                                        "category = mean of its splits, avg = mean of the 7 splits"},
    chance=(("*", 0.5),),
)
