"""VL-CheckList (Zhao et al., 2022): Object, Attribute and Relation with their sub-categories.

Official files (github.com/om-ai-lab/VL-CheckList ``corpus/`` and ``data/``), under
``DATA_ROOT/vl-checklist/``::

    corpus/v1/<Category>/<sub>[/<value>]/<source>.yaml   ANNO_PATH (relative to vl-checklist/),
                                                         IMG_ROOT (relative to images/), TYPE: TUPLE_JSON
    data/...json          [["VG_100K/2372476.jpg", {"POS": ["skiing slope"], "NEG": ["snowboarding slope"]}], ...]
    images/vg/ images/swig/ images/hake/                 the source datasets' images (DATASETS.md layout)

Protocol (the ``itc`` task of ``vl_checklist/evaluate.py``): for every pair, the first POS and the
first NEG caption are scored against the image; right when POS scores strictly higher. As in the
official loader, pairs whose image file is missing are skipped (counted in the JSON).
``--vlc-max-per-corpus N`` keeps the first N pairs per yaml corpus (the official sample config
uses MAX_NUM 2000, i.e. 1000 ``itc`` pairs); default: every pair.

Aggregation (macro at every level, written down because papers differ): accuracy per yaml corpus
-> mean over the corpora of a leaf (e.g. Attribute/color over vg and vaw; Object/Location/center over
vg_obj, vg_subj, swig_*, hake) -> mean over the leaves of a sub-category (Object/Location over
center, mid, margin) -> mean over the sub-categories of a category -> ``avg`` = mean of the three
categories. Pooled (micro) accuracies per sub-category are in the JSON too.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

from ...errors import reason
from ..common import (BenchmarkDataError, BenchmarkMissing, Case, EvalOptions, ImageRef, at_least, drop_missing_images,
                     load_json_list, mean, pos_wins)
from ..outcomes import Outcomes
from ..registry import Benchmark

log = logging.getLogger(__name__)

NAME = "vl-checklist"
CATEGORIES = ("Attribute", "Object", "Relation")


def read_corpus_yaml(path: Path) -> Dict[str, str]:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise BenchmarkDataError(f"{path}: not valid UTF-8 YAML ({reason(e)})") from e
    except RecursionError:
        raise BenchmarkDataError(f"{path}: not usable YAML (nested deeper than the YAML reader follows)") from None
    if not isinstance(cfg, dict):
        raise BenchmarkDataError(f"{path}: expected a mapping with ANNO_PATH, IMG_ROOT, TYPE")
    for key in ("ANNO_PATH", "IMG_ROOT"):
        if not isinstance(cfg.get(key), str) or not cfg[key].strip():
            raise BenchmarkDataError(f"{path}: missing or empty {key}")
    if cfg.get("TYPE", "TUPLE_JSON") != "TUPLE_JSON":
        raise BenchmarkDataError(f"{path}: TYPE {cfg.get('TYPE')!r} is not supported (expected TUPLE_JSON)")
    return cfg


def read_pairs(anno: Path, image_root: Path, yaml_path: Path) -> List[Case]:
    if not anno.is_file():
        raise BenchmarkDataError(f"{yaml_path}: ANNO_PATH file not found: {anno}")
    data = load_json_list(anno, "[image, {POS, NEG}] pairs")
    cases = []
    for i, e in enumerate(data):
        where = f"{anno} entry {i}"
        if not (isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], dict)):
            raise BenchmarkDataError(f"{where}: expected [image_path, {{\"POS\": [...], \"NEG\": [...]}}]")
        texts = []
        for key in ("POS", "NEG"):
            v = e[1].get(key)
            if not (isinstance(v, list) and v and isinstance(v[0], str) and v[0].strip()):
                raise BenchmarkDataError(f"{where}: {key} must be a non-empty list of captions")
            texts.append(v[0])
        cases.append(Case(ImageRef(str(image_root / e[0]), None, where), tuple(texts)))
    return cases


def corpus_key(yaml_path: Path, corpus_dir: Path) -> Tuple[str, str, str, str]:
    """``(category, sub-category, leaf, corpus)`` from ``corpus/v1/Object/Location/center/vg_obj.yaml``:
    ``("Object", "Location", "Location/center", "Object/Location/center/vg_obj")``."""
    parts = yaml_path.relative_to(corpus_dir).with_suffix("").parts
    if len(parts) < 3 or parts[0] not in CATEGORIES:
        raise BenchmarkDataError(f"{yaml_path}: expected corpus/v1/<{'|'.join(CATEGORIES)}>/<sub>/.../<source>.yaml")
    return parts[0], parts[1], "/".join(parts[1:-1]), "/".join(parts)


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    settings = BENCHMARK.settings(opts)
    base = root / "vl-checklist"
    corpus_dir = base / "corpus" / "v1"
    yamls = sorted(corpus_dir.rglob("*.yaml")) if corpus_dir.is_dir() else []
    if not yamls:
        raise BenchmarkMissing(f"expected corpus/v1/<Attribute|Object|Relation>/**/*.yaml (and data/) in {base}")
    image_dir = opts.image_root("vl-checklist", base / "images")
    items, skipped_images, n_in_files = [], {}, {}  # items: (case, corpus key, position in its annotation file)
    for y in yamls:
        key = corpus_key(y, corpus_dir)
        cfg = read_corpus_yaml(y)
        cases = list(enumerate(read_pairs(base / cfg["ANNO_PATH"], image_dir / cfg["IMG_ROOT"], y)))
        n_in_files[key] = len(cases)
        cases, skipped_images[key] = drop_missing_images(cases, lambda c: [c[1].image], opts.missing_policy("skip"),
                                                         f"vl-checklist/{key[3]}")
        if settings["max_per_corpus"]:
            cases = cases[:settings["max_per_corpus"]]
        items += [(c, key, i) for i, c in cases]
    if not items:
        raise BenchmarkMissing(f"no VL-CheckList pair has its image under {image_dir}")
    scores = scorer.score([c for c, _, _ in items], desc="vl-checklist")
    correct = pos_wins(scores, 0)
    by_corpus: Dict[Tuple, List[bool]] = defaultdict(list)
    for ok, (_, key, _) in zip(correct.tolist(), items):
        by_corpus[key].append(ok)
    outcomes = Outcomes()
    outcomes.add_grouped([k[3] for _, k, _ in items], [i for _, _, i in items], correct)
    corpora = {k[3]: {"accuracy": mean(v), "n": len(v), "n_in_file": n_in_files[k],
                             "missing_images_skipped": skipped_images[k]} for k, v in sorted(by_corpus.items())}
    leaves: Dict[Tuple[str, str, str], List[float]] = defaultdict(list)
    pooled: Dict[Tuple[str, str], List[bool]] = defaultdict(list)
    for (cat, sub, leaf, _), v in by_corpus.items():
        leaves[(cat, sub, leaf)].append(mean(v))
        pooled[(cat, sub)] += v
    subs: Dict[Tuple[str, str], List[float]] = defaultdict(list)
    for (cat, sub, leaf), accs in leaves.items():
        subs[(cat, sub)].append(mean(accs))
    cats: Dict[str, List[float]] = defaultdict(list)
    summary: Dict[str, float] = {}

    def corpora_of(pred) -> List[str]:  # outcome groups (corpora) behind a summary metric
        return sorted(k[3] for k in by_corpus if pred(k))

    for (cat, sub), accs in sorted(subs.items()):
        summary[f"{cat.lower()}/{sub.lower()}"] = mean(accs)
        outcomes.add_metric(f"{cat.lower()}/{sub.lower()}", corpora_of(lambda k: (k[0], k[1]) == (cat, sub)))
        cats[cat].append(mean(accs))
    for cat in CATEGORIES:
        if cat in cats:
            summary[cat.lower()] = mean(cats[cat])
            outcomes.add_metric(cat.lower(), corpora_of(lambda k: k[0] == cat))
    if all(c in cats for c in CATEGORIES):
        summary["avg"] = mean(summary[c.lower()] for c in CATEGORIES)
        outcomes.add_metric("avg", corpora_of(lambda k: True))
    return {
        "corpora": corpora,
        "leaves": {f"{k[0]}/{k[2]}": mean(v) for k, v in sorted(leaves.items())},
        "subcategory_micro": {f"{c}/{s}": mean(v) for (c, s), v in sorted(pooled.items())},
        "missing_images_skipped": int(sum(skipped_images.values())),
        "max_per_corpus": settings["max_per_corpus"] or None,
        "summary": summary,
        "outcomes": outcomes.to_json(),
    }


def _add_arguments(group) -> None:
    group.add_argument("--vlc-max-per-corpus", type=at_least(0), default=0,
                       help="VL-CheckList: first N pairs per corpus yaml (0 = all; official sample config = 1000)")


BENCHMARK = Benchmark(
    name=NAME, order=40, evaluate=evaluate,
    title="VL-CheckList (Zhao et al., 2022): Object, Attribute, Relation",
    headline=("attribute", "object", "relation", "avg"),
    image_roots=("vl-checklist",),
    defaults={"max_per_corpus": 0},
    add_arguments=_add_arguments,
    options=lambda args: {"max_per_corpus": args.vlc_max_per_corpus},
    protocol=lambda cfg: {"vl_checklist_max_per_corpus": cfg["max_per_corpus"] or None,
                          "vl_checklist_aggregation": "macro: corpus -> leaf -> sub-category -> category -> avg",
                          "vl_checklist_missing_images": "skipped and counted, as its official loader"},
    chance=(("*", 0.5),),
)
