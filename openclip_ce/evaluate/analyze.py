"""``openclip-ce analyze``: the paper's representation analysis (CE-CLIP, Fig. 8) for several models.

On WebDataset shards with hard negatives (``KEY.jpg``, ``KEY.txt``, ``KEY.neg.json`` in the format of
:mod:`openclip_ce.negatives`; a ``null`` type is a placeholder and is skipped), for every model and
every negative type k:

* intra-modal similarity  cos(g(T), g(T_k))            (lower = caption and negative kept apart)
* cross-modal gap          cos(f(I), g(T)) - cos(f(I), g(T_k))   (higher = image prefers its caption)

averaged over the samples that have a type-k negative, with percentile bootstrap confidence
intervals (``--bootstrap`` resamples of the samples, default 50,000 as in the paper; ``--ci``
level). Paired bootstrap intervals of each model's difference to the first model (same resampled
samples for both) say whether a difference is significant. Writes OUT.json and OUT.png.
"""

from __future__ import annotations

import argparse
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from braceexpand import braceexpand
from PIL import Image

from ..errors import UserError
from ..fileio import write_atomic
from ..negatives import NEG_TYPES, NegativesFormatError, decode_negatives
from ..plotting import pyplot, save_figure
from ..shards.tario import ShardFormatError, read_samples, split_key
from .common import json_dumps
from .models import default_device, load_model
from .scorer import ClipScorer

log = logging.getLogger("openclip_ce.evaluate")

METRICS = ("intra_similarity", "cross_modal_gap")


@dataclass
class Sample:
    key: str
    image: bytes
    caption: str
    negatives: Dict[str, Optional[str]]


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
        out.append(Sample(key, img, members["txt"].decode("utf-8", errors="replace").strip(), negs))
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
            raise UserError(f"sample {s.key!r}: cannot decode image ({e})") from e
        return self.preprocess(img)


def per_sample_values(img: np.ndarray, cap: np.ndarray, neg: np.ndarray) -> Dict[str, np.ndarray]:
    """Rows are L2-normalised features of the same samples: intra-modal cos(T,T_k), gap cos(I,T)-cos(I,T_k)."""
    return {"intra_similarity": (cap * neg).sum(1), "cross_modal_gap": (img * cap).sum(1) - (img * neg).sum(1)}


def model_values(scorer, samples: Sequence[Sample], label: str) -> Dict[str, Dict[str, np.ndarray]]:
    """``{type: {metric: per-sample values}}`` over the samples having a type negative."""
    img = scorer.encode_image_dataset(_BytesImages(samples, scorer.preprocess), f"analyze {label}").numpy()
    cap = scorer.encode_texts([s.caption for s in samples], f"analyze {label} captions").numpy()
    out = {}
    for t in NEG_TYPES:
        idx = [i for i, s in enumerate(samples) if s.negatives.get(t)]
        if not idx:
            continue
        neg = scorer.encode_texts([samples[i].negatives[t] for i in idx], f"analyze {label} {t}").numpy()
        out[t] = per_sample_values(img[idx].astype(np.float64), cap[idx].astype(np.float64), neg.astype(np.float64))
    return out


def bootstrap_means(values: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator, chunk: int = 500) -> np.ndarray:
    """``(len(values), n_boot)`` means of the same resampled indices applied to every value vector."""
    n = len(values[0])
    out = np.empty((len(values), n_boot))
    vals = np.stack(values)
    for s in range(0, n_boot, chunk):
        m = min(chunk, n_boot - s)
        idx = rng.integers(0, n, size=(m, n))
        out[:, s:s + m] = vals[:, idx].mean(axis=2)
    return out


def summarize(point: float, boots: np.ndarray, ci: float) -> Dict[str, float]:
    lo, hi = np.quantile(boots, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return {"mean": float(point), "ci_low": float(lo), "ci_high": float(hi), "std_err": float(boots.std(ddof=1))}


def analyze_values(values: Dict[str, Dict[str, Dict[str, np.ndarray]]], labels: Sequence[str], n_boot: int,
                   ci: float, seed: int) -> Dict:
    """``values[label][type][metric]`` -> per type: each model's mean + CI, and paired differences to labels[0]."""
    rng = np.random.default_rng(seed)
    types = [t for t in NEG_TYPES if all(t in values[lab] for lab in labels)]
    out = {}
    for t in types:
        entry = {"n": int(len(values[labels[0]][t][METRICS[0]])), "models": {}, "difference_vs_first": {}}
        for metric in METRICS:
            vecs = [values[lab][t][metric] for lab in labels]
            boots = bootstrap_means(vecs, n_boot, rng)
            for j, lab in enumerate(labels):
                entry["models"].setdefault(lab, {})[metric] = summarize(vecs[j].mean(), boots[j], ci)
                if j:
                    d = summarize(vecs[j].mean() - vecs[0].mean(), boots[j] - boots[0], ci)
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
        ax.set_xticks(x, [f"{t}\n(n={result['types'][t]['n']})" for t in types], fontsize=8)
        ax.set_title(titles[metric], fontsize=9)
        ax.axhline(0, color="black", lw=0.6)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result['ci'] * 100:g}% bootstrap CIs ({result['bootstrap']} resamples), red bars", fontsize=9)
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
        out[k] = v
    if not name:
        raise argparse.ArgumentTypeError(f"--model {spec!r}: missing model name")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("--model", dest="models", type=parse_model_spec, action="append", required=True,
                   metavar="NAME[,pretrained=TAG][,checkpoint=PATH][,label=L]",
                   help="a model to analyse; repeat for each (the first is the reference for differences)")
    p.add_argument("--data", required=True, help="shards with neg.json, brace pattern (e.g. 'val/{00000..00003}.tar')")
    p.add_argument("--out", required=True, help="output prefix: OUT.json and OUT.png")
    p.add_argument("--max-samples", type=int, default=0, help="use the first N samples (0 = all)")
    p.add_argument("--bootstrap", type=int, default=50000, help="bootstrap resamples")
    p.add_argument("--ci", type=float, default=0.95, help="confidence level of the intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)


def run(args) -> int:
    device = args.device or default_device()
    if not 0 < args.ci < 1:
        raise UserError(f"--ci must be in (0, 1), got {args.ci}")
    if args.bootstrap < 2:
        raise UserError(f"--bootstrap must be at least 2, got {args.bootstrap}")
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
    types = analyze_values(values, labels, args.bootstrap, args.ci, args.seed)
    if not types:
        raise UserError(f"--data {args.data}: no sample has a non-null negative")
    result = {"models": infos, "data": args.data, "n_samples": len(samples), "bootstrap": args.bootstrap,
              "ci": args.ci, "seed": args.seed, "similarity": "cosine of L2-normalised embeddings", "types": types}
    out = Path(args.out)
    write_atomic(Path(f"{out}.json"), json_dumps(result))
    plot(result, labels, Path(f"{out}.png"))
    log.info("wrote %s.json and %s.png", out, out)
    return 0
