"""``openclip-ce eval``: compositional benchmarks and zero-shot retention for one open_clip model.

Every benchmark comes from the registry (:mod:`openclip_ce.evaluate.registry`): its flags, its
reader of the official released files under ``--data-root``, its protocol text. The results JSON
holds every number plus the protocol record; a Markdown table is written next to it. The protocol
of each benchmark is written down in docs/evaluation.md and in its module's docstring.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Dict, List

from ..errors import UserError
from ..fileio import check_output, write_atomic
from . import registry
from .common import BenchmarkMissing, EvalOptions, at_least, json_dumps
from .models import default_device, load_model
from .report import markdown_table
from .scorer import ClipScorer

log = logging.getLogger(__name__)

PROTOCOL_DOC = "docs/evaluation.md"


def _benchmark_list(spec: str) -> List[str]:
    try:
        return registry.expand(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _image_root(spec: str):
    key, sep, path = spec.partition("=")
    keys = registry.image_root_names()
    if not sep or key not in keys or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR with NAME in {','.join(keys)}, got {spec!r}")
    return key, path


def add_model_arguments(m) -> None:
    """``--model`` with ``--pretrained`` or ``--checkpoint``, and ``--quickgelu`` (shared with ``sweep``)."""
    m.add_argument("--model", required=True, help="open_clip model name (ViT-B-32, hf-hub:ORG/REPO, local-dir:DIR)")
    src = m.add_mutually_exclusive_group()
    src.add_argument("--pretrained", default=None, help="open_clip pretrained tag (e.g. openai) or weights file")
    src.add_argument("--checkpoint", default=None,
                     help="checkpoint written by open_clip training (logs/NAME/checkpoints/epoch_K.pt)")
    m.add_argument("--quickgelu", choices=("auto", "on", "off"), default="auto",
                   help="activation: auto = what the weights were trained with (pretrained tag's flag or the "
                        "run's params.txt); on/off force it")


def add_protocol_arguments(p: argparse.ArgumentParser) -> None:
    """Data, scoring and per-benchmark flags: everything that defines the protocol of a run."""
    d = p.add_argument_group("data")
    d.add_argument("--data-root", required=True, help="directory holding one folder per benchmark (aro/ "
                   "sugarcrepe/ ... zeroshot/) in the official layouts (see the protocol doc)")
    d.add_argument("--benchmarks", type=_benchmark_list, default=registry.ALL,
                   help=f"comma-separated subset of {','.join(registry.names())}; or presets: all (every "
                        f"registered benchmark), ce-clip (alias paper: {','.join(registry.PRESETS['ce-clip'])}, "
                        f"what CE-CLIP's paper reports)")
    d.add_argument("--image-root", type=_image_root, action="append", default=[], metavar="NAME=DIR",
                   help=f"override an image directory; NAME in {','.join(registry.image_root_names())}")
    r = p.add_argument_group("scoring")
    r.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    r.add_argument("--batch-size", type=at_least(1), default=64)
    r.add_argument("--workers", type=at_least(0), default=2, help="image-loading worker processes")
    r.add_argument("--precision", choices=("fp32", "amp", "bf16"), default="fp32")
    r.add_argument("--missing-images", choices=("error", "skip"), default=None,
                   help="an item whose image file is missing: error, or skip and count it "
                        "(default: error, except VL-CheckList whose official loader skips)")
    b = p.add_argument_group("benchmark options")
    for bench in registry.all_benchmarks():
        if bench.add_arguments is not None:
            bench.add_arguments(b)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.epilog = f"Protocol of every benchmark: {PROTOCOL_DOC}."
    add_model_arguments(p.add_argument_group("model"))
    add_protocol_arguments(p)
    p.add_argument("--out", required=True, help="results JSON; a Markdown table is written next to it (.md)")


def options_from_args(args) -> EvalOptions:
    settings = {b.name: b.options(args) for b in registry.all_benchmarks() if b.options is not None}
    return EvalOptions(missing_images=args.missing_images, image_roots=dict(args.image_root), settings=settings)


def _version(pkg: str):
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def protocol_record(args, opts: EvalOptions) -> Dict:
    record = {
        "document": PROTOCOL_DOC,
        "benchmarks_requested": list(args.benchmarks),
        "data_root": str(Path(args.data_root).expanduser().resolve()),
        "similarity": "cosine of L2-normalised image and text embeddings",
        "ties": "count as wrong (ARO Order: the original caption wins ties, as the authors' argmax)",
        "text_truncation": "open_clip tokenizer, truncated to the model's context length",
        "device": args.device, "batch_size": args.batch_size, "precision": args.precision,
        "missing_images": args.missing_images or "error (VL-CheckList: skip, as its official loader)",
        "image_roots": opts.image_roots,
        "versions": {p: _version(p) for p in ("openclip-ce", "open_clip_torch", "torch", "clip_benchmark")},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for bench in registry.all_benchmarks():
        if bench.name in args.benchmarks and bench.protocol is not None:
            record.update(bench.protocol(bench.settings(opts)))
    return record


def evaluate_all(scorer, root: Path, names: List[str], opts: EvalOptions) -> Dict:
    """Run the named benchmarks; missing ones are skipped with a note. Returns benchmarks/summary/skipped."""
    out = {"benchmarks": {}, "summary": {}, "skipped": {}}
    for name in names:
        bench = registry.get(name)
        t0 = time.time()
        try:
            res = bench.evaluate(root, scorer, opts)
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


def data_root(args) -> Path:
    root = Path(os.path.expanduser(args.data_root))
    if not root.is_dir():
        raise UserError(f"--data-root {root}: no such directory")
    return root


def run(args) -> int:
    args.device = args.device or default_device()
    root = data_root(args)
    check_output(args.out)  # a bad --out fails now, not after the evaluation
    opts = options_from_args(args)
    loaded = load_model(args.model, args.pretrained, args.checkpoint, args.device, args.quickgelu)
    scorer = ClipScorer(loaded.model, loaded.preprocess, loaded.tokenizer, args.device, args.batch_size,
                        args.workers, args.precision)
    protocol = protocol_record(args, opts)
    res = evaluate_all(scorer, root, args.benchmarks, opts)
    if not res["benchmarks"]:
        raise UserError(f"no benchmark found under {root} ("
                        + "; ".join(f"{k}: {v}" for k, v in res["skipped"].items()) + ")")
    results = {"model": loaded.info, "protocol": protocol, **res}
    out = Path(args.out)
    write_atomic(out, json_dumps(results))
    md = out.with_suffix(".md")
    write_atomic(md, markdown_table([results], [loaded.info["label"]]))
    log.info("wrote %s and %s", out, md)
    return 0
