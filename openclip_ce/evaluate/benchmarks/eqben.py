"""EqBen (Wang et al., ICCV 2023): Winoground-style text, image and group scores on visual-minimal changes.

Official files (github.com/Wangt-CN/EqBen, "Full-Test Set"), under ``DATA_ROOT/eqben/``::

    ann_json_finegrained_random.json   the public annotation (also the "light" release's), a JSON list of
        {"image": "eqbenag/.../x.png", "caption": "...",
         "private_info": {"dataset": "eqbenag", "name": "c0i1", "sample_cnt": 17}}, ...
        in random order; each sample (``sample_cnt``) has four entries, ``name`` saying which caption
        (c0/c1) and which image (i0/i1) of the sample the entry pairs
    images/   the image archive extracted (``eqben_image_full.tar.gz``, or the light jpg release), so that
              ``images/<image>`` exists; or ``--image-root eqben=DIR``

The light release converted the png images to jpg; where ``<image>`` ends in ``.png`` and only the
``.jpg`` is on disk, the ``.jpg`` is read (the change the authors ask light-release users to make).
YouCook2 frames are ``.npy`` arrays in BGR order, read as the authors' loader reads them.

Scores (the authors' ``evaluate_eqben_locally.py``, what their CodaLab server ran), per sub-dataset over
its samples, with s(c, i) the similarity of the entry that pairs caption c and image i:
text = s(c0,i0) > s(c1,i0) and s(c1,i1) > s(c0,i1); image = s(c0,i0) > s(c0,i1) and s(c1,i1) > s(c1,i0);
group = text and image (strict: a tie is a miss). The seven sub-datasets are ``eqbenag``,
``eqbenyoucook2``, ``eqbengebc``, ``eqbenkubric_loc``, ``eqbenkubric_attr``, ``eqbenkubric_cnt``,
``eqbensd``. ``eqbenkubric/*`` is the mean of the three Kubric ones, and ``text`` / ``image`` / ``group``
the mean over the five sources (AG, YouCook2, GEBC, Kubric, SD), as vl_compo / FSC-CLIP report "EqBen";
both are left out when a sub-dataset is missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List

import numpy as np

from ..common import (BenchmarkDataError, BenchmarkMissing, Case, EvalOptions, ImageRef, drop_missing_images,
                      field_of, load_json_list, log, mean)
from ..outcomes import Outcomes
from ..registry import Benchmark
from .winoground import winoground_scores

NAME = "eqben"
ANNOTATION = "ann_json_finegrained_random.json"
SUBSETS = ("eqbenag", "eqbenyoucook2", "eqbengebc", "eqbenkubric_loc", "eqbenkubric_attr", "eqbenkubric_cnt",
           "eqbensd")
KUBRIC = ("eqbenkubric_loc", "eqbenkubric_attr", "eqbenkubric_cnt")
SOURCES = ("eqbenag", "eqbenyoucook2", "eqbengebc", "eqbenkubric", "eqbensd")   # the five of the paper
PAIRS = ("c0i0", "c0i1", "c1i0", "c1i1")
SCORES = ("text", "image", "group")


class _Resolver:
    """``image dir / path``, with the light release's ``.png`` -> ``.jpg`` where only the jpg exists."""

    def __init__(self, image_dir: Path):
        self.image_dir = image_dir
        self.cache: Dict[str, str] = {}

    def __call__(self, rel: str) -> str:
        if rel not in self.cache:
            path = str(self.image_dir / rel)
            if path.lower().endswith(".png") and not os.path.isfile(path) and os.path.isfile(path[:-4] + ".jpg"):
                path = path[:-4] + ".jpg"
            self.cache[rel] = path
        return self.cache[rel]


def read_samples(path: Path, image_dir: Path) -> List[Dict]:
    """The samples of the annotation, by ``sample_cnt``: ``{"id", "dataset", "refs": {pair: ImageRef},
    "captions": {pair: str}}``; a sample without exactly one entry of each of its four pairs is an error."""
    resolve = _Resolver(image_dir)
    samples: Dict[int, Dict] = {}
    for i, e in enumerate(load_json_list(path, "EqBen image-caption entries")):
        where = f"{path} entry {i}"
        image, caption = field_of(e, "image", str, where), field_of(e, "caption", str, where)
        info = field_of(e, "private_info", dict, where)
        iwhere = f"{where} field 'private_info'"
        dataset, pair = field_of(info, "dataset", str, iwhere), field_of(info, "name", str, iwhere)
        cnt = field_of(info, "sample_cnt", int, iwhere)
        if pair not in PAIRS:
            raise BenchmarkDataError(f"{iwhere}: name {pair!r} is not one of {', '.join(PAIRS)}")
        s = samples.setdefault(cnt, {"id": cnt, "dataset": dataset, "refs": {}, "captions": {}, "first": i})
        if s["dataset"] != dataset:
            raise BenchmarkDataError(f"{iwhere}: sample_cnt {cnt} is in dataset {dataset!r} here and "
                                     f"{s['dataset']!r} in entry {s['first']}")
        if pair in s["refs"]:
            raise BenchmarkDataError(f"{iwhere}: sample_cnt {cnt} has a second {pair!r} entry")
        s["refs"][pair] = ImageRef(resolve(image), None, where)
        s["captions"][pair] = caption
    for cnt, s in samples.items():
        lacking = [p for p in PAIRS if p not in s["refs"]]
        if lacking:
            raise BenchmarkDataError(f"{path}: sample_cnt {cnt} (first entry {s['first']}) has no "
                                     f"{', '.join(map(repr, lacking))} entry")
    return [samples[k] for k in sorted(samples)]


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    base = root / NAME
    ann = base / ANNOTATION
    if not ann.is_file():
        raise BenchmarkMissing(f"expected {ANNOTATION} (+ images/) in {base}")
    samples = read_samples(ann, opts.image_root(NAME, base / "images"))
    unknown = sorted({s["dataset"] for s in samples} - set(SUBSETS))
    if unknown:
        log.warning("eqben: sub-datasets not in the authors' list, reported but left out of the means: %s",
                    ", ".join(unknown))
    kept, n_missing = drop_missing_images(samples, lambda s: [s["refs"][p] for p in PAIRS], opts.missing_policy(), NAME)
    # one case per entry: the similarity of its own image and caption, as the authors score each entry
    cases = [Case(s["refs"][p], (s["captions"][p],)) for s in kept for p in PAIRS]
    flat = scorer.score(cases, desc=NAME)[:, 0] if cases else np.zeros(0)
    by = flat.reshape(len(kept), 4)
    sim = np.empty((len(kept), 2, 2))  # sim[n, i, c]: image i, caption c (Winoground's layout)
    for k, p in enumerate(PAIRS):
        sim[:, int(p[3]), int(p[1])] = by[:, k]
    res = winoground_scores(sim)
    datasets = [s["dataset"] for s in kept]
    present = [d for d in SUBSETS if d in datasets] + unknown
    outcomes = Outcomes("the sample's private_info.sample_cnt")
    subsets, summary = {}, {}
    for d in present:
        idx = [k for k, x in enumerate(datasets) if x == d]
        subsets[d] = {m: float(res[m][idx].mean()) if idx else float("nan") for m in SCORES} | {"n": len(idx)}
        for m in SCORES:
            summary[f"{d}/{m}"] = subsets[d][m]
            outcomes.add_group(f"{d}/{m}", [kept[k]["id"] for k in idx], res[m][idx])
            outcomes.add_metric(f"{d}/{m}", [f"{d}/{m}"])
    if all(d in subsets for d in KUBRIC):
        for m in SCORES:
            summary[f"eqbenkubric/{m}"] = mean(subsets[d][m] for d in KUBRIC)
            outcomes.add_metric(f"eqbenkubric/{m}", [f"{d}/{m}" for d in KUBRIC])
    missing = [d for d in SUBSETS if d not in subsets]
    if not missing:
        for m in SCORES:
            summary[m] = mean(summary[f"{src}/{m}"] for src in SOURCES)
            outcomes.add_metric(m, [f"{d}/{m}" for d in SUBSETS])
    else:
        log.warning("eqben: sub-datasets missing from %s: %s (the means over the five sources are left out)",
                    ann, ", ".join(missing))
    return {"subsets": subsets, "missing_subsets": missing, "n_samples": len(kept),
            "missing_images_skipped": n_missing, "summary": summary, "outcomes": outcomes.to_json()}


BENCHMARK = Benchmark(
    name=NAME, order=75, evaluate=evaluate,
    title="EqBen (Wang et al., ICCV 2023): text/image/group scores on visual-minimal changes, 7 sub-datasets",
    headline=("text", "image", "group"),
    image_roots=(NAME,),
    protocol=lambda cfg: {"eqben": "per sub-dataset text/image/group scores of evaluate_eqben_locally.py (strict); "
                                   "text/image/group = mean over AG, YouCook2, GEBC, Kubric (mean of 3), SD"},
    chance=(("*/text", 0.25), ("*/image", 0.25), ("*/group", 1 / 6), ("text", 0.25), ("image", 0.25),
            ("group", 1 / 6)),
)
