"""``openclip-ce sweep``: evaluate WiSE-FT interpolations of a base and a fine-tuned model, pick an alpha.

For each alpha in ``--alphas`` (0 and 1 always included) the weights ``(1 - a) * base + a * ft``
(:mod:`.interpolate`, the same arithmetic as ``openclip-ce interpolate``) are evaluated with the
unified protocol: the same registry, options, protocol record and :func:`.command.evaluate_all` as
``eval``, so a row of the sweep equals ``eval --checkpoint`` of the interpolated checkpoint.

Nothing that does not change is done twice: both checkpoints are read once and kept on the device,
one model is built and its weights are replaced in place; the loop runs benchmark by benchmark and,
inside, alpha by alpha, so each benchmark's images are decoded and preprocessed and its texts
tokenized once for all alphas (:mod:`.reuse`), and the cache is dropped before the next benchmark.
Zero-shot runs first, so missing zero-shot data stops the sweep before anything else is computed.

Writes ``OUT.json`` (every alpha's full results, the trade-off, the definitions, the choice),
``OUT.md`` (the table) and ``OUT.png`` (the curve): see :mod:`.tradeoff`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import time
from pathlib import Path
from typing import Dict, List

from ..errors import UserError
from ..fileio import check_prefix, write_atomic
from ..evaluate import registry
from ..evaluate.command import add_protocol_arguments, data_root, evaluate_all, options_from_args, protocol_record
from ..evaluate.common import json_dumps
from .interpolate import add_pair_arguments, alpha_value, load_pair
from ..evaluate.models import default_device
from .reuse import ReusingScorer
from .tradeoff import ZEROSHOT, markdown, tradeoff, write_chart

log = logging.getLogger(__name__)

DEFAULT_ALPHAS = "0,0.25,0.5,0.75,1"


def alpha_list(spec: str) -> List[float]:
    """Sorted distinct alphas from ``0,0.25,...``; 0 (base) and 1 (fine-tuned) are always added."""
    values = {alpha_value(s.strip()) for s in spec.split(",") if s.strip()}
    return sorted(values | {0.0, 1.0})


def keep_share(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], e.g. 0.95, got {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], e.g. 0.95, got {text}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.epilog = ("Writes OUT.json, OUT.md and OUT.png. Definitions of 'zero-shot', 'compositional average' "
                "and the choice: docs/wise-ft.md and the JSON's 'definitions'.")
    add_pair_arguments(p.add_argument_group("models"))
    s = p.add_argument_group("sweep")
    s.add_argument("--alphas", type=alpha_list, default=alpha_list(DEFAULT_ALPHAS),
                   help="comma-separated weights of the fine-tuned model; 0 (base) and 1 (fine-tuned) are always added")
    s.add_argument("--keep-zeroshot", type=keep_share, default=0.95,
                   help="choose the alpha with the best compositional average among those keeping at least "
                        "this share of the base's zero-shot accuracy")
    s.add_argument("--image-cache-gb", type=float, default=8.0,
                   help="memory for one benchmark's preprocessed images, reused across alphas (beyond it images "
                        "are decoded again per alpha)")
    add_protocol_arguments(p)
    p.add_argument("--out", required=True, help="output prefix: writes OUT.json, OUT.md and OUT.png")


def benchmark_order(names: List[str]) -> List[str]:
    """Zero-shot first (fail fast without it), then the compositional benchmarks in registry order."""
    if ZEROSHOT not in names:
        raise UserError("--benchmarks must include zeroshot: the sweep trades compositional accuracy against it")
    rest = [n for n in names if n != ZEROSHOT]
    if not rest:
        raise UserError(f"--benchmarks needs at least one compositional benchmark besides zeroshot "
                        f"({','.join(n for n in registry.names() if n != ZEROSHOT)})")
    return [ZEROSHOT, *rest]


def model_label(name: str) -> str:
    return Path(name[len("local-dir:"):]).name if name.startswith("local-dir:") else name


def checkpoint_label(source: str) -> str:
    """``run/epoch_5`` for ``logs/run/checkpoints/epoch_5.pt``, the file's stem otherwise; tags as given."""
    p = Path(os.path.expanduser(source))
    if not p.is_file():
        return source
    return f"{p.parent.parent.name}/{p.stem}" if p.parent.name == "checkpoints" else p.stem


def interpolate_command(args, alpha: float, out_prefix: Path) -> str:
    base = ["--pretrained", args.pretrained] if args.pretrained else ["--base", args.base]
    extra = ["--quickgelu", args.quickgelu] if args.quickgelu != "auto" else []
    cmd = ["openclip-ce", "interpolate", "--model", args.model, *base, "--finetuned", args.finetuned, *extra,
           "--alpha", f"{alpha:g}", "--out", f"{out_prefix}/alpha{alpha:g}.pt"]
    return " ".join(shlex.quote(c) for c in cmd)


def run(args) -> int:
    t0 = time.time()
    args.device = args.device or default_device()
    names = benchmark_order(list(args.benchmarks))
    root = data_root(args)
    opts = options_from_args(args)
    out = check_prefix(os.path.expanduser(args.out))  # a bad --out fails now, not after the sweep
    alphas: List[float] = args.alphas
    pair = load_pair(args.model, args.pretrained, args.base, args.finetuned, args.quickgelu).to(args.device)
    model = pair.template.model.to(args.device).eval()
    scorer = ReusingScorer(model, pair.template.preprocess, pair.template.tokenizer, args.device, args.batch_size,
                           args.workers, args.precision, cache_bytes=int(args.image_cache_gb * 2 ** 30))
    protocol = protocol_record(args, opts)
    per_alpha: Dict[float, Dict] = {a: {"benchmarks": {}, "summary": {}, "skipped": {}} for a in alphas}
    reuse: Dict[str, Dict[str, int]] = {}
    for b_idx, name in enumerate(names):
        before = scorer.stats()
        for a_idx, alpha in enumerate(alphas):
            log.info("sweep: %s (%d/%d), alpha=%g (%d/%d)", name, b_idx + 1, len(names), alpha, a_idx + 1, len(alphas))
            model.load_state_dict(pair.weights(alpha), strict=True)
            res = evaluate_all(scorer, root, [name], opts)
            if name in res["skipped"]:  # the data is missing: the same for every alpha
                for a in alphas:
                    per_alpha[a]["skipped"][name] = res["skipped"][name]
                break
            for key in ("benchmarks", "summary"):
                per_alpha[alpha][key].update(res[key])
        scorer.clear()
        after = scorer.stats()
        reuse[name] = {k: after[k] - before[k] for k in after}
        if name == ZEROSHOT and name in per_alpha[0.0]["skipped"]:
            raise UserError(f"zero-shot data missing under {root}: {per_alpha[0.0]['skipped'][name]} "
                            "(the sweep needs a zero-shot dataset: --zeroshot-datasets)")
    if not any(n != ZEROSHOT for n in per_alpha[0.0]["benchmarks"]):
        raise UserError(f"no compositional benchmark found under {root} ("
                        + "; ".join(f"{k}: {v}" for k, v in per_alpha[0.0]["skipped"].items()) + ")")
    trade = tradeoff([(a, per_alpha[a]["summary"]) for a in alphas], args.keep_zeroshot)
    chosen = trade["chosen_alpha"]
    title = (f"WiSE-FT interpolation of {model_label(args.model)}: "
             f"base {checkpoint_label(args.pretrained or args.base)} -> fine-tuned {checkpoint_label(args.finetuned)}")
    command = interpolate_command(args, chosen, out)
    results = {
        "kind": "openclip-ce sweep",
        "model": pair.info(),
        "protocol": protocol,
        "keep_zeroshot": args.keep_zeroshot,
        "chosen_alpha": chosen,
        "chosen_command": command,
        "tradeoff": trade,
        "alphas": [{"alpha": a, **per_alpha[a]} for a in alphas],
        "reuse": reuse,
        "reuse_note": ("per benchmark, over all alphas: images decoded / reused from the cache and texts tokenized / "
                       "reused; zero-shot images are decoded by the datasets' own loaders, once per alpha, and not counted"),
        "seconds": round(time.time() - t0, 2),
    }
    write_atomic(Path(f"{out}.json"), json_dumps(results))
    write_atomic(Path(f"{out}.md"), markdown(trade, title, command))
    write_chart(trade, title, Path(f"{out}.png"))
    best = next(r for r in trade["points"] if r["chosen"])
    log.info("chosen alpha=%g: compositional average %.4f, zero-shot %.4f (%.1f%% of the base's); wrote %s.json, "
             "%s.md and %s.png", chosen, best["compositional_average"], best["zeroshot"],
             100 * (best["zeroshot_share_of_base"] or 0), out, out, out)
    return 0
