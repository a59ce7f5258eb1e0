"""What'sUp (Kamath et al., EMNLP 2023): spatial prepositions, one image against 4 or 2 captions.

Official files (github.com/amitakamath/whatsup_vlms, its ``data/`` directory as ``main_aro.py --download``
or the authors' Google Drive folder leave it), under ``DATA_ROOT/whatsup/``::

    controlled_images_dataset.json  + controlled_images/   Controlled-A (real photographs)
    controlled_clevr_dataset.json   + controlled_clevr/    Controlled-B (CLEVR renders)
        [{"image_path": "data/controlled_images/beer-bottle_on_armchair.jpeg",
          "caption_options": [correct, wrong, wrong, wrong]}, ...]
        (``image_path`` is relative to the authors' repository: its ``data/`` is ``whatsup/``)
    coco_qa_one_obj.json  coco_qa_two_obj.json  + val2017/     COCO-spatial, one / two objects
        [[image_id, correct caption, wrong caption], ...]  -> val2017/<image_id, 12 digits>.jpg
        (or --image-root whatsup-coco=DIR; without whatsup/val2017/, sugarcrepe/val2017/ if present)
    vg_qa_one_obj.json    vg_qa_two_obj.json    + vg_images/   GQA-spatial, one / two objects
        [[image_id, correct caption, wrong caption], ...]  -> vg_images/<image_id>.jpg
        (or --image-root whatsup-gqa=DIR)

Metrics as the authors' ``evaluate_scores`` (``dataset_zoo/aro_datasets.py``): the first caption is the
correct one, and an item is right when ``argmax`` over the captions' similarities is 0, so a tie with
the correct caption counts as right (numpy's argmax returns the first maximum). Controlled-A/B also
give the authors' pair and set accuracies: images are grouped by the two objects named in the file
name (``<obj1>_<prep>[_of]_<obj2>.jpeg``); a pair (left/right; on/under for A, in-front/behind for
B) is right when both of its images are, a set when all four are; pair accuracy = right pairs /
(images / 2), set accuracy = right sets / (images / 4). ``controlled``, ``coco_spatial`` and
``gqa_spatial`` are the paper's Table 1 macro averages of the two subsets each; ``avg`` is the mean
of the six individual accuracies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..common import (BenchmarkDataError, Case, EvalOptions, ImageRef, drop_missing_images, field_of, load_json_list,
                      mean, pos_wins, present_parts)
from ..outcomes import Outcomes
from ..registry import Benchmark

NAME = "whatsup"
# summary name -> (file stem, kind)
SUBSETS = {
    "controlled_a": ("controlled_images_dataset", "A"),
    "controlled_b": ("controlled_clevr_dataset", "B"),
    "coco_spatial_one": ("coco_qa_one_obj", "coco"),
    "coco_spatial_two": ("coco_qa_two_obj", "coco"),
    "gqa_spatial_one": ("vg_qa_one_obj", "gqa"),
    "gqa_spatial_two": ("vg_qa_two_obj", "gqa"),
}
MACROS = {"controlled": ("controlled_a", "controlled_b"), "coco_spatial": ("coco_spatial_one", "coco_spatial_two"),
          "gqa_spatial": ("gqa_spatial_one", "gqa_spatial_two")}
# the four images of a Controlled set, by the preposition in their file name, and its two pairs
SLOTS = {"A": (("left", "right"), ("on", "under")), "B": (("left", "right"), ("in-front", "behind"))}


def _controlled_preposition(image_path: str, kind: str) -> str:
    """The authors' label of a Controlled image (from its path), for the per-preposition breakdown."""
    if "left_of" in image_path:
        return "left_of"
    if "right_of" in image_path:
        return "right_of"
    if kind == "A":
        return "on" if "_on_" in image_path else "under"
    return "in-front_of" if "_in-front_of_" in image_path else "behind"


def _qa_preposition(caption: str, stem: str) -> str:
    """The authors' label of a COCO/GQA-spatial item (from its correct caption)."""
    if stem.endswith("one_obj"):
        words = caption.split()
        return words[-1] if words else ""
    for phrase, label in (("left of", "left"), ("right of", "right")):
        if phrase in caption:
            return label
    if stem.startswith("coco"):
        return "above" if "above" in caption else "below"
    for phrase, label in (("front of", "front"), ("behind", "behind")):
        if phrase in caption:
            return label
    return "top"


def set_key(image_path: str, kind: str, where: str) -> Tuple[Tuple[str, str], str]:
    """``((first object, second object), preposition slot)`` of a Controlled image, parsed from its file
    name as the authors do: ``name.split('_')`` gives the first object, the slot and, last, the second
    object followed by its 5-character extension (``.jpeg``)."""
    name = image_path.replace("\\", "/").split("/")[-1]
    parts = name.split("_")
    allowed = [s for pair in SLOTS[kind] for s in pair]
    if len(parts) < 3 or parts[1] not in allowed:
        raise BenchmarkDataError(f"{where}: image_path {image_path!r} does not name its objects and preposition "
                                 f"as <object>_<{'|'.join(allowed)}>[_of]_<object>.jpeg")
    return (parts[0], parts[-1][:-5]), parts[1]


def _resolve(base: Path, image_path: str) -> str:
    rel = image_path.replace("\\", "/")
    return str(base / (rel[len("data/"):] if rel.startswith("data/") else rel))


def read_controlled(path: Path, base: Path, kind: str) -> List[Dict[str, Any]]:
    out = []
    for i, e in enumerate(load_json_list(path, "What'sUp items")):
        where = f"{path} entry {i}"
        image_path = field_of(e, "image_path", str, where)
        options = field_of(e, "caption_options", list, where)
        if len(options) < 2 or not all(isinstance(c, str) and c.strip() for c in options):
            raise BenchmarkDataError(f"{where}: field 'caption_options' must be a list of at least 2 captions")
        key, slot = set_key(image_path, kind, where)
        out.append({"case": Case(ImageRef(_resolve(base, image_path), None, where), tuple(options)), "id": i,
                    "key": key, "slot": slot, "label": _controlled_preposition(image_path, kind)})
    return out


def read_qa(path: Path, image_dir: Path, kind: str) -> List[Dict[str, Any]]:
    stem = path.stem
    out = []
    for i, e in enumerate(load_json_list(path, "What'sUp items")):
        where = f"{path} entry {i}"
        ok = (isinstance(e, list) and len(e) == 3 and isinstance(e[0], (int, str)) and not isinstance(e[0], bool)
              and str(e[0]).strip() and all(isinstance(c, str) and c.strip() for c in e[1:]))
        if not ok:
            raise BenchmarkDataError(f"{where}: expected [image_id, correct caption, wrong caption], got {str(e)[:120]}")
        image = f"{str(e[0]).zfill(12)}.jpg" if kind == "coco" else f"{e[0]}.jpg"
        out.append({"case": Case(ImageRef(str(image_dir / image), None, where), (e[1], e[2])), "id": i,
                    "label": _qa_preposition(e[1], stem)})
    return out


def pair_set_outcomes(items: Sequence[Dict[str, Any]], correct: np.ndarray, kind: str) -> Dict[str, Any]:
    """The authors' pair and set accuracies of a Controlled subset, with per-pair and per-set outcomes."""
    slots: Dict[Tuple[str, str], Dict[str, bool]] = {}
    for it, ok in zip(items, correct):
        slots.setdefault(it["key"], {s: False for pair in SLOTS[kind] for s in pair})[it["slot"]] = bool(ok)
    pairs = [all(d[s] for s in pair) for d in slots.values() for pair in SLOTS[kind]]
    sets = [all(d.values()) for d in slots.values()]
    n = len(items)
    return {"pair": sum(pairs) / (n / 2) if n else float("nan"), "set": sum(sets) / (n / 4) if n else float("nan"),
            "pair_outcomes": np.array(pairs, dtype=bool), "set_outcomes": np.array(sets, dtype=bool),
            "object_pairs": len(slots)}


def image_dirs(root: Path, opts: EvalOptions) -> Dict[str, Path]:
    base = root / NAME
    coco, shared = base / "val2017", root / "sugarcrepe" / "val2017"
    return {"coco": opts.image_root("whatsup-coco", shared if not coco.is_dir() and shared.is_dir() else coco),
            "gqa": opts.image_root("whatsup-gqa", base / "vg_images")}


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    base = root / NAME
    stems = [stem for stem, _ in SUBSETS.values()]
    present, missing = present_parts(base, stems, NAME, "the What'sUp dataset files")
    dirs = image_dirs(root, opts)
    subsets, summary, outcomes, n_missing = {}, {}, Outcomes(), 0
    for name, (stem, kind) in SUBSETS.items():
        if stem not in present:
            continue
        path = base / f"{stem}.json"
        items = read_controlled(path, base, kind) if kind in SLOTS else read_qa(path, dirs[kind], kind)
        items, skipped = drop_missing_images(items, lambda it: [it["case"].image], opts.missing_policy(), NAME)
        n_missing += skipped
        correct = pos_wins(scorer.score([it["case"] for it in items], desc=f"{NAME}/{name}"), 0, ties_win=True)
        labels = [it["label"] for it in items]
        per_prep = {lab: {"accuracy": float(correct[[x == lab for x in labels]].mean()), "n": labels.count(lab)}
                    for lab in sorted(set(labels))}
        acc = float(correct.mean()) if len(items) else float("nan")
        subsets[name] = {"file": f"{stem}.json", "accuracy": acc, "n": len(items), "per_preposition": per_prep}
        summary[name] = acc
        outcomes.add_group(name, [it["id"] for it in items], correct)
        outcomes.add_metric(name, [name])
        if kind in SLOTS:
            ps = pair_set_outcomes(items, correct, kind)
            subsets[name].update(pair=ps["pair"], set=ps["set"], object_pairs=ps["object_pairs"])
            for what in ("pair", "set"):
                summary[f"{name}/{what}"] = ps[what]
                flags = ps[f"{what}_outcomes"]
                outcomes.add_group(f"{name}/{what}", list(range(len(flags))), flags)
                outcomes.add_metric(f"{name}/{what}", [f"{name}/{what}"])
    for macro, members in MACROS.items():
        if all(m in subsets for m in members):
            summary[macro] = mean(subsets[m]["accuracy"] for m in members)
            outcomes.add_metric(macro, list(members))
    if not missing:
        summary["avg"] = mean(subsets[m]["accuracy"] for m in SUBSETS)
        outcomes.add_metric("avg", list(SUBSETS))
    return {"subsets": subsets, "missing_files": [f"{s}.json" for s in missing],
            "image_dirs": {k: str(v) for k, v in dirs.items()}, "missing_images_skipped": n_missing,
            "summary": summary, "outcomes": outcomes.to_json()}


BENCHMARK = Benchmark(
    name=NAME, order=55, evaluate=evaluate,
    title="What'sUp (Kamath et al., EMNLP 2023): spatial prepositions; Controlled-A/B, COCO- and GQA-spatial",
    headline=("controlled", "coco_spatial", "gqa_spatial", "avg"),
    image_roots=("whatsup-coco", "whatsup-gqa"),
    protocol=lambda cfg: {NAME: "first caption is correct; argmax over the captions (a tie with the correct one "
                                "counts as right, as numpy's argmax in the authors' code); Controlled pair/set "
                                "accuracies over object pairs; controlled/coco_spatial/gqa_spatial = mean of the two "
                                "subsets, avg = mean of the six"},
    chance=(("*/pair", 1 / 16), ("*/set", 1 / 256), ("controlled*", 0.25), ("avg", (2 * 0.25 + 4 * 0.5) / 6),
            ("*", 0.5)),
)
