"""Toy training shards WITH hand-written hard negatives, for the training-side tests.

Pictures of two coloured shapes, captions such as "a red square left of a blue circle", and the four
negative types written by hand into ``neg.json`` (``act`` is a placeholder: the captions have no
verb). The demo makes its data differently (negatives by ``make-shards``); these fixtures only
need to be valid, varied and fast to write.
"""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from PIL import Image, ImageDraw

from ..negatives import encode_negatives

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


class Opens:
    """Unpickling it opens (creates) ``path``: the stand-in for code run from data (a ``.pyd`` member)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")
