"""Benchmark fixtures in each benchmark's official file layout, with tiny images, and a fake scorer.

Every builder returns the metrics a scorer that follows the fixture's score table must produce:
the table gives each (image, caption) a score chosen so that the positive wins on exactly known
items, so a swapped positive/negative, a wrong index or a macro/micro mix-up changes the numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


def write_image(path: Path, size=(40, 30), color=(120, 60, 30), fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    # a second colour in the top-left quarter so crops differ from the full image
    img.paste((255 - color[0], 255 - color[1], 255 - color[2]), (0, 0, size[0] // 2, size[1] // 2))
    img.save(path, format=fmt)


class FakeScorer:
    """Scores from a table: ``text -> score`` or ``(image basename, text) -> score``; records every case."""

    def __init__(self, text_scores: Dict = None, pair_scores: Dict = None, default: float = None):
        self.text_scores, self.pair_scores, self.default = text_scores or {}, pair_scores or {}, default
        self.cases = []

    def _one(self, case, text):
        key = (os.path.basename(case.image.path), text)
        if key in self.pair_scores:
            return self.pair_scores[key]
        if text in self.text_scores:
            return self.text_scores[text]
        if self.default is not None:
            return self.default
        raise KeyError(f"fake scorer has no score for {key}")

    def score(self, cases, desc):
        self.cases += list(cases)
        return np.array([[self._one(c, t) for t in c.texts] for c in cases], dtype=np.float64)


def _scores_for(true: str, false: str, correct: bool, table: Dict) -> None:
    table[true], table[false] = (1.0, 0.0) if correct else (0.0, 1.0)


# --------------------------------------------------------------------------- ARO

VGR_SPEC = [("on", 4, 3), ("under", 1, 1), ("next to", 3, 0)]     # (relation, items, correct); "next to" is symmetric
VGA_SPEC = [(("white", "black"), 25, 20), (("red", "blue"), 5, 0)]  # second pair has < 25 items


def build_aro(root: Path, with_order: bool = True) -> Tuple[Dict, Dict]:
    base = root / "aro"
    write_image(base / "images" / "vg_1.jpg", size=(40, 30))
    table: Dict[str, float] = {}
    rel, n = [], 0
    for name, count, correct in VGR_SPEC:
        for i in range(count):
            true, false = f"the cup is {name} the table {n}", f"the table is {name} the cup {n}"
            _scores_for(true, false, i < correct, table)
            rel.append({"image_id": "1", "image_path": "vg_1.jpg", "relation_name": name, "bbox_x": 2 + i,
                        "bbox_y": 3, "bbox_w": 20, "bbox_h": 10 + i, "true_caption": true, "false_caption": false})
            n += 1
    att = []
    for (a0, a1), count, correct in VGA_SPEC:
        for i in range(count):
            true, false = f"the {a0} cat and the {a1} dog {n}", f"the {a1} cat and the {a0} dog {n}"
            _scores_for(true, false, i < correct, table)
            att.append({"image_id": "1", "image_path": "vg_1.jpg", "attributes": [a0, a1], "bbox_x": 0, "bbox_y": 0,
                        "bbox_w": 30, "bbox_h": 25, "true_caption": true, "false_caption": false})
            n += 1
    (base / "visual_genome_relation.json").write_text(json.dumps(rel))
    (base / "visual_genome_attribution.json").write_text(json.dumps(att))
    expected = {
        "vg_relation_macro": (0.75 + 1.0) / 2,            # "next to" is left out, as the authors do
        "vg_relation_micro": 4 / 8,
        "vg_attribution_macro": 20 / 25,                   # the 5-item pair is left out (< 25)
        "vg_attribution_micro": 20 / 30,
    }
    if with_order:
        from openclip_ce.evaluate.benchmarks.aro import pre_caption

        captions = {
            "coco": [["A small brown dog chases a large red ball on the green grass.",
                      "Two young men ride old bicycles down a busy city street."],
                     ["A white cat sleeps on a soft blue blanket near the warm window."]],
            "flickr30k": [["An old woman in a yellow coat walks her black dog in the park.",
                           "A tall man holds a red umbrella over a small child."]],
        }
        wins = {"coco": [True, False, True], "flickr30k": [True, True]}
        for sub, fname, img_dir in (("coco", "coco_karpathy_test.json", "val2014"),
                                    ("flickr30k", "flickr30k_test.json", "flickr30k-images")):
            entries, k = [], 0
            for j, caps in enumerate(captions[sub]):
                image = f"{img_dir}/img_{j}.jpg"
                write_image(base / sub / image, size=(24, 24), color=COLORS[j])
                entries.append({"image": image, "caption": caps, "image_id": j})
                for c in caps:
                    table[pre_caption(c)] = 1.0 if wins[sub][k] else -1.0
                    k += 1
            (base / sub / fname).write_text(json.dumps(entries))
        expected["coco_order"] = 2 / 3
        expected["flickr30k_order"] = 1.0
    return expected, table


# --------------------------------------------------------------------------- SugarCrepe

SUGARCREPE_SPLITS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")


def build_sugarcrepe(root: Path) -> Tuple[Dict, Dict]:
    base = root / "sugarcrepe"
    table, expected = {}, {}
    for j in range(3):
        write_image(base / "val2017" / f"00000000000{j}.jpg", size=(20, 16), color=COLORS[j])
    for s_idx, split in enumerate(SUGARCREPE_SPLITS):
        count, correct = s_idx + 2, s_idx + 1      # accuracies 1/2, 2/3, 3/4, ... all different
        data = {}
        for i in range(count):
            cap, neg = f"{split} caption {i}", f"{split} negative {i}"
            _scores_for(cap, neg, i < correct, table)
            data[str(i)] = {"filename": f"00000000000{i % 3}.jpg", "caption": cap, "negative_caption": neg}
        (base / f"{split}.json").write_text(json.dumps(data, indent=1))
        expected[split] = correct / count
    expected["replace"] = np.mean([expected[s] for s in SUGARCREPE_SPLITS[:3]])
    expected["swap"] = np.mean([expected[s] for s in SUGARCREPE_SPLITS[3:5]])
    expected["add"] = np.mean([expected[s] for s in SUGARCREPE_SPLITS[5:]])
    expected["avg"] = np.mean([expected[s] for s in SUGARCREPE_SPLITS])
    return expected, table


# --------------------------------------------------------------------------- VALSE

VALSE_PIECES = ("existence", "plurals", "counting-hard", "counting-small-quant", "counting-adversarial", "relations",
                "action-replacement", "actant-swap", "coreference-standard", "coreference-hard", "foil-it")


def build_valse(root: Path) -> Tuple[Dict, Dict, Dict]:
    """Per piece 4 items with caption votes 3, 2, 1, 0 (the last two fail the validation filter).

    Validated items: both right on even pieces, one right on odd pieces; unvalidated items: wrong.
    Returns (expected filtered, expected unfiltered, score table)."""
    base = root / "valse"
    table, filt, unfilt = {}, {}, {}
    for p_idx, piece in enumerate(VALSE_PIECES):
        data = {}
        right = 0
        for i, votes in enumerate((3, 2, 1, 0)):
            image_file = f"{piece}_{i}.jpg"
            # foil-it images live in a per-piece folder, the others flat in images/
            img_path = base / "images" / (piece if piece == "foil-it" else "") / image_file
            write_image(img_path, size=(16, 16), color=COLORS[i])
            cap, foil = f"{piece} caption {i}", f"{piece} foil {i}"
            ok = votes >= 2 and (p_idx % 2 == 0 or i == 0)
            right += ok
            _scores_for(cap, foil, ok, table)
            data[f"{piece}_{i}"] = {"dataset": "test", "image_file": image_file, "caption": cap, "foil": foil,
                                    "classes": "x", "classes_foil": "y",
                                    "mturk": {"foil": 3 - votes, "caption": votes, "other": 0}}
        (base / f"{piece}.json").write_text(json.dumps(data))
        filt[piece] = 1.0 if p_idx % 2 == 0 else 0.5
        unfilt[piece] = right / 4
    filt["avg"] = np.mean([filt[p] for p in VALSE_PIECES])
    filt["instrument/counting"] = np.mean([filt[p] for p in ("counting-hard", "counting-small-quant", "counting-adversarial")])
    return filt, unfilt, table


# --------------------------------------------------------------------------- VL-CheckList

# (yaml path under corpus/v1, IMG_ROOT, image sub-path, [correct flags], missing-image items)
VLC_SPEC = [
    ("Attribute/color/vg.yaml", "vg/", "VG_100K", [True, True, True, False], 1),
    ("Attribute/color/vaw.yaml", "vg/", "VG_100K_2", [False, False], 0),
    ("Object/Location/center/vg_obj.yaml", "vg/", "VG_100K", [True, True], 0),
    ("Object/Location/mid/hake.yaml", "hake/", "hake_images_20190730", [True, False, False, False], 0),
    ("Object/Size/large/swig_agent.yaml", "swig/", "", [True], 0),
    ("Relation/spatial/vg.yaml", "vg/", "VG_100K", [True, False], 0),
    ("Relation/action/swig.yaml", "swig/", "", [False], 0),
]


def build_vlchecklist(root: Path) -> Tuple[Dict, Dict]:
    base = root / "vl-checklist"
    table = {}
    for y_idx, (ypath, img_root, sub, flags, n_missing) in enumerate(VLC_SPEC):
        anno = f"data/{ypath.replace('.yaml', '.json').replace('/', '_')}"
        pairs = []
        for i, ok in enumerate(flags + [True] * n_missing):
            rel = f"{sub}/{y_idx}_{i}.jpg" if sub else f"{y_idx}_{i}.jpg"
            if i < len(flags):
                write_image(base / "images" / img_root / rel, size=(18, 14), color=COLORS[i % 6])
            pos, neg = f"pos {y_idx} {i}", f"neg {y_idx} {i}"
            _scores_for(pos, neg, ok, table)
            pairs.append([rel, {"POS": [pos, "unused alternative"], "NEG": [neg]}])
        (base / anno).parent.mkdir(parents=True, exist_ok=True)
        (base / anno).write_text(json.dumps(pairs))
        y = base / "corpus" / "v1" / ypath
        y.parent.mkdir(parents=True, exist_ok=True)
        y.write_text(f'ANNO_PATH: "{anno}"\nIMG_ROOT: "{img_root}"\nTYPE: "TUPLE_JSON"\n')
    color = np.mean([3 / 4, 0 / 2])
    location = np.mean([2 / 2, 1 / 4])
    obj = np.mean([location, 1.0])
    rel = np.mean([1 / 2, 0.0])
    expected = {"attribute/color": color, "attribute": color, "object/location": location, "object/size": 1.0,
                "object": obj, "relation/spatial": 0.5, "relation/action": 0.0, "relation": rel,
                "avg": np.mean([color, obj, rel])}
    return expected, table


# --------------------------------------------------------------------------- Winoground

# per example: s(i, c) for (i0c0, i0c1, i1c0, i1c1), and the (text, image, group) outcome
WINO_SPEC = [
    ((0.9, 0.1, 0.2, 0.8), (True, True, True)),
    ((0.9, 0.1, 0.95, 0.96), (True, False, False)),
    ((0.5, 0.6, 0.1, 0.9), (False, True, False)),
    ((0.1, 0.9, 0.9, 0.1), (False, False, False)),
    ((0.7, 0.3, 0.8, 0.85), (True, False, False)),
]


def build_winoground(root: Path) -> Tuple[Dict, Dict]:
    base = root / "winoground"
    (base / "images").mkdir(parents=True, exist_ok=True)
    pair_scores, lines = {}, []
    for n, (s, _) in enumerate(WINO_SPEC):
        c0, c1 = f"an old person kisses a young person {n}", f"a young person kisses an old person {n}"
        for k in (0, 1):
            write_image(base / "images" / f"ex_{n}_img_{k}.png", size=(20, 20), color=COLORS[(n + k) % 6], fmt="PNG")
        pair_scores[(f"ex_{n}_img_0.png", c0)], pair_scores[(f"ex_{n}_img_0.png", c1)] = s[0], s[1]
        pair_scores[(f"ex_{n}_img_1.png", c0)], pair_scores[(f"ex_{n}_img_1.png", c1)] = s[2], s[3]
        lines.append(json.dumps({"id": n, "image_0": f"ex_{n}_img_0", "image_1": f"ex_{n}_img_1", "caption_0": c0,
                                 "caption_1": c1, "tag": "Object", "secondary_tag": "", "num_main_preds": 1,
                                 "collapsed_tag": "Object" if n < 3 else "Relation"}))
    (base / "examples.jsonl").write_text("\n".join(lines) + "\n")
    outcomes = np.array([o for _, o in WINO_SPEC])
    expected = {"text": outcomes[:, 0].mean(), "image": outcomes[:, 1].mean(), "group": outcomes[:, 2].mean()}
    return expected, pair_scores


def build_winoground_parquet(src: Path, dst: Path, shards: int = 1) -> Path:
    """The Winoground fixture of ``build_winoground(src)`` in today's Hugging Face layout: parquet shards
    ``dst/winoground/data/test-0000K-of-0000N.parquet`` with the PNGs embedded, in the dataset card's
    schema (id int32, image_0/image_1 as Image structs {bytes, path}, caption_0, caption_1, tag,
    secondary_tag, num_main_preds int32, collapsed_tag). Returns the first shard."""
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("id", pa.int32()), ("image_0", image), ("image_1", image), ("caption_0", pa.string()),
                        ("caption_1", pa.string()), ("tag", pa.string()), ("secondary_tag", pa.string()),
                        ("num_main_preds", pa.int32()), ("collapsed_tag", pa.string())])
    rows = []
    for line in (src / "winoground" / "examples.jsonl").read_text().splitlines():
        e = json.loads(line)
        for k in (0, 1):
            name = f"{e[f'image_{k}']}.png"
            e[f"image_{k}"] = {"bytes": (src / "winoground" / "images" / name).read_bytes(), "path": name}
        rows.append({f.name: e[f.name] for f in schema})
    return write_parquet_shards(rows, schema, dst / "winoground" / "data", shards)[0]


def write_parquet_shards(rows: List[Dict], schema, out: Path, shards: int) -> List[Path]:
    """``rows`` split into ``shards`` Parquet files named as the Hugging Face hub names a split's shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    per = -(-len(rows) // shards)
    paths = []
    for i in range(shards):
        path = out / f"test-{i:05d}-of-{shards:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows[i * per:(i + 1) * per], schema=schema), path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- zero-shot ImageFolder


def build_imagefolder(root: Path, name: str = "toy", per_class: int = 3) -> Path:
    base = root / "zeroshot" / name
    for c_idx, cls in enumerate(("red_square", "green_circle", "blue_thing")):
        for i in range(per_class):
            write_image(base / cls / f"{i}.png", size=(24, 24), color=COLORS[c_idx], fmt="PNG")
    return base


def build_all(root: Path) -> Dict[str, Dict]:
    """Every benchmark's fixture under ``root``; returns ``{benchmark: expected summary}``."""
    return {
        "aro": build_aro(root)[0],
        "sugarcrepe": build_sugarcrepe(root)[0],
        "valse": build_valse(root)[0],
        "vl-checklist": build_vlchecklist(root)[0],
        "winoground": build_winoground(root)[0],
        "zeroshot": {"toy/acc1": None} if build_imagefolder(root) else {},
    }
