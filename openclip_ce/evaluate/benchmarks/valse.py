"""VALSE (Parcalabescu et al., ACL 2022): pairwise accuracy per piece on the annotator-validated items.

Official files (github.com/Heidelberg-NLP/VALSE ``data/``), under ``DATA_ROOT/valse/``::

    existence.json plurals.json counting-hard.json counting-small-quant.json counting-adversarial.json
    relations.json action-replacement.json actant-swap.json coreference-standard.json
    coreference-hard.json foil-it.json
        {"<id>": {"image_file": ..., "caption": ..., "foil": ..., "mturk": {"caption": 0..3, ...}, ...}}
    images/<piece>/<image_file>  or  images/<image_file>   (images of the source datasets)

Protocol: only items with ``mturk.caption >= 2`` (at least two of three annotators chose the caption,
not the foil; the filter of the VALSE README and ``lxmert_valse_eval.py``) unless
``--valse-no-filter``; pairwise accuracy acc_r = share of items where the caption scores strictly
above the foil. ``avg`` is the mean over the 11 pieces (the VALSE paper's average); instrument
scores (existence, plurality, counting, relations, actions, coreference, foil-it) average their pieces.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Tuple

from ..common import (BenchmarkDataError, Case, EvalOptions, ImageRef, drop_missing_images,
                     accuracy_by_group, field_of, load_json, mean, pos_wins, present_parts)
from ..outcomes import Outcomes
from ..registry import Benchmark

log = logging.getLogger(__name__)

NAME = "valse"
INSTRUMENTS = {
    "existence": ("existence",),
    "plurality": ("plurals",),
    "counting": ("counting-hard", "counting-small-quant", "counting-adversarial"),
    "relations": ("relations",),
    "actions": ("action-replacement", "actant-swap"),
    "coreference": ("coreference-standard", "coreference-hard"),
    "foil-it": ("foil-it",),
}
PIECES = tuple(p for ps in INSTRUMENTS.values() for p in ps)


def read_piece(path: Path, image_dir: Path, validated_only: bool) -> Tuple[List[Case], int, List[int]]:
    """Cases ``(image, (caption, foil))`` of one piece, the number of items in the file, and each
    case's position in the file."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise BenchmarkDataError(f"{path}: expected a JSON object keyed by item id, got {type(data).__name__}")
    piece_dir = image_dir / path.stem
    cases, positions = [], []
    for pos, (key, e) in enumerate(data.items()):
        where = f"{path} entry {key!r}"
        mturk = field_of(e, "mturk", dict, where)
        votes = field_of(mturk, "caption", int, f"{where} field 'mturk'")
        caption, foil = field_of(e, "caption", str, where), field_of(e, "foil", str, where)
        image_file = field_of(e, "image_file", str, where)
        if validated_only and votes < 2:
            continue
        img = piece_dir / image_file if (piece_dir / image_file).is_file() else image_dir / image_file
        cases.append(Case(ImageRef(str(img), None, where), (caption, foil)))
        positions.append(pos)
    return cases, len(data), positions


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    cfg = BENCHMARK.settings(opts)
    base = root / "valse"
    image_dir = opts.image_root("valse", base / "images")
    present, missing_pieces = present_parts(base, PIECES, "valse", "the VALSE piece files")
    items, totals = [], {}  # (case, piece, position in the piece file)
    for p in present:
        cases, totals[p], positions = read_piece(base / f"{p}.json", image_dir, cfg["filter"])
        items += [(c, p, i) for c, i in zip(cases, positions)]
    items, n_missing = drop_missing_images(items, lambda it: [it[0].image], opts.missing_policy(), "valse")
    scores = scorer.score([c for c, _, _ in items], desc="valse")
    correct = pos_wins(scores, 0)
    piece_of = [q for _, q, _ in items]
    pieces = {p: {"pairwise_accuracy": acc, "n": n, "n_in_file": totals[p]}
              for p, (acc, n) in accuracy_by_group(correct, piece_of, present).items()}
    outcomes = Outcomes()
    outcomes.add_grouped(piece_of, [i for _, _, i in items], correct, names=present)
    summary = {p: pieces[p]["pairwise_accuracy"] for p in present}
    for p in present:
        outcomes.add_metric(p, [p])
    for inst, members in INSTRUMENTS.items():
        if all(m in pieces for m in members):
            summary[f"instrument/{inst}"] = mean(pieces[m]["pairwise_accuracy"] for m in members)
            outcomes.add_metric(f"instrument/{inst}", members)
    if not missing_pieces:
        summary["avg"] = mean(pieces[p]["pairwise_accuracy"] for p in PIECES)
        outcomes.add_metric("avg", PIECES)
    return {"pieces": pieces, "validated_only": cfg["filter"], "missing_pieces": missing_pieces,
            "missing_images_skipped": n_missing, "summary": summary, "outcomes": outcomes.to_json()}


def _add_arguments(group) -> None:
    group.add_argument("--valse-no-filter", action="store_true",
                       help="VALSE: keep items annotators did not validate (default: only mturk.caption >= 2)")


BENCHMARK = Benchmark(
    name=NAME, order=30, evaluate=evaluate,
    title="VALSE (Parcalabescu et al., ACL 2022): 11 linguistic pieces, caption vs foil",
    headline=("instrument/*", "avg"),
    image_roots=("valse",),
    defaults={"filter": True},
    add_arguments=_add_arguments,
    options=lambda args: {"filter": not args.valse_no_filter},
    protocol=lambda cfg: {"valse_filter": "mturk.caption >= 2" if cfg["filter"] else "none (all items)",
                          "valse": "pairwise accuracy (caption strictly above foil); avg = mean of the 11 pieces"},
    chance=(("*", 0.5),),
)
