"""Fixtures for SPEC, EqBen and BiVLC in their released layouts, written by hand, with tiny synthetic images
under the names the files reference, and the metrics a scorer following the fixture's score table must give.

The expected outcome of every query / sample is written next to its scores (not computed by the code under
test), ties included, so that a swapped index, a wrong direction or a non-strict comparison changes the numbers.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from .eval_benchmarks import COLORS, write_image, write_parquet_shards


class TableScorer:
    """Scores from a function ``score(image_key, text)``; ``image_key`` is the image file's name, or for an
    image embedded in a parquet file the part after ``#`` (``row=3/negative_image``). Records every case."""

    def __init__(self, fn: Callable[[str, str], float]):
        self.fn, self.cases = fn, []

    @staticmethod
    def key(path: str) -> str:
        return path.split("#", 1)[1] if "#" in path else os.path.basename(path)

    def score(self, cases, desc):
        self.cases += list(cases)
        return np.array([[self.fn(self.key(c.image.path), t) for t in c.texts] for c in cases], dtype=np.float64)


# --------------------------------------------------------------------------- SPEC

SPEC_SUBSETS = ("absolute_size", "relative_size", "absolute_spatial", "relative_spatial", "existence", "count")
# per query: (scores of the candidates in order, label, right?) -- right when the FIRST maximum is at label
SPEC_QUERIES = [
    ([0.1, 0.9, 0.3], 1, True),
    ([0.5, 0.5, 0.1], 0, True),      # tie: the label comes first, argmax picks it
    ([0.5, 0.5, 0.1], 1, False),     # tie: the label comes second, argmax picks the first
    ([0.2, 0.1, 0.3], 0, False),
    ([0.3, 0.2, 0.1, 0.4], 3, True),
    ([0.7, 0.1], 1, False),
]
# which queries each subset/direction holds (a different mix each, so every accuracy differs)
SPEC_MIX = {
    ("absolute_size", "i2t"): [0, 1, 3], ("absolute_size", "t2i"): [0, 2],
    ("relative_size", "i2t"): [0, 1], ("relative_size", "t2i"): [3, 5],
    ("absolute_spatial", "i2t"): [4, 2, 3, 0], ("absolute_spatial", "t2i"): [1],
    ("relative_spatial", "i2t"): [2], ("relative_spatial", "t2i"): [0, 4, 1],
    ("existence", "i2t"): [5, 0], ("existence", "t2i"): [5, 5, 0],
    ("count", "i2t"): [1, 4, 0, 3, 2], ("count", "t2i"): [2, 3],
}


def build_spec(root: Path, under_data: bool = False) -> Tuple[Dict, TableScorer]:
    """``root/spec/<subset>/{image2text,text2image}.json`` + images (``spec/data/`` when ``under_data``)."""
    base = root / "spec" / ("data" if under_data else "")
    table: Dict[Tuple[str, str], float] = {}
    expected: Dict[str, float] = {}
    for subset in SPEC_SUBSETS:
        for direction, fname in (("i2t", "image2text.json"), ("t2i", "text2image.json")):
            entries, right = [], []
            for n, q in enumerate(SPEC_MIX[(subset, direction)]):
                scores, label, ok = SPEC_QUERIES[q]
                right.append(ok)
                tag = f"{subset}-{direction}-{n}"
                if direction == "i2t":
                    image = f"images/{tag}.jpg"
                    write_image(base / subset / image, size=(16, 12), color=COLORS[n % 6])
                    texts = [f"the {tag} candidate {k}" for k in range(len(scores))]
                    for t, sc in zip(texts, scores):
                        table[(os.path.basename(image), t)] = sc
                    entries.append({"query": image, "keys": texts, "label": label})
                else:
                    text = f"the {tag} query"
                    images = [f"{tag}/{tag}-{k}.png" for k in range(len(scores))]
                    for k, (im, sc) in enumerate(zip(images, scores)):
                        write_image(base / subset / im, size=(12, 12), color=COLORS[k % 6], fmt="PNG")
                        table[(os.path.basename(im), text)] = sc
                    entries.append({"query": text, "keys": images, "label": label})
            (base / subset).mkdir(parents=True, exist_ok=True)
            (base / subset / fname).write_text(json.dumps(entries, indent=1))
            expected[f"{subset}/{direction}"] = sum(right) / len(right)
    for d in ("i2t", "t2i"):
        expected[d] = sum(expected[f"{s}/{d}"] for s in SPEC_SUBSETS) / len(SPEC_SUBSETS)
    return expected, TableScorer(lambda key, text: table[(key, text)])


# --------------------------------------------------------------------------- EqBen

EQBEN_SUBSETS = ("eqbenag", "eqbenyoucook2", "eqbengebc", "eqbenkubric_loc", "eqbenkubric_attr",
                 "eqbenkubric_cnt", "eqbensd")
# per sample: (s(c0,i0), s(c0,i1), s(c1,i0), s(c1,i1)), and by hand (text, image, group):
# text = c0i0 > c1i0 and c1i1 > c0i1; image = c0i0 > c0i1 and c1i1 > c1i0
EQBEN_SAMPLES = [
    ((0.9, 0.2, 0.1, 0.8), (True, True, True)),
    ((0.9, 0.95, 0.1, 0.96), (True, False, False)),    # text: .9>.1, .96>.95; image: .9 > .95 fails
    ((0.5, 0.1, 0.6, 0.9), (False, True, False)),      # text: .5 > .6 fails; image: .5>.1, .9>.6
    ((0.1, 0.9, 0.9, 0.1), (False, False, False)),
    ((0.5, 0.3, 0.5, 0.6), (False, True, False)),      # tie c0i0 = c1i0: text fails (strict)
    ((0.7, 0.7, 0.2, 0.8), (True, False, False)),      # tie c0i0 = c0i1: image fails (strict)
]
EQBEN_MIX = {"eqbenag": [0, 1, 2], "eqbenyoucook2": [0, 3], "eqbengebc": [4, 0, 5, 1], "eqbenkubric_loc": [2],
             "eqbenkubric_attr": [0, 0, 3], "eqbenkubric_cnt": [5, 2], "eqbensd": [0, 1, 2, 3, 4, 5]}
PAIR_INDEX = {"c0i0": 0, "c0i1": 1, "c1i0": 2, "c1i1": 3}


def build_eqben(root: Path, light_jpg: str = "eqbengebc", seed: int = 0) -> Tuple[Dict, TableScorer]:
    """``root/eqben/ann_json_finegrained_random.json`` + ``root/eqben/images/`` (shuffled entries, as released).

    YouCook2 frames are written as BGR ``.npy`` arrays; the ``light_jpg`` sub-dataset's images are written
    as ``.jpg`` while the annotation names ``.png`` (the light release)."""
    base = root / "eqben"
    entries, table, expected = [], {}, {}
    cnt = 0
    for subset in EQBEN_SUBSETS:
        outs = []
        for n, q in enumerate(EQBEN_MIX[subset]):
            scores, out = EQBEN_SAMPLES[q]
            outs.append(out)
            for pair, k in PAIR_INDEX.items():
                c, i = pair[1], pair[3]
                stem = f"{subset}/video_{n}/{subset}_{cnt}_frame{i}"
                if subset == "eqbenyoucook2":
                    rel, disk = f"{stem}.npy", f"{stem}.npy"
                else:
                    rel, disk = f"{stem}.png", f"{stem}.jpg" if subset == light_jpg else f"{stem}.png"
                path = base / "images" / disk
                if not path.exists():
                    if disk.endswith(".npy"):
                        path.parent.mkdir(parents=True, exist_ok=True)
                        np.save(path, np.full((10, 14, 3), (30 * int(i), 90, 200), dtype=np.uint8))
                    else:
                        write_image(path, size=(14, 10), color=COLORS[int(i)], fmt="JPEG" if disk.endswith("jpg") else "PNG")
                caption = f"{subset} sample {cnt} caption {c}"
                table[(os.path.basename(disk), caption)] = scores[k]
                entries.append({"image": rel, "caption": caption,
                                "private_info": {"dataset": subset, "name": pair, "sample_cnt": cnt}})
            cnt += 1
        outs = np.array(outs)
        for m, j in (("text", 0), ("image", 1), ("group", 2)):
            expected[f"{subset}/{m}"] = outs[:, j].mean()
    for m in ("text", "image", "group"):
        expected[f"eqbenkubric/{m}"] = np.mean([expected[f"{s}/{m}"] for s in EQBEN_SUBSETS[3:6]])
        expected[m] = np.mean([expected[f"{s}/{m}"] for s in ("eqbenag", "eqbenyoucook2", "eqbengebc", "eqbensd")]
                              + [expected[f"eqbenkubric/{m}"]])
    random.Random(seed).shuffle(entries)
    (base).mkdir(parents=True, exist_ok=True)
    (base / "ann_json_finegrained_random.json").write_text(json.dumps(entries))
    return expected, TableScorer(lambda key, text: table[(key, text)])


# --------------------------------------------------------------------------- BiVLC

# per instance: (type, subtype, s(C0,I0), s(C1,I0), s(C0,I1), s(C1,I1)), and by hand (i2t, t2i, group):
# i2t = C0I0 > C1I0 and C1I1 > C0I1; t2i = C0I0 > C0I1 and C1I1 > C1I0
BIVLC_ROWS = [
    (("replace", "obj", 0.9, 0.2, 0.1, 0.8), (True, True, True)),
    (("replace", "att", 0.9, 0.1, 0.95, 0.96), (True, False, False)),   # t2i: .9 > .95 fails
    (("replace", "rel", 0.5, 0.6, 0.1, 0.9), (False, True, False)),     # i2t: .5 > .6 fails
    (("swap", "obj", 0.6, 0.6, 0.1, 0.9), (False, True, False)),        # tie C0I0 = C1I0: i2t fails (strict)
    (("swap", "att", 0.8, 0.1, 0.8, 0.9), (True, False, False)),        # tie C0I0 = C0I1: t2i fails (strict)
    (("add", "obj", 0.1, 0.9, 0.9, 0.1), (False, False, False)),
    (("add", "att", 0.7, 0.2, 0.3, 0.9), (True, True, True)),
]


def build_bivlc(root: Path, shards: int = 2) -> Tuple[Dict, TableScorer, List[Path]]:
    """``root/bivlc/data/test-0000K-of-0000N.parquet`` in the dataset card's schema (image / negative_image:
    Image structs {bytes, path}; caption, negative_caption, type, subtype: strings)."""
    import io

    import pyarrow as pa
    from PIL import Image

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("caption", pa.string()), ("negative_caption", pa.string()),
                        ("negative_image", image), ("type", pa.string()), ("subtype", pa.string())])

    def png(color):
        buf = io.BytesIO()
        Image.new("RGB", (12, 10), color).save(buf, format="PNG")
        return buf.getvalue()

    rows, table, outs = [], {}, []
    for n, ((kind, sub, s00, s10, s01, s11), out) in enumerate(BIVLC_ROWS):
        cap, neg = f"caption {n} of a {kind} {sub}", f"negative caption {n} of a {kind} {sub}"
        rows.append({"image": {"bytes": png(COLORS[n % 6]), "path": None}, "caption": cap, "negative_caption": neg,
                     "negative_image": {"bytes": png(COLORS[(n + 1) % 6]), "path": None}, "type": kind,
                     "subtype": sub})
        table[(0, cap)], table[(0, neg)], table[(1, cap)], table[(1, neg)] = s00, s10, s01, s11
        outs.append((kind, out))
    paths = write_parquet_shards(rows, schema, root / "bivlc" / "data", shards)
    expected = {}
    for j, m in enumerate(("i2t", "t2i", "group")):
        expected[m] = np.mean([o[j] for _, o in outs])
        for kind in ("replace", "swap", "add"):
            expected[f"{kind}/{m}"] = np.mean([o[j] for k, o in outs if k == kind])

    def fn(key, text):  # key: "row=R/image" or "row=R/negative_image"; the caption names the row
        return table[(1 if key.endswith("negative_image") else 0, text)]
    return expected, TableScorer(fn), paths
