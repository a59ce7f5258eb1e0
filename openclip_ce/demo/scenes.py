"""The demo's toy world: rendered scenes of two shapes and captions that describe how they are composed.

A scene holds two objects, each a (size, colour, shape), in one arrangement:

* ``above``   the first object above the second, apart ("a big red circle above a small blue square",
  or the same scene said the other way round, "a small blue square below a big red circle");
* ``touches`` side by side, the first on the left, touching ("... touches ...");
* ``covers``  overlapping, the first drawn on top ("... covers ...").

So the captions hold adjectives (size, colour), nouns (shapes) and, for two arrangements, a verb:
make-shards can make all four negative types (``rel`` noun swap, ``att`` adjective, ``obj`` noun,
``act`` verb).

Held out from training: one combination of two colours with two shapes in six, in either binding
(a fixed choice: if red-and-blue with circle-and-square is held out, no training picture shows a red
circle with a blue square, nor a blue circle with a red square, in any size or arrangement).
Every evaluation scene is such a combination, so the evaluation measures how known parts are
composed, not memorised scenes. It is written in SugarCrepe's released layout (one JSON per split,
``{"id": {"filename", "caption", "negative_caption"}}`` plus the images), and read back by the
real SugarCrepe reader of ``openclip-ce eval``.

Why both bindings? make-shards' hard negatives recombine words, and a swap negative of a training
picture is exactly the other binding. Had only "red circle + blue square" been held out, every
training picture of "blue circle + red square" would teach, through its swap negative, that the
held-out caption is wrong, and the evaluation would measure that instead of composition. (A first
design that held out single colour-shape pairs showed it: CE-CLIP scored 21% on swap_obj where
plain CLIP had 77%.) Holding out the whole combination keeps every evaluation caption, true or
negative, out of the training positives and out of their swap negatives. (``att``/``obj`` edits can
still make a held-out combination from a training caption; :mod:`.decontaminate` turns those
negatives into placeholders.)
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from PIL import Image, ImageDraw

from ..fileio import write_atomic

# colour words spaCy tags as adjectives in these captions (purple, orange, cyan... come out as nouns)
COLORS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 40, 40), "blue": (40, 70, 215), "green": (40, 165, 60), "yellow": (225, 200, 40),
    "brown": (125, 80, 35), "black": (20, 20, 20), "pink": (240, 130, 190),
}
SIZES: Dict[str, float] = {"big": 0.40, "small": 0.26}  # side of the shape as a share of the picture
SHAPES = ("circle", "square", "triangle", "diamond", "star")
ARRANGEMENTS = ("above", "touches", "covers")
HELD_OUT_PERCENT = 16  # of the combinations of two colours with two shapes; a function of the combination only

SPLITS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att")


@dataclass(frozen=True)
class Obj:
    size: str
    color: str
    shape: str

    def phrase(self) -> str:
        return f"{self.size} {self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    first: Obj
    arrangement: str
    second: Obj

    def held_out(self) -> bool:
        return is_held_out((self.first.color, self.first.shape), (self.second.color, self.second.shape))


def is_held_out(a: Tuple[str, str], b: Tuple[str, str]) -> bool:
    """Is this combination of two (colour, shape) objects kept out of training, in either binding?
    A fixed hash of the two colours and the two shapes."""
    key = ",".join(sorted((a[0], b[0]))) + "|" + ",".join(sorted((a[1], b[1])))
    return hashlib.blake2b(key.encode(), digest_size=4).digest()[0] * 100 // 256 < HELD_OUT_PERCENT


def caption_objects(caption: str) -> List[Tuple[Optional[str], str]]:
    """The (colour, shape) of each shape word of a caption, in order; the colour is the last colour word
    since the previous shape (None if there is none: "a small small triangle")."""
    objects, colour = [], None
    for word in caption.lower().replace(",", " ").replace(".", " ").split():
        if word in COLORS:
            colour = word
        elif word in SHAPES:
            objects.append((colour, word))
            colour = None
    return objects


def names_held_out(caption: str) -> bool:
    """Does ``caption`` describe a held-out combination (two coloured shapes, distinct colours and shapes)?"""
    objs = caption_objects(caption)
    return (len(objs) == 2 and all(c is not None for c, _ in objs)
            and objs[0][0] != objs[1][0] and objs[0][1] != objs[1][1] and is_held_out(objs[0], objs[1]))


def describe(scene: Scene, rng: Optional[random.Random] = None) -> str:
    """A caption; with ``rng`` one of several phrasings, else the canonical one (used for evaluation)."""
    a, b = scene.first.phrase(), scene.second.phrase()
    if scene.arrangement == "above":
        options = [f"a {a} above a {b}", f"a {b} below a {a}", f"there is a {a} above a {b}"]
    else:
        verb = scene.arrangement
        options = [f"a {a} {verb} a {b}", f"there is a {a} that {verb} a {b}"]
    return options[0] if rng is None else rng.choice(options)


def random_scene(rng: random.Random, held_out: bool) -> Scene:
    """A scene that is (``held_out``) or is not made of held-out parts; two different shapes and colours."""
    while True:
        s1, s2 = rng.sample(SHAPES, 2)
        c1, c2 = rng.sample(list(COLORS), 2)
        scene = Scene(Obj(rng.choice(list(SIZES)), c1, s1), rng.choice(ARRANGEMENTS), Obj(rng.choice(list(SIZES)), c2, s2))
        if scene.held_out() == held_out:
            return scene


# ----------------------------------------------------------------------------- pictures
def _draw(d: ImageDraw.ImageDraw, obj: Obj, cx: float, cy: float, side: float) -> None:
    h = side / 2
    box = (cx - h, cy - h, cx + h, cy + h)
    color = COLORS[obj.color]
    if obj.shape == "circle":
        d.ellipse(box, fill=color)
    elif obj.shape == "square":
        d.rectangle(box, fill=color)
    elif obj.shape == "triangle":
        d.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=color)
    elif obj.shape == "diamond":
        d.polygon([(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)], fill=color)
    else:  # a five-pointed star
        points = []
        for k in range(10):
            r = h if k % 2 == 0 else h * 0.45
            angle = math.pi / 2 + k * math.pi / 5
            points.append((cx + r * math.cos(angle), cy - r * math.sin(angle)))
        d.polygon(points, fill=color)


def render(scene: Scene, rng: random.Random, size: int = 64) -> bytes:
    """PNG bytes of ``scene`` with jittered positions and background, so pictures are never repeated."""
    shade = rng.randint(225, 250)
    img = Image.new("RGB", (size, size), (shade, shade, shade - rng.randint(0, 15)))
    d = ImageDraw.Draw(img)
    s1, s2 = SIZES[scene.first.size] * size, SIZES[scene.second.size] * size
    jitter = lambda: rng.uniform(-0.06, 0.06) * size  # noqa: E731
    if scene.arrangement == "above":
        x1, x2 = size / 2 + jitter(), size / 2 + jitter()
        y1, y2 = size * 0.27 + jitter() / 2, size * 0.73 + jitter() / 2
    elif scene.arrangement == "touches":
        y1 = y2 = size / 2 + jitter()
        x1 = size / 2 - s1 / 2 + jitter() / 3
        x2 = x1 + s1 / 2 + s2 / 2
    else:  # covers: the first overlaps part of the second and is drawn on top; both stay visible
        x2, y2 = size / 2 + jitter(), size / 2 + jitter()
        x1 = x2 + rng.choice((-1, 1)) * 0.6 * (s1 + s2) / 2
        y1 = y2 + rng.uniform(-0.2, 0.2) * s2
    _draw(d, scene.second, x2, y2, s2)
    _draw(d, scene.first, x1, y1, s1)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- hard negatives for evaluation
def _replace(obj: Obj, **kw) -> Obj:
    return Obj(kw.get("size", obj.size), kw.get("color", obj.color), kw.get("shape", obj.shape))


def negative(scene: Scene, split: str, rng: random.Random) -> str:
    """The SugarCrepe-style negative caption of ``split`` for ``scene`` (canonical phrasing)."""
    a, b = scene.first, scene.second
    if split == "swap_att":  # the colours trade places
        return describe(Scene(_replace(a, color=b.color), scene.arrangement, _replace(b, color=a.color)))
    if split == "swap_obj":  # the shapes trade places
        return describe(Scene(_replace(a, shape=b.shape), scene.arrangement, _replace(b, shape=a.shape)))
    which = rng.randrange(2)
    target = (a, b)[which]
    if split == "replace_att":  # a colour that is not in the picture
        color = rng.choice([c for c in COLORS if c not in (a.color, b.color)])
        new = _replace(target, color=color)
    elif split == "replace_obj":  # a shape that is not in the picture
        shape = rng.choice([s for s in SHAPES if s not in (a.shape, b.shape)])
        new = _replace(target, shape=shape)
    elif split == "replace_rel":  # another arrangement of the same two objects
        return describe(Scene(a, rng.choice([r for r in ARRANGEMENTS if r != scene.arrangement]), b))
    else:
        raise ValueError(f"unknown split {split!r}")
    return describe(Scene(new, scene.arrangement, b) if which == 0 else Scene(a, scene.arrangement, new))


# ----------------------------------------------------------------------------- writers
def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def write_shards(out_dir: Path, scenes: Iterator[Tuple[str, bytes, str]], per_shard: int) -> List[str]:
    """WebDataset shards ``00000.tar ...`` of ``(key, png, caption)``, each written atomically; no negatives."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, batch = [], []

    def flush():
        path = out_dir / f"{len(paths):05d}.tar"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for key, png, caption in batch:
                _tar_member(tar, f"{key}.png", png)
                _tar_member(tar, f"{key}.txt", caption.encode("utf-8"))
        write_atomic(path, buf.getvalue())
        paths.append(str(path))
        batch.clear()

    for item in scenes:
        batch.append(item)
        if len(batch) == per_shard:
            flush()
    if batch:
        flush()
    return paths


def training_set(out_dir: Path, n: int, seed: int, per_shard: int = 500) -> List[str]:
    rng = random.Random(f"train-{seed}")

    def items():
        for i in range(n):
            scene = random_scene(rng, held_out=False)
            yield f"t{i:07d}", render(scene, rng), describe(scene, rng)

    return write_shards(out_dir, items(), per_shard)


def evaluation_set(root: Path, n: int, seed: int) -> Dict[str, int]:
    """Held-out scenes as SugarCrepe's layout under ``root/sugarcrepe/`` and as shards under
    ``root/heldout-shards/`` (captions only, for make-shards and analyze). Returns items per split."""
    rng = random.Random(f"eval-{seed}")
    image_dir = root / "sugarcrepe" / "val2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    splits: Dict[str, Dict[str, Dict[str, str]]] = {s: {} for s in SPLITS}
    shard_items = []
    for i in range(n):
        scene = random_scene(rng, held_out=True)
        name = f"{i:06d}.png"
        png = render(scene, rng)
        write_atomic(image_dir / name, png)
        caption = describe(scene)
        shard_items.append((f"h{i:06d}", png, caption))
        for split in SPLITS:
            splits[split][str(i)] = {"filename": name, "caption": caption,
                                     "negative_caption": negative(scene, split, rng)}
    for split, items in splits.items():
        write_atomic(root / "sugarcrepe" / f"{split}.json", json.dumps(items, indent=1))
    write_shards(root / "heldout-shards", iter(shard_items), per_shard=max(1, n))
    return {s: len(v) for s, v in splits.items()}


def count_words(paths: List[str]) -> Dict[str, int]:
    """How often each word of the toy vocabulary occurs in the captions of ``paths`` (for the report)."""
    counts: Dict[str, int] = {}
    for p in paths:
        with tarfile.open(p) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".txt"):
                    for w in tar.extractfile(m).read().decode().split():
                        counts[w] = counts.get(w, 0) + 1
    return counts


def shard_pattern(paths: List[str]) -> str:
    """A brace pattern covering ``00000.tar ... NNNNN.tar`` in one folder."""
    folder = os.path.dirname(paths[0])
    return os.path.join(folder, "{00000..%05d}.tar" % (len(paths) - 1)) if len(paths) > 1 else paths[0]
