"""``openclip-ce analyze``: the paper's representation analysis (CE-CLIP, Fig. 8) for several models.

On WebDataset shards with hard negatives (``KEY.jpg``, ``KEY.txt``, ``KEY.neg.json`` in the format of
:mod:`openclip_ce.negatives`; a ``null`` type is a placeholder and is skipped), for every model and
every negative type k:

* intra-modal similarity  cos(g(T), g(T_k))            (lower = caption and negative kept apart)
* cross-modal gap          cos(f(I), g(T)) - cos(f(I), g(T_k))   (higher = image prefers its caption)

averaged over the samples that have a type-k negative, with percentile bootstrap confidence
intervals (``--bootstrap`` resamples, default 50,000 as in the paper; ``--ci`` level). Paired
bootstrap intervals of each model's difference to the first model say whether a difference is
significant.

The bootstrap resamples *images*, not captions (a cluster bootstrap): samples whose image bytes are
identical are one image, and a resampled image brings all its captions. COCO has five captions per
image; resampling captions as if they were independent would make the intervals too narrow. Each
resample is drawn once and applied to every negative type, metric and model, so paired differences
and all intervals come from the same resampled images. ``--bootstrap-unit caption`` resamples
captions instead. Writes OUT.json and OUT.png.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from braceexpand import braceexpand
from PIL import Image

from ..errors import UserError
from ..fileio import check_prefix, write_atomic
from ..negatives import NEG_TYPES, NegativesFormatError, decode_negatives
from ..plotting import pyplot, save_figure
from ..shards.tario import ShardFormatError, read_samples, split_key
from .common import at_least, json_dumps
from .models import default_device, load_model
from .scorer import ClipScorer

log = logging.getLogger(__name__)

METRICS = ("intra_similarity", "cross_modal_gap")


@dataclass
class Sample:
    key: str
    image: bytes
    caption: str
    negatives: Dict[str, Optional[str]]
    shard: str = ""


def expand_shards(spec: str) -> List[str]:
    paths = [p for part in spec.split("::") for p in braceexpand(part)]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UserError(f"--data: shard not found: {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    return paths


def read_shard(path: str) -> List[Sample]:
    """Samples of one tar shard, grouped by webdataset key (name up to the first dot of the basename)."""
    groups: Dict[str, Dict[str, bytes]] = {}
    try:
        for key, members in read_samples(path):
            if key is not None:
                for m in members:
                    groups.setdefault(key, {})[split_key(m.name)[1].lower()] = m.data
    except ShardFormatError as e:
        raise UserError(f"{path}: not a readable tar shard ({e})") from e
    out = []
    for key, members in groups.items():
        img = next((members[e] for e in ("jpg", "jpeg", "png", "webp") if e in members), None)
        if img is None or "txt" not in members:
            raise UserError(f"{path}: sample {key!r} lacks an image (jpg/png/webp) or txt member")
        if "neg.json" not in members:
            raise UserError(f"{path}: sample {key!r} has no neg.json (run `openclip-ce make-shards` first)")
        try:
            negs = decode_negatives(members["neg.json"])
        except NegativesFormatError as e:
            raise UserError(f"{path}: sample {key!r}: neg.json {e}") from e
        out.append(Sample(key, img, members["txt"].decode("utf-8", errors="replace").strip(), negs, path))
    return out


class _BytesImages:
    def __init__(self, samples: Sequence[Sample], preprocess):
        self.samples, self.preprocess = samples, preprocess

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        s = self.samples[i]
        try:
            img = Image.open(io.BytesIO(s.image)).convert("RGB")
        except Exception as e:
            where = f"{s.shard}: " if s.shard else ""
            raise UserError(f"{where}sample {s.key!r}: cannot decode image ({type(e).__name__}: {e})") from e
        return self.preprocess(img)


def per_sample_values(img: np.ndarray, cap: np.ndarray, neg: np.ndarray) -> Dict[str, np.ndarray]:
    """Rows are L2-normalised features of the same samples: intra-modal cos(T,T_k), gap cos(I,T)-cos(I,T_k)."""
    return {"intra_similarity": (cap * neg).sum(1), "cross_modal_gap": (img * cap).sum(1) - (img * neg).sum(1)}


def model_values(scorer, samples: Sequence[Sample], label: str) -> Dict[str, Dict[str, np.ndarray]]:
    """``{type: {metric: value per sample}}``, NaN for the samples without a type negative."""
    img = scorer.encode_image_dataset(_BytesImages(samples, scorer.preprocess), f"analyze {label}").numpy()
    cap = scorer.encode_texts([s.caption for s in samples], f"analyze {label} captions").numpy()
    out = {}
    for t in NEG_TYPES:
        idx = [i for i, s in enumerate(samples) if s.negatives.get(t)]
        if not idx:
            continue
        neg = scorer.encode_texts([samples[i].negatives[t] for i in idx], f"analyze {label} {t}").numpy()
        vals = per_sample_values(img[idx].astype(np.float64), cap[idx].astype(np.float64), neg.astype(np.float64))
        out[t] = {}
        for metric, v in vals.items():
            full = np.full(len(samples), np.nan)
            full[idx] = v
            out[t][metric] = full
    return out


def image_clusters(samples: Sequence[Sample]) -> np.ndarray:
    """Cluster index of each sample: samples with byte-identical images share one (COCO: 5 captions an image)."""
    index: Dict[bytes, int] = {}
    return np.array([index.setdefault(hashlib.sha1(s.image).digest(), len(index)) for s in samples], dtype=np.int64)


def cluster_bootstrap(columns: np.ndarray, clusters: np.ndarray, n_boot: int, rng: np.random.Generator,
                      max_cells: int = 20_000_000) -> np.ndarray:
    """Bootstrap means of every row of ``columns`` (V, n; NaN = sample not part of that row), resampling clusters.

    A resample draws C clusters with replacement out of the C clusters; a row's resampled mean is
    the sum of its values over the drawn clusters' samples divided by their count (so a cluster
    drawn twice counts twice). The draws are made once, here, and applied to every row: rows
    compared with each other (models, metrics, negative types) see the same resampled clusters.
    Returns ``(V, n_boot)``; NaN where a resample holds no sample of a row."""
    columns = np.atleast_2d(np.asarray(columns, dtype=np.float64))
    clusters = np.asarray(clusters, dtype=np.int64)
    n_clusters = int(clusters.max()) + 1 if len(clusters) else 0
    valid = ~np.isnan(columns)
    sums = np.zeros((n_clusters, columns.shape[0]))
    counts = np.zeros((n_clusters, columns.shape[0]))
    np.add.at(sums, clusters, np.where(valid, columns, 0.0).T)
    np.add.at(counts, clusters, valid.T.astype(np.float64))
    out = np.empty((columns.shape[0], n_boot))
    chunk = max(1, min(n_boot, max_cells // max(1, n_clusters)))
    for s in range(0, n_boot, chunk):
        m = min(chunk, n_boot - s)
        draws = rng.integers(0, n_clusters, size=(m, n_clusters))
        weights = np.bincount((draws + n_clusters * np.arange(m)[:, None]).ravel(),
                              minlength=m * n_clusters).reshape(m, n_clusters).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, s:s + m] = ((weights @ sums) / (weights @ counts)).T
    return out


def bootstrap_means(values: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator,
                    clusters: Optional[np.ndarray] = None) -> np.ndarray:
    """``(len(values), n_boot)`` bootstrap means of the value vectors, all from the same resamples of
    ``clusters`` (default: every sample its own cluster)."""
    vals = np.stack([np.asarray(v, dtype=np.float64) for v in values])
    return cluster_bootstrap(vals, np.arange(vals.shape[1]) if clusters is None else clusters, n_boot, rng)


def summarize(point: float, boots: np.ndarray, ci: float) -> Dict[str, float]:
    lo, hi = np.nanquantile(boots, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return {"mean": float(point), "ci_low": float(lo), "ci_high": float(hi), "std_err": float(np.nanstd(boots, ddof=1))}


def analyze_values(values: Dict[str, Dict[str, Dict[str, np.ndarray]]], labels: Sequence[str], n_boot: int,
                   ci: float, seed: int, clusters: Optional[np.ndarray] = None) -> Dict:
    """``values[label][type][metric]`` (per sample, NaN where the sample has no type negative) -> per type:
    each model's mean + CI and paired differences to labels[0], from one set of resampled ``clusters``
    (images; default: every sample its own) shared by every type, metric and model."""
    types = [t for t in NEG_TYPES if all(t in values[lab] for lab in labels)]
    if not types:
        return {}
    rows = [(t, metric, lab) for t in types for metric in METRICS for lab in labels]
    columns = np.stack([np.asarray(values[lab][t][metric], dtype=np.float64) for t, metric, lab in rows])
    if clusters is None:
        clusters = np.arange(columns.shape[1])
    boots = cluster_bootstrap(columns, clusters, n_boot, np.random.default_rng(seed))
    row_of = {r: i for i, r in enumerate(rows)}
    out = {}
    for t in types:
        present = ~np.isnan(values[labels[0]][t][METRICS[0]])
        entry = {"n": int(present.sum()), "n_images": int(len(np.unique(np.asarray(clusters)[present]))),
                 "models": {}, "difference_vs_first": {}}
        for metric in METRICS:
            first = row_of[(t, metric, labels[0])]
            for j, lab in enumerate(labels):
                r = row_of[(t, metric, lab)]
                entry["models"].setdefault(lab, {})[metric] = summarize(np.nanmean(columns[r]), boots[r], ci)
                if j:
                    d = summarize(np.nanmean(columns[r]) - np.nanmean(columns[first]), boots[r] - boots[first], ci)
                    d["significant"] = bool(d["ci_low"] > 0 or d["ci_high"] < 0)
                    entry["difference_vs_first"].setdefault(lab, {})[metric] = d
        out[t] = entry
    return out


def plot(result: Dict, labels: Sequence[str], png: Path) -> None:
    plt = pyplot()
    types = list(result["types"])
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 2.2 * len(types) * max(1, len(labels)) ** 0.5 + 3), 3.8))
    colors = plt.get_cmap("tab10").colors
    bw = 0.8 / len(labels)
    titles = {"intra_similarity": "intra-modal similarity cos(T, T_k)  (lower is better)",
              "cross_modal_gap": "cross-modal gap S(I,T) - S(I,T_k)  (higher is better)"}
    for ax, metric in zip(axes, METRICS):
        x = np.arange(len(types))
        for j, lab in enumerate(labels):
            st = [result["types"][t]["models"][lab][metric] for t in types]
            means = np.array([s["mean"] for s in st])
            err = np.array([[s["mean"] - s["ci_low"] for s in st], [s["ci_high"] - s["mean"] for s in st]])
            ax.bar(x + (j - (len(labels) - 1) / 2) * bw, means, bw, yerr=err, capsize=3, label=lab,
                   color=colors[j % 10], ecolor="red")
        ax.set_xticks(x, [f"{t}\n(n={result['types'][t]['n']}, {result['types'][t].get('n_images', '?')} images)"
                          for t in types], fontsize=8)
        ax.set_title(titles[metric], fontsize=9)
        ax.axhline(0, color="black", lw=0.6)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result['ci'] * 100:g}% bootstrap CIs (red bars): {result['bootstrap']} resamples of "
                 f"{result.get('bootstrap_unit', 'image')}s", fontsize=9)
    fig.tight_layout()
    save_figure(fig, png)


def parse_model_spec(spec: str) -> Dict[str, Optional[str]]:
    """``NAME[,pretrained=TAG][,checkpoint=PATH][,label=LABEL][,quickgelu=auto|on|off]``."""
    name, *rest = [p.strip() for p in spec.split(",")]
    out = {"model": name, "pretrained": None, "checkpoint": None, "label": None, "quickgelu": "auto"}
    for item in rest:
        k, sep, v = item.partition("=")
        if not sep or k not in ("pretrained", "checkpoint", "label", "quickgelu") or not v:
            raise argparse.ArgumentTypeError(f"--model {spec!r}: bad item {item!r} (pretrained=, checkpoint=, label=, quickgelu=)")
        if k == "quickgelu" and v not in ("auto", "on", "off"):
            raise argparse.ArgumentTypeError(f"--model {spec!r}: quickgelu={v} (auto, on or off)")
        out[k] = v
    if not name:
        raise argparse.ArgumentTypeError(f"--model {spec!r}: missing model name")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("--model", dest="models", type=parse_model_spec, action="append", required=True,
                   metavar="NAME[,pretrained=TAG][,checkpoint=PATH][,label=L][,quickgelu=auto|on|off]",
                   help="a model to analyse; repeat for each (the first is the reference for differences)")
    p.add_argument("--data", required=True, help="shards with neg.json, brace pattern (e.g. 'val/{00000..00003}.tar')")
    p.add_argument("--out", required=True, help="output prefix: OUT.json and OUT.png")
    p.add_argument("--max-samples", type=at_least(0), default=0, help="use the first N samples (0 = all)")
    p.add_argument("--bootstrap", type=int, default=50000, help="bootstrap resamples")
    p.add_argument("--bootstrap-unit", choices=("image", "caption"), default="image",
                   help="what a bootstrap resample draws: images (all captions of a drawn image come along; "
                        "samples with byte-identical images are one image) or single captions")
    p.add_argument("--ci", type=float, default=0.95, help="confidence level of the intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--batch-size", type=at_least(1), default=64)
    p.add_argument("--workers", type=at_least(0), default=2)


def run(args) -> int:
    device = args.device or default_device()
    if not 0 < args.ci < 1:
        raise UserError(f"--ci must be in (0, 1), got {args.ci}")
    if args.bootstrap < 2:
        raise UserError(f"--bootstrap must be at least 2, got {args.bootstrap}")
    out = check_prefix(args.out)  # a bad --out fails now, not after the embeddings
    samples = [s for path in expand_shards(args.data) for s in read_shard(path)]
    if args.max_samples:
        samples = samples[:args.max_samples]
    if not samples:
        raise UserError(f"--data {args.data}: no samples")
    labels, infos, values = [], [], {}
    for spec in args.models:
        loaded = load_model(spec["model"], spec["pretrained"], spec["checkpoint"], device, spec["quickgelu"])
        label = spec["label"] or loaded.info["label"]
        while label in values:
            label += "'"
        scorer = ClipScorer(loaded.model, loaded.preprocess, loaded.tokenizer, device, args.batch_size, args.workers)
        values[label] = model_values(scorer, samples, label)
        labels.append(label)
        infos.append({**loaded.info, "label": label})
    clusters = image_clusters(samples) if args.bootstrap_unit == "image" else np.arange(len(samples))
    types = analyze_values(values, labels, args.bootstrap, args.ci, args.seed, clusters)
    if not types:
        raise UserError(f"--data {args.data}: no sample has a non-null negative")
    result = {"models": infos, "data": args.data, "n_samples": len(samples),
              "n_images": int(len(np.unique(image_clusters(samples)))), "bootstrap": args.bootstrap,
              "bootstrap_unit": args.bootstrap_unit, "ci": args.ci, "seed": args.seed,
              "similarity": "cosine of L2-normalised embeddings", "types": types}
    write_atomic(Path(f"{out}.json"), json_dumps(result))
    plot(result, labels, Path(f"{out}.png"))
    log.info("wrote %s.json and %s.png", out, out)
    return 0
