"""MMVP-VLM (Tong et al., CVPR 2024, "Eyes Wide Shut?"): 9 visual patterns, 15 image pairs each.

Official files (huggingface.co/datasets/MMVP/MMVP_VLM; ``huggingface-cli download MMVP/MMVP_VLM
--repo-type dataset --local-dir DATA_ROOT/mmvp-vlm``), under ``DATA_ROOT/mmvp-vlm/``::

    Questions.csv          header, then one row per image: Question ID, Type, Statement
                           (rows 2k-1 and 2k are a pair: two images and their two statements)
    MLLM_VLM Images/<Type>/<Question ID>.jpg   (the folder name of the released files and of
                           ``scripts/evaluate_vlm.py``; ``MMVP_VLM_Images/``, named in the MMVP README,
                           is read too)

Scoring exactly as the authors' ``scripts/evaluate_vlm.py`` (github.com/tsb0601/MMVP): each statement
becomes "a photo of <statement>"; for each of the pair's two texts the model picks image 1 when its
softmax over the two images gives image 1 more than 0.5, i.e. when s(image 1, text) > s(image 2,
text) strictly, otherwise image 2; the right image of a text is image 1 when its Question ID is odd,
image 2 when even; a pair is right when both texts pick their right image. Both images are read from
the folder of the pair's first row. Patterns are assigned by position as the authors do: pairs
1-15 are the first pattern, 16-30 the second, ... in the order below; a pattern's score is its share of
right pairs and ``avg`` the mean of the nine (given when Questions.csv holds all 135 pairs). The JSON also holds, per pattern, Winoground-style text,
image and group scores of each pair (with images 1/2 and statements 1/2 as the matching pairs;
reported by some re-evaluations).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List

import numpy as np

from ..common import BenchmarkDataError, BenchmarkMissing, Case, EvalOptions, ImageRef, drop_missing_images, mean
from ..outcomes import Outcomes
from ..registry import Benchmark
from .winoground import winoground_scores

NAME = "mmvp-vlm"
PATTERNS = ("Orientation and Direction", "Presence of Specific Features", "State and Condition", "Quantity and Count",
            "Positional and Relational Context", "Color and Appearance", "Structural Characteristics", "Texts",
            "Viewpoint and Perspective")
PAIRS_PER_PATTERN = 15
IMAGE_DIRS = ("MLLM_VLM Images", "MMVP_VLM_Images")
PROMPT = "a photo of "


def key(pattern: str) -> str:
    """Summary name of a pattern: ``"Orientation and Direction"`` -> ``"orientation_and_direction"``."""
    return pattern.lower().replace(" ", "_")


def read_pairs(path: Path, image_dir: Path) -> List[Dict]:
    """The pairs of ``Questions.csv`` in file order, each with its two images, texts and Question IDs."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise BenchmarkDataError(f"{path}: not valid UTF-8 ({e})") from e
    except csv.Error as e:  # e.g. a field longer than the csv module's limit
        raise BenchmarkDataError(f"{path} line {reader.line_num}: not readable CSV ({e})") from e
    rows = [r for r in rows[1:] if any(c.strip() for c in r)]  # the first row is the header
    parsed = []
    for i, r in enumerate(rows):
        where = f"{path} row {i + 2}"
        if len(r) != 3:
            raise BenchmarkDataError(f"{where}: expected 3 columns (Question ID, Type, Statement), got {len(r)}")
        qid, qtype, statement = (c.strip() for c in r)
        if not qid.isdigit():
            raise BenchmarkDataError(f"{where}: Question ID must be a whole number, got {qid!r}")
        if not qtype or not statement:
            raise BenchmarkDataError(f"{where}: empty {'Type' if not qtype else 'Statement'}")
        parsed.append((int(qid), qtype, statement, where))
    if len(parsed) % 2:
        raise BenchmarkDataError(f"{path}: {len(parsed)} statements, not a whole number of pairs "
                                 f"(rows pair up two by two)")
    if len(parsed) > 2 * PAIRS_PER_PATTERN * len(PATTERNS):
        raise BenchmarkDataError(f"{path}: {len(parsed) // 2} pairs, more than the {PAIRS_PER_PATTERN} x "
                                 f"{len(PATTERNS)} of MMVP-VLM's patterns")
    pairs = []
    for p in range(len(parsed) // 2):
        (q1, t1, s1, w1), (q2, _, s2, _) = parsed[2 * p], parsed[2 * p + 1]
        pairs.append({"index": p, "qids": (q1, q2), "type": t1, "pattern": PATTERNS[p // PAIRS_PER_PATTERN],
                      "texts": (PROMPT + s1, PROMPT + s2),
                      "images": tuple(ImageRef(str(image_dir / t1 / f"{q}.jpg"), None, w1) for q in (q1, q2))})
    return pairs


def find_files(base: Path, opts: EvalOptions):
    csv_path = base / "Questions.csv"
    if not csv_path.is_file():
        raise BenchmarkMissing(f"expected Questions.csv and 'MLLM_VLM Images/' (Hugging Face MMVP/MMVP_VLM) in {base}")
    default = next((base / d for d in IMAGE_DIRS if (base / d).is_dir()), base / IMAGE_DIRS[0])
    return csv_path, opts.image_root(NAME, default)


def pair_outcomes(s: np.ndarray, qids: np.ndarray) -> Dict[str, np.ndarray]:
    """``s[n, i, t]`` = similarity of image i and text t of pair n; ``qids[n] = (qid1, qid2)``.

    ``pair``: the authors' score; ``text`` / ``image`` / ``group``: Winoground's, on the same pair."""
    picks_image1 = s[:, 0, :] > s[:, 1, :]                # per text: image 1 wins strictly
    truth_image1 = (qids % 2) == 1                        # odd Question ID: image 1 is the right one
    pair = np.all(picks_image1 == truth_image1, axis=1)
    return {"pair": pair, **winoground_scores(s)}


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    base = root / NAME
    csv_path, image_dir = find_files(base, opts)
    pairs = read_pairs(csv_path, image_dir)
    if not pairs:
        raise BenchmarkDataError(f"{csv_path}: no statements")
    complete = len(pairs) == PAIRS_PER_PATTERN * len(PATTERNS)
    pairs, n_missing = drop_missing_images(pairs, lambda p: p["images"], opts.missing_policy(), NAME)
    cases = [Case(p["images"][i], p["texts"]) for p in pairs for i in (0, 1)]
    s = scorer.score(cases, desc=NAME).reshape(len(pairs), 2, 2)
    res = pair_outcomes(s, np.array([p["qids"] for p in pairs], dtype=np.int64).reshape(-1, 2))
    pattern_of = [p["pattern"] for p in pairs]
    per_pattern, summary, outcomes = {}, {}, Outcomes("the pair's position in Questions.csv (0 = rows 2-3)")
    for pattern in PATTERNS:
        idx = [n for n, pt in enumerate(pattern_of) if pt == pattern]
        if not idx:
            continue
        per_pattern[pattern] = {k: float(v[idx].mean()) for k, v in res.items()} | {
            "n": len(idx), "types": sorted({pairs[n]["type"] for n in idx})}
        summary[key(pattern)] = per_pattern[pattern]["pair"]
        outcomes.add_group(key(pattern), [pairs[n]["index"] for n in idx], res["pair"][idx])
        outcomes.add_metric(key(pattern), [key(pattern)])
    if complete and all(pt in per_pattern for pt in PATTERNS):
        summary["avg"] = mean(per_pattern[pt]["pair"] for pt in PATTERNS)
        outcomes.add_metric("avg", [key(pt) for pt in PATTERNS])
    return {"n_pairs": len(pairs), "complete": complete, "files": {"questions": str(csv_path), "images": str(image_dir)},
            "per_pattern": per_pattern, "winoground_style": {k: float(v.mean()) for k, v in res.items() if k != "pair"},
            "missing_images_skipped": n_missing, "summary": summary, "outcomes": outcomes.to_json()}


BENCHMARK = Benchmark(
    name=NAME, order=65, evaluate=evaluate,
    title="MMVP-VLM (Tong et al., CVPR 2024): 9 visual patterns, both statements of a pair must pick their image",
    headline=("avg",),
    image_roots=(NAME,),
    protocol=lambda cfg: {NAME: "'a photo of ' + statement; per text, image 1 when s(image 1) > s(image 2) else "
                                "image 2; right image by Question ID parity; a pair is right when both texts are; "
                                "patterns by position (15 pairs each), avg = mean of the 9 (authors' evaluate_vlm.py)"},
    chance=(("*", 0.25),),
)
