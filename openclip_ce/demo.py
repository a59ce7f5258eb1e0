"""``openclip-ce demo``: a small end-to-end CE-CLIP training that needs no download.

It writes a toy compositional data set as WebDataset shards (pictures of two coloured shapes,
captions such as "a red square left of a blue circle", with the four hard-negative types in
``neg.json``, ``act`` left as a placeholder because the captions have no verb), a tiny randomly
initialised open_clip model config, and runs open_clip's own training main with ``--loss ce_clip``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import sys
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .negatives import encode_negatives
from .tiny import write_tiny_model_dir

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle", "triangle")
RELATIONS = {"left of": (0, 1), "above": (1, 0)}  # second object is right of / below the first


def _draw(draw, shape: str, color, box) -> None:
    if shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "circle":
        draw.ellipse(box, fill=color)
    else:
        x0, y0, x1, y1 = box
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=color)


def render(c1: str, s1: str, rel: str, c2: str, s2: str, size: int = 64) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (245, 245, 245))
    d = ImageDraw.Draw(img)
    half, pad = size // 2, size // 10
    dx, _ = RELATIONS[rel]
    first = (pad, pad, half - pad, half - pad)  # top-left; the second shape is right of it or below it
    second = (half + pad, pad, size - pad, half - pad) if dx else (pad, half + pad, half - pad, size - pad)
    _draw(d, s1, COLORS[c1], first)
    _draw(d, s2, COLORS[c2], second)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_sample(rng: random.Random) -> Tuple[str, bytes, Dict[str, Optional[str]]]:
    c1, c2 = rng.sample(list(COLORS), 2)
    s1, s2 = rng.sample(SHAPES, 2)
    rel = rng.choice(list(RELATIONS))
    caption = f"a {c1} {s1} {rel} a {c2} {s2}"
    other_color = rng.choice([c for c in COLORS if c not in (c1, c2)])
    other_shape = next(s for s in SHAPES if s not in (s1, s2))
    negatives = {
        "rel": f"a {c1} {s2} {rel} a {c2} {s1}",             # nouns swapped
        "att": f"a {other_color} {s1} {rel} a {c2} {s2}",    # an adjective replaced
        "act": None,                                          # no verb: placeholder, masked by the loss
        "obj": f"a {c1} {s1} {rel} a {c2} {other_shape}",    # a noun replaced
    }
    return caption, render(c1, s1, rel, c2, s2), negatives


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_demo_shards(out_dir: str | os.PathLike, num_shards: int = 4, per_shard: int = 64, seed: int = 0) -> List[str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for s in range(num_shards):
        path = out / f"{s:05d}.tar"
        tmp = path.with_suffix(".tar.tmp")
        with tarfile.open(tmp, "w") as tar:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                caption, jpg, negs = make_sample(rng)
                _add(tar, f"{key}.jpg", jpg)
                _add(tar, f"{key}.txt", caption.encode())
                _add(tar, f"{key}.neg.json", encode_negatives(negs))
        os.replace(tmp, path)
        paths.append(str(path))
    (out / "sizes.json").write_text(json.dumps({Path(p).name: per_shard for p in paths}))
    return paths


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="openclip-ce-demo", help="working directory (default ./openclip-ce-demo)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--per-shard", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="data loader workers")
    parser.add_argument("--name", default=None, help="experiment name (default: demo-<n>, first unused)")
    parser.add_argument("extra", nargs="*", help="further open_clip_train.main flags, after `--`")


def build_train_args(work: Path, args) -> List[str]:
    model = write_tiny_model_dir(work / "model")
    shards = write_demo_shards(work / "shards", args.num_shards, args.per_shard)
    name = args.name
    if name is None:
        n = 0
        while (work / "logs" / f"demo-{n}").exists():
            n += 1
        name = f"demo-{n}"
    return [
        "--model", model,
        "--train-data", str(work / "shards" / f"{{00000..{len(shards) - 1:05d}}}.tar"),
        "--dataset-type", "webdataset",
        "--train-num-samples", str(args.num_shards * args.per_shard),
        "--batch-size", str(args.batch_size),
        "--epochs", str(args.epochs),
        "--lr", "1e-3", "--warmup", "2", "--wd", "0.1",
        "--workers", str(args.workers),
        "--device", "cpu",
        "--precision", "fp32",
        "--log-every-n-steps", "2",
        "--save-frequency", "1",
        "--logs", str(work / "logs"),
        "--name", name,
        "--seed", "0",
        "--loss", "ce_clip", "--ce-alpha", "0.2", "--ce-beta", "0.4",
        *args.extra,
    ]


def run(args) -> int:
    from . import openclip_compat
    from .train import cli_main

    work = Path(args.out).resolve()
    train_args = build_train_args(work, args)
    print("openclip-ce demo: running\n  python -m open_clip_train.main " + " ".join(train_args), file=sys.stderr)
    rc = cli_main(train_args)
    if rc == 0:
        name = train_args[train_args.index("--name") + 1]
        log_path = work / "logs" / name / "out.log"
        print(f"openclip-ce demo: done; log {log_path}, checkpoints {log_path.parent / 'checkpoints'}", file=sys.stderr)
        try:
            from .plots import plot_training_log

            png = plot_training_log(log_path, log_path.parent / "ce_clip_training.png")
            print(f"openclip-ce demo: loss terms and thresholds plotted to {png}", file=sys.stderr)
        except ImportError:
            logging.info("matplotlib not available: no plot")
    return rc
