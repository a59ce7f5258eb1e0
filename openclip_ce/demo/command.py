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

from ..evaluate.models import load_model
from ..fileio import write_json_atomic
from ..negatives import encode_negatives
from ..testing.tiny_clip import write_tiny_model_dir

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle", "triangle")
RELATIONS = {"left of": (0, 1), "above": (1, 0)}  # second object is right of / below the first

# A small model that can see the toy pictures (64 px, 8 px patches); still trains in about a minute on 2 CPU cores.
DEMO_MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
}


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


def toy_accuracy(model, preprocess, tokenizer, n: int = 256, seed: int = 12345) -> Dict[str, float]:
    """Held-out pairwise accuracy: how often S(I, caption) > S(I, negative), per negative type."""
    import torch
    from PIL import Image

    rng = random.Random(seed)
    samples = [make_sample(rng) for _ in range(n)]
    model.eval()
    with torch.no_grad():
        images = torch.stack([preprocess(Image.open(io.BytesIO(jpg))) for _, jpg, _ in samples])
        img = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        pos = torch.nn.functional.normalize(model.encode_text(tokenizer([c for c, _, _ in samples])), dim=-1)
        s_pos = (img * pos).sum(-1)
        out = {}
        for t in ("rel", "att", "obj"):
            neg = torch.nn.functional.normalize(model.encode_text(tokenizer([negs[t] for _, _, negs in samples])), dim=-1)
            out[t] = float(((img * neg).sum(-1) < s_pos).float().mean())
    return out


def _load_trained(model_name: str, checkpoint: Path):
    loaded = load_model(model_name, checkpoint=str(checkpoint))
    return loaded.model, loaded.preprocess, loaded.tokenizer


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="openclip-ce-demo", help="working directory (default ./openclip-ce-demo)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--per-shard", type=int, default=128)
    parser.add_argument("--compare-clip", action="store_true",
                        help="also train plain CLIP (--loss clip) on the same shards and compare held-out accuracy")
    parser.add_argument("--workers", type=int, default=1, help="data loader workers")
    parser.add_argument("--name", default=None, help="experiment name (default: demo-<n>, first unused)")
    parser.add_argument("extra", nargs="*", help="further open_clip_train.main flags, after `--`")


def build_train_args(work: Path, args) -> List[str]:
    model = write_tiny_model_dir(work / "model", DEMO_MODEL_CFG)
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


def _report(work: Path, model_name: str, runs: Dict[str, Path]) -> Dict[str, Dict[str, float]]:
    """Held-out toy accuracy of the random init and of each run's last checkpoint; printed and saved."""
    import open_clip
    import torch

    torch.manual_seed(0)  # open_clip's main seeds 0 before building the model: the same initial weights
    model, _, preprocess = open_clip.create_model_and_transforms(model_name)
    table = {"random init": toy_accuracy(model, preprocess, open_clip.get_tokenizer(model_name))}
    for label, ckpt in runs.items():
        table[label] = toy_accuracy(*_load_trained(model_name, ckpt))
    lines = ["held-out pairwise accuracy, S(image, caption) > S(image, negative), 256 new toy pictures:",
             f"  {'model':<26} {'rel (swap)':>11} {'att (colour)':>13} {'obj (shape)':>12}"]
    lines += [f"  {k:<26} {v['rel']:>11.3f} {v['att']:>13.3f} {v['obj']:>12.3f}" for k, v in table.items()]
    print("\n".join(lines), file=sys.stderr)
    write_json_atomic(work / "toy_accuracy.json", table, indent=2)
    return table


def run(args) -> int:
    from ..train import cli_main

    work = Path(args.out).resolve()
    train_args = build_train_args(work, args)
    name = train_args[train_args.index("--name") + 1]
    model_name = train_args[train_args.index("--model") + 1]
    print("openclip-ce demo: running\n  python -m open_clip_train.main " + " ".join(train_args), file=sys.stderr)
    rc = cli_main(train_args)
    if rc != 0:
        return rc
    log_path = work / "logs" / name / "out.log"
    runs = {"CE-CLIP (--loss ce_clip)": log_path.parent / "checkpoints" / f"epoch_{args.epochs}.pt"}
    if args.compare_clip:
        clip_args = list(train_args)
        clip_args[clip_args.index("--name") + 1] = f"{name}-clip"
        clip_args[clip_args.index("--loss") + 1] = "clip"
        clip_args = [a for a in clip_args if a not in ("--ce-alpha", "--ce-beta", "0.2", "0.4")]
        rc = cli_main(clip_args)
        if rc != 0:
            return rc
        runs["CLIP (--loss clip)"] = work / "logs" / f"{name}-clip" / "checkpoints" / f"epoch_{args.epochs}.pt"
    print(f"openclip-ce demo: done; log {log_path}, checkpoints {log_path.parent / 'checkpoints'}", file=sys.stderr)
    from ..training.plots import plot_training_log

    png = plot_training_log(log_path, log_path.parent / "ce_clip_training.png")
    print(f"openclip-ce demo: loss terms and thresholds plotted to {png}", file=sys.stderr)
    _report(work, model_name, runs)
    # open_clip's setup_logging set every logger to INFO; keep torch's exit-time compile statistics quiet
    for logger_name, logger in list(logging.root.manager.loggerDict.items()):
        if logger_name.startswith("torch.") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.WARNING)
    return 0
