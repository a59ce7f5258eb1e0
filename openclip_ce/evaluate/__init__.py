"""``openclip-ce eval``: compositional benchmarks and zero-shot retention for one open_clip model.

One module per benchmark (:mod:`.aro`, :mod:`.sugarcrepe`, :mod:`.valse`, :mod:`.vlchecklist`,
:mod:`.winoground`, :mod:`.zeroshot`), each reading the benchmark's official released files under
``--data-root`` and exposing ``evaluate(root, scorer, opts) -> {"summary": {...}, ...details}``.
The protocol of each is written down in docs/EVAL_PROTOCOL.md and in the module docstrings.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

log = logging.getLogger("openclip_ce.evaluate")

BENCHMARKS = {
    "aro": "openclip_ce.evaluate.aro",
    "sugarcrepe": "openclip_ce.evaluate.sugarcrepe",
    "valse": "openclip_ce.evaluate.valse",
    "vl-checklist": "openclip_ce.evaluate.vlchecklist",
    "winoground": "openclip_ce.evaluate.winoground",
    "zeroshot": "openclip_ce.evaluate.zeroshot",
}
IMAGE_ROOT_KEYS = ("aro-vg", "aro-coco", "aro-flickr30k", "sugarcrepe", "valse", "vl-checklist", "winoground")
PROTOCOL_DOC = "docs/EVAL_PROTOCOL.md"


def _benchmark_list(spec: str) -> List[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown benchmark(s) {unknown}; choose from {','.join(BENCHMARKS)}")
    return names


def _image_root(spec: str):
    key, sep, path = spec.partition("=")
    if not sep or key not in IMAGE_ROOT_KEYS or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR with NAME in {','.join(IMAGE_ROOT_KEYS)}, got {spec!r}")
    return key, path


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.epilog = f"Protocol of every benchmark: {PROTOCOL_DOC}."
    m = p.add_argument_group("model")
    m.add_argument("--model", required=True,
                   help="open_clip model name (ViT-B-32, hf-hub:ORG/REPO, local-dir:DIR)")
    src = m.add_mutually_exclusive_group()
    src.add_argument("--pretrained", default=None, help="open_clip pretrained tag (e.g. openai) or weights file")
    src.add_argument("--checkpoint", default=None,
                     help="checkpoint written by open_clip training (logs/NAME/checkpoints/epoch_K.pt)")
    m.add_argument("--quickgelu", choices=("auto", "on", "off"), default="auto",
                   help="activation: auto = what the weights were trained with (pretrained tag's flag or the "
                        "run's params.txt); on/off force it")
    d = p.add_argument_group("data and output")
    d.add_argument("--data-root", required=True, help="directory holding aro/ sugarcrepe/ valse/ vl-checklist/ "
                   "winoground/ zeroshot/ in the official layouts (see the protocol doc)")
    d.add_argument("--benchmarks", type=_benchmark_list, default=list(BENCHMARKS),
                   help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)")
    d.add_argument("--out", required=True, help="results JSON; a Markdown table is written next to it (.md)")
    d.add_argument("--image-root", type=_image_root, action="append", default=[], metavar="NAME=DIR",
                   help=f"override an image directory; NAME in {','.join(IMAGE_ROOT_KEYS)}")
    r = p.add_argument_group("scoring")
    r.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--workers", type=int, default=2, help="image-loading worker processes")
    r.add_argument("--precision", choices=("fp32", "amp", "bf16"), default="fp32")
    r.add_argument("--missing-images", choices=("error", "skip"), default=None,
                   help="an item whose image file is missing: error, or skip and count it "
                        "(default: error, except VL-CheckList whose official loader skips)")
    b = p.add_argument_group("benchmark options")
    b.add_argument("--seed", type=int, default=0, help="seed of ARO's random Order perturbations")
    b.add_argument("--spacy-model", default="en_core_web_sm", help="spaCy model for ARO Order POS tags")
    b.add_argument("--valse-no-filter", action="store_true",
                   help="VALSE: keep items annotators did not validate (default: only mturk.caption >= 2)")
    b.add_argument("--vlc-max-per-corpus", type=int, default=0,
                   help="VL-CheckList: first N pairs per corpus yaml (0 = all; official sample config = 1000)")
    b.add_argument("--zeroshot-datasets", default="imagenet1k,cifar10,cifar100",
                   help="comma-separated clip_benchmark dataset names or folder:NAME, under DATA_ROOT/zeroshot/")
    b.add_argument("--zeroshot-backend", choices=("auto", "clip_benchmark", "builtin"), default="auto")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def options_from_args(args):
    from .common import EvalOptions

    return EvalOptions(
        missing_images=args.missing_images, seed=args.seed, spacy_model=args.spacy_model,
        valse_filter=not args.valse_no_filter, vlc_max_per_corpus=args.vlc_max_per_corpus,
        zeroshot_datasets=tuple(s.strip() for s in args.zeroshot_datasets.split(",") if s.strip()),
        zeroshot_backend=args.zeroshot_backend, image_roots=dict(args.image_root),
    )


def protocol_record(args, opts) -> Dict:
    from importlib.metadata import PackageNotFoundError, version

    def _v(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    return {
        "document": PROTOCOL_DOC,
        "benchmarks_requested": list(args.benchmarks),
        "data_root": str(Path(args.data_root).expanduser().resolve()),
        "similarity": "cosine of L2-normalised image and text embeddings",
        "ties": "count as wrong (ARO Order: the original caption wins ties, as the authors' argmax)",
        "text_truncation": "open_clip tokenizer, truncated to the model's context length",
        "device": args.device, "batch_size": args.batch_size, "precision": args.precision,
        "missing_images": args.missing_images or "error (VL-CheckList: skip, as its official loader)",
        "seed": opts.seed, "spacy_model": opts.spacy_model,
        "aro_vg_relation_macro": "mean over relations not in the authors' symmetric list",
        "aro_vg_attribution_macro": "mean over attribute pairs with >= 25 items",
        "valse_filter": "mturk.caption >= 2" if opts.valse_filter else "none (all items)",
        "vl_checklist_max_per_corpus": opts.vlc_max_per_corpus or None,
        "vl_checklist_aggregation": "macro: corpus -> leaf -> sub-category -> category -> avg",
        "zeroshot_datasets": list(opts.zeroshot_datasets), "zeroshot_backend": opts.zeroshot_backend,
        "image_roots": opts.image_roots,
        "versions": {p: _v(p) for p in ("openclip-ce", "open_clip_torch", "torch", "clip_benchmark")},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def evaluate_all(scorer, root: Path, names: List[str], opts) -> Dict:
    """Run the named benchmarks; missing ones are skipped with a note. Returns benchmarks/summary/skipped."""
    from .common import BenchmarkMissing

    out = {"benchmarks": {}, "summary": {}, "skipped": {}}
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        t0 = time.time()
        try:
            res = module.evaluate(root, scorer, opts)
        except BenchmarkMissing as e:
            log.warning("%s: skipped: %s", name, e)
            out["skipped"][name] = str(e)
            continue
        res["seconds"] = round(time.time() - t0, 2)
        out["benchmarks"][name] = res
        for k, v in res["summary"].items():
            out["summary"][f"{name}/{k}"] = v
        log.info("%s: %s", name, ", ".join(f"{k}={v:.4f}" for k, v in res["summary"].items()))
    return out


def _setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("openclip_ce").setLevel(level)


def run(args) -> int:
    from ..fileio import write_atomic
    from .common import BenchmarkDataError, json_dumps
    from .model import ModelLoadError, load_model
    from .scorer import ClipScorer

    _setup_logging(args.log_level)
    args.device = args.device or _default_device()
    root = Path(os.path.expanduser(args.data_root))
    if not root.is_dir():
        log.error("--data-root %s: no such directory", root)
        return 2
    opts = options_from_args(args)
    try:
        loaded = load_model(args.model, args.pretrained, args.checkpoint, args.device, args.quickgelu)
    except ModelLoadError as e:
        log.error("%s", e)
        return 2
    scorer = ClipScorer(loaded.model, loaded.preprocess, loaded.tokenizer, args.device, args.batch_size,
                        args.workers, args.precision)
    protocol = protocol_record(args, opts)
    try:
        res = evaluate_all(scorer, root, args.benchmarks, opts)
    except BenchmarkDataError as e:
        log.error("%s", e)
        return 2
    if not res["benchmarks"]:
        log.error("no benchmark found under %s (%s)", root, "; ".join(f"{k}: {v}" for k, v in res["skipped"].items()))
        return 2
    results = {"model": loaded.info, "protocol": protocol, **res}
    from openclip_ce.compare import markdown_table

    out = Path(args.out)
    write_atomic(out, json_dumps(results))
    md = out.with_suffix(".md")
    write_atomic(md, markdown_table([results], [loaded.info["label"]]))
    log.info("wrote %s and %s", out, md)
    return 0
