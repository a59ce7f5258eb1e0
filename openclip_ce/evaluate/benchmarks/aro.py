"""ARO (Yuksekgonul et al., ICLR 2023): VG-Relation, VG-Attribution, COCO-Order, Flickr30k-Order.

Official files (github.com/mertyg/vision-language-models-are-bows), under ``DATA_ROOT/aro/``::

    visual_genome_relation.json      [{"image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h",
    visual_genome_attribution.json     "true_caption", "false_caption", "relation_name" | "attributes"}]
    images/                          the vgr_vga_images.zip images (``image_path`` is relative to it)
    coco/coco_karpathy_test.json     [{"image": "val2014/...jpg", "caption": [5 captions]}], images under coco/
    flickr30k/flickr30k_test.json    [{"image": "flickr30k-images/...jpg", "caption": [...]}], images under flickr30k/

Protocol, as the authors compute it:

* VG-*: the image is cropped to the item's box (the union box of the two objects) with PIL's
  ``Image.crop((x, y, x + w, y + h))``, unclamped, as the authors' dataset class does: where the box
  runs past the image edge PIL fills the crop with black (a box wholly outside the image gives an
  all-black crop, not an error). The true and the false caption are ranked; the item is right when
  the true caption scores higher.
* VG-Relation macro accuracy = mean of per-relation accuracies over the relations *not* in the
  authors' list of symmetric relations (their notebook); VG-Attribution macro accuracy = mean of
  per-attribute-pair accuracies over pairs with at least 25 items (their ``evaluate_scores``).
  Micro accuracy (over all items) is reported next to both.
* Order sets: every caption of the Karpathy test split against four perturbations of itself
  (shuffle nouns+adjectives, shuffle everything else, shuffle within trigrams, shuffle trigrams),
  all passed through the authors' ``pre_caption`` (lowercase, punctuation removed, 30 words);
  precision@1 of the original caption. Perturbations are random: seeded with ``--seed``.
  Tokens and POS tags come from spaCy for all four (the authors use NLTK's word_tokenize for the
  two trigram shuffles).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ...generation.tagging import SPACY_MODEL_HELP, default_spacy_model
from ..common import (BenchmarkDataError, BenchmarkMissing, Case, EvalOptions, ImageRef, drop_missing_images,
                     field_of, load_json_list, mean, pos_wins)
from ..outcomes import Outcomes
from ..registry import Benchmark

log = logging.getLogger(__name__)

NAME = "aro"
MIN_ATTRIBUTE_PAIR_COUNT = 25

# The relations the ARO authors leave out of the VG-Relation macro accuracy
# (notebooks/"Replicate ARO! VG-Relation, VG-Attribution.ipynb").
SYMMETRIC_RELATIONS = frozenset([
    'adjusting', 'attached to', 'between', 'bigger than', 'biting', 'boarding', 'brushing', 'chewing',
    'cleaning', 'climbing', 'close to', 'coming from', 'coming out of', 'contain', 'crossing', 'dragging',
    'draped over', 'drinking', 'drinking from', 'driving', 'driving down', 'driving on', 'eating from',
    'eating in', 'enclosing', 'exiting', 'facing', 'filled with', 'floating in', 'floating on', 'flying',
    'flying above', 'flying in', 'flying over', 'flying through', 'full of', 'going down', 'going into',
    'going through', 'grazing in', 'growing in', 'growing on', 'guiding', 'hanging from', 'hanging in',
    'hanging off', 'hanging over', 'higher than', 'holding onto', 'hugging', 'in between', 'jumping off',
    'jumping on', 'jumping over', 'kept in', 'larger than', 'leading', 'leaning over', 'leaving', 'licking',
    'longer than', 'looking in', 'looking into', 'looking out', 'looking over', 'looking through',
    'lying next to', 'lying on top of', 'making', 'mixed with', 'mounted on', 'moving', 'on the back of',
    'on the edge of', 'on the front of', 'on the other side of', 'opening', 'painted on', 'parked at',
    'parked beside', 'parked by', 'parked in', 'parked in front of', 'parked near', 'parked next to',
    'perched on', 'petting', 'piled on', 'playing', 'playing in', 'playing on', 'playing with', 'pouring',
    'reaching for', 'reading', 'reflected on', 'riding on', 'running in', 'running on', 'running through',
    'seen through', 'sitting behind', 'sitting beside', 'sitting by', 'sitting in front of', 'sitting near',
    'sitting next to', 'sitting under', 'skiing down', 'skiing on', 'sleeping in', 'sleeping on',
    'smiling at', 'sniffing', 'splashing', 'sprinkled on', 'stacked on', 'standing against',
    'standing around', 'standing behind', 'standing beside', 'standing in front of', 'standing near',
    'standing next to', 'staring at', 'stuck in', 'surrounding', 'swimming in', 'swinging', 'talking to',
    'topped with', 'touching', 'traveling down', 'traveling on', 'tying', 'typing on', 'underneath',
    'wading in', 'waiting for', 'walking across', 'walking by', 'walking down', 'walking next to',
    'walking through', 'working in', 'working on', 'worn on', 'wrapped around', 'wrapped in', 'by', 'of',
    'near', 'next to', 'with', 'beside', 'on the side of', 'around',
])

VG_FILES = {"vg_relation": "visual_genome_relation.json", "vg_attribution": "visual_genome_attribution.json"}
ORDER_FILES = {"coco_order": ("coco", "coco_karpathy_test.json"), "flickr30k_order": ("flickr30k", "flickr30k_test.json")}


# --------------------------------------------------------------------------- VG-Relation / VG-Attribution


def read_vg(path: Path, image_dir: Path, kind: str) -> List[Tuple[Case, str]]:
    """``[(Case(image crop, (true, false)), group)]``; group = relation name or "attr0_attr1"."""
    data = load_json_list(path, "test cases")
    out = []
    for i, e in enumerate(data):
        where = f"{path} entry {i}"
        box = [float(field_of(e, k, (int, float), where)) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")]
        if box[2] <= 0 or box[3] <= 0:
            raise BenchmarkDataError(f"{where}: bbox_w/bbox_h must be positive, got {box[2]}x{box[3]}")
        true = field_of(e, "true_caption", str, where)
        false = field_of(e, "false_caption", str, where)
        if kind == "vg_relation":
            group = field_of(e, "relation_name", str, where)
        else:
            attrs = field_of(e, "attributes", list, where)
            if len(attrs) != 2 or not all(isinstance(a, str) for a in attrs):
                raise BenchmarkDataError(f"{where}: 'attributes' must be a list of two strings, got {attrs!r}")
            group = f"{attrs[0]}_{attrs[1]}"
        x, y, w, h = box
        ref = ImageRef(str(image_dir / field_of(e, "image_path", str, where)), (x, y, x + w, y + h), where)
        out.append((Case(ref, (true, false)), group))
    return out


def vg_metrics(correct: np.ndarray, groups: Sequence[str], kind: str) -> Dict:
    """Micro accuracy, per-group accuracy and the authors' macro accuracy (see module docstring)."""
    groups = np.asarray(groups)
    per_group, included = {}, []
    for g in sorted(set(groups.tolist())):
        mask = groups == g
        acc = float(correct[mask].mean())
        if kind == "vg_relation":
            use = g not in SYMMETRIC_RELATIONS
        else:
            use = int(mask.sum()) >= MIN_ATTRIBUTE_PAIR_COUNT
        per_group[g] = {"accuracy": acc, "count": int(mask.sum()), "in_macro": use}
        if use:
            included.append(acc)
    res = {
        "macro_accuracy": mean(included),
        "micro_accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "macro_accuracy_all_groups": mean(v["accuracy"] for v in per_group.values()),
        "groups_in_macro": len(included),
        "n": int(len(correct)),
        ("per_relation" if kind == "vg_relation" else "per_attribute_pair"): per_group,
    }
    return res


# --------------------------------------------------------------------------- Order sets


def pre_caption(caption: str, max_words: int = 30) -> str:
    """The ARO authors' caption normalisation (lowercase, drop .!"()*#:;~, squeeze spaces, max words)."""
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption).rstrip("\n").strip(" ")
    words = caption.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else caption


NOUN_TAGS = frozenset(["NN", "NNS", "NNP", "NNPS"])
ADJ_TAGS = frozenset(["JJ", "JJR", "JJS"])


def _permute_positions(tokens: List[str], idx: List[int], rng: np.random.Generator) -> None:
    if len(idx) > 1:
        vals = [tokens[i] for i in idx]
        for i, j in zip(idx, rng.permutation(len(vals))):
            tokens[i] = vals[j]


def _trigrams(tokens: List[str]) -> List[List[str]]:
    return [tokens[i:i + 3] for i in range(0, len(tokens), 3)]


def perturbations(tokens: List[str], tags: List[str], rng: np.random.Generator) -> List[str]:
    """The four ARO order perturbations of one tokenised caption, in the authors' order."""
    nouns = [i for i, t in enumerate(tags) if t in NOUN_TAGS]
    adjs = [i for i, t in enumerate(tags) if t in ADJ_TAGS]
    a = list(tokens)
    _permute_positions(a, nouns, rng)
    _permute_positions(a, adjs, rng)
    b = list(tokens)
    _permute_positions(b, [i for i, t in enumerate(tags) if t not in NOUN_TAGS and t not in ADJ_TAGS], rng)
    c = [w for tri in _trigrams(tokens) for w in (tri[j] for j in rng.permutation(len(tri)))]
    tris = _trigrams(tokens)
    d = [w for j in rng.permutation(len(tris)) for w in tris[j]]
    return [" ".join(x) for x in (a, b, c, d)]


def read_order(path: Path, image_dir: Path, spacy_model: str, seed: int) -> List[Case]:
    """Cases with 5 captions each: the original first, then the four perturbations (all pre_caption'ed)."""
    data = load_json_list(path, "images")
    pairs = []
    for i, e in enumerate(data):
        where = f"{path} entry {i}"
        image = field_of(e, "image", str, where)
        caps = field_of(e, "caption", list, where)
        for j, c in enumerate(caps):
            if not isinstance(c, str) or not c.strip():
                raise BenchmarkDataError(f"{where}: caption {j} must be a non-empty string")
            pairs.append((ImageRef(str(image_dir / image), None, where), c))
    import spacy  # heavy: imported only when an Order set is evaluated

    try:
        nlp = spacy.load(spacy_model, disable=["parser", "ner", "lemmatizer"])
    except OSError as e:
        raise BenchmarkDataError(f"{path}: the Order sets need the spaCy model {spacy_model!r} "
                                 f"(python -m spacy download {spacy_model}, or --spacy-model NAME)") from e
    rng = np.random.default_rng(seed)
    cases = []
    for (ref, cap), doc in zip(pairs, nlp.pipe((c for _, c in pairs), batch_size=256)):
        tokens, tags = [t.text for t in doc], [t.tag_ for t in doc]
        options = [cap] + perturbations(tokens, tags, rng)
        cases.append(Case(ref, tuple(pre_caption(o) for o in options)))
    return cases


# --------------------------------------------------------------------------- benchmark


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    cfg = BENCHMARK.settings(opts)
    base = root / "aro"
    parts, skipped = {}, {}
    outcomes = Outcomes("position of the item in its file (Order sets: of the caption, over all captions in file order)")
    metric_groups: Dict[str, List[str]] = {}
    vg_images = opts.image_root("aro-vg", base / "images")
    for kind, fname in VG_FILES.items():
        path = base / fname
        if not path.is_file():
            skipped[kind] = f"expected {fname} at {path}"
            continue
        items = [(c, g, i) for i, (c, g) in enumerate(read_vg(path, vg_images, kind))]
        items, n_missing = drop_missing_images(items, lambda it: [it[0].image], opts.missing_policy(), f"aro/{kind}")
        scores = scorer.score([c for c, _, _ in items], desc=f"aro/{kind}")
        correct = pos_wins(scores, 0)
        groups = [g for _, g, _ in items]
        parts[kind] = vg_metrics(correct, groups, kind)
        parts[kind]["missing_images_skipped"] = n_missing
        names = outcomes.add_grouped(groups, [i for _, _, i in items], correct, prefix=f"{kind}/")
        per_group = parts[kind]["per_relation" if kind == "vg_relation" else "per_attribute_pair"]
        metric_groups[f"{kind}_macro"] = [f"{kind}/{g}" for g, v in per_group.items() if v["in_macro"]]
        metric_groups[f"{kind}_micro"] = names
    for kind, (sub, fname) in ORDER_FILES.items():
        path = base / sub / fname
        if not path.is_file():
            skipped[kind] = f"expected {fname} at {path}"
            continue
        cases = read_order(path, opts.image_root(f"aro-{sub}", base / sub), cfg["spacy_model"], cfg["seed"])
        cases, n_missing = drop_missing_images(list(enumerate(cases)), lambda c: [c[1].image], opts.missing_policy(),
                                               f"aro/{kind}")
        scores = scorer.score([c for _, c in cases], desc=f"aro/{kind}")
        correct = pos_wins(scores, 0, ties_win=True)
        parts[kind] = {"precision_at_1": float(correct.mean()) if len(correct) else float("nan"),
                       "n": len(cases), "seed": cfg["seed"], "missing_images_skipped": n_missing}
        outcomes.add_group(kind, [i for i, _ in cases], correct)
        metric_groups[kind] = [kind]
    if not parts:
        raise BenchmarkMissing("; ".join(skipped.values()))
    for kind, note in skipped.items():
        log.warning("aro/%s skipped: %s", kind, note)
    summary = {}
    for kind in VG_FILES:
        if kind in parts:
            summary[f"{kind}_macro"] = parts[kind]["macro_accuracy"]
            summary[f"{kind}_micro"] = parts[kind]["micro_accuracy"]
    for kind in ORDER_FILES:
        if kind in parts:
            summary[kind] = parts[kind]["precision_at_1"]
    for metric in summary:
        outcomes.add_metric(metric, metric_groups[metric])
    return {"parts": parts, "skipped": skipped, "summary": summary, "outcomes": outcomes.to_json()}


def _add_arguments(group) -> None:
    group.add_argument("--seed", type=int, default=0, help="ARO: seed of the random Order perturbations")
    group.add_argument("--spacy-model", default=None, help=f"ARO: spaCy model for the Order POS tags ({SPACY_MODEL_HELP})")


def _protocol(cfg: Dict) -> Dict:
    return {
        "vg_crop": "PIL Image.crop((bbox_x, bbox_y, bbox_x + bbox_w, bbox_y + bbox_h)) unclamped, as the authors' "
                   "dataset class: parts of the box outside the image are black",
        "vg_relation_macro": "mean over relations not in the authors' symmetric list",
        "vg_attribution_macro": f"mean over attribute pairs with >= {MIN_ATTRIBUTE_PAIR_COUNT} items",
        "order": "precision@1 of the original caption among it and its 4 perturbations (ties: original wins)",
        "order_seed": cfg["seed"], "order_spacy_model": cfg["spacy_model"],
    }


BENCHMARK = Benchmark(
    name=NAME, order=10, evaluate=evaluate,
    title="ARO (Yuksekgonul et al., ICLR 2023): VG-Relation, VG-Attribution, COCO/Flickr30k-Order",
    headline=("vg_relation_macro", "vg_attribution_macro", "coco_order", "flickr30k_order"),
    image_roots=("aro-vg", "aro-coco", "aro-flickr30k"),
    defaults={"seed": 0, "spacy_model": default_spacy_model()},
    add_arguments=_add_arguments,
    options=lambda args: {"seed": args.seed, "spacy_model": args.spacy_model or default_spacy_model()},
    protocol=_protocol,
    chance=(("vg_*", 0.5), ("*_order", 0.2)),
)
