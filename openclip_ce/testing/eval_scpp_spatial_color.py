"""Hand-written fixtures of SugarCrepe++, What'sUp, ColorSwap and MMVP-VLM in their released files' schema.

Each builder writes a few entries of its own in the official file names, field names and nesting,
with synthetic images under the names the entries reference, and returns the expected summary worked
out by hand (literal fractions, not recomputed with the reader's formulas) and a score table for a
fake scorer. Ties are placed where the authors' code decides strictness.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from .eval_benchmarks import COLORS, FakeScorer, write_image


class TextPairFakeScorer(FakeScorer):
    """FakeScorer that also answers ``score_texts`` from ``{(a, b): score}`` (either order; a text with itself: 1)."""

    def __init__(self, text_pairs: Dict = None, **kw):
        super().__init__(**kw)
        self.text_pairs = text_pairs or {}
        self.pairs_asked = []

    def score_texts(self, pairs, desc):
        self.pairs_asked += list(pairs)
        out = []
        for a, b in pairs:
            if a == b:
                out.append(1.0)
            else:
                out.append(self.text_pairs[(a, b)] if (a, b) in self.text_pairs else self.text_pairs[(b, a)])
        return np.array(out, dtype=np.float64)


# --------------------------------------------------------------------------- SugarCrepe++

SCPP_SPLITS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att")
# item kinds: s(I,P1), s(I,P2), s(I,N) and s(P1,P2), s(P1,N), s(P2,N); then (ITT right, TOT right) by hand
SCPP_KINDS = {
    "A": ((0.9, 0.8, 0.1), (0.9, 0.5, 0.6), (True, True)),
    "B": ((0.9, 0.1, 0.5), (0.7, 0.8, 0.1), (False, False)),   # P2 below N; P1 closer to N than to P2
    "C": ((0.5, 0.7, 0.5), (0.6, 0.6, 0.1), (False, False)),   # ties: s(I,P1) = s(I,N); s(P1,P2) = s(P1,N)
    "D": ((0.6, 0.7, 0.2), (0.5, 0.1, 0.5), (True, False)),    # tie s(P1,P2) = s(P2,N) is a miss
    "E": ((0.1, 0.2, 0.3), (0.9, 0.2, 0.3), (False, True)),
    "F": (None, None, (False, False)),                          # negative identical to P1 (as in a released item)
}
SCPP_LAYOUT = {"replace_obj": "AAB", "replace_att": "ACDE", "replace_rel": "DDE", "swap_obj": "AF", "swap_att": "BEEAD"}
# by hand from the layout: ITT right / TOT right per split
SCPP_EXPECTED = {
    "replace_obj": (2 / 3, 2 / 3), "replace_att": (2 / 4, 2 / 4), "replace_rel": (2 / 3, 1 / 3),
    "swap_obj": (1 / 2, 1 / 2), "swap_att": (2 / 5, 3 / 5),
}


def build_scpp(root: Path, image_dir: Path = None) -> Tuple[Dict, Dict, Dict]:
    """``sugarcrepe-pp/<split>.json`` (a JSON list, as the released files) + ``val2017/`` images.

    Returns (expected summary, image-text score table, text-pair score table)."""
    base = root / "sugarcrepe-pp"
    image_dir = image_dir or base / "val2017"
    for j in range(3):
        write_image(image_dir / f"00000000{j:04d}.jpg", size=(20, 16), color=COLORS[j])
    table, pairs = {}, {}
    for split in SCPP_SPLITS:
        items = []
        for i, kind in enumerate(SCPP_LAYOUT[split]):
            p1, p2, n = f"{split} {i}: a dog chases a cat", f"{split} {i}: a cat is chased by a dog", f"{split} {i}: a cat chases a dog"
            img, txt, _ = SCPP_KINDS[kind]
            if kind == "F":
                n = p1
                table[p1], table[p2] = 0.7, 0.9
                pairs[(p1, p2)] = 0.8
            else:
                table[p1], table[p2], table[n] = img
                pairs[(p1, p2)], pairs[(p1, n)], pairs[(p2, n)] = txt
            items.append({"id": i, "filename": f"00000000{i % 3:04d}.jpg", "caption": p1, "caption2": p2,
                          "negative_caption": n})
        base.mkdir(parents=True, exist_ok=True)
        (base / f"{split}.json").write_text(json.dumps(items, indent=1))
    expected = {}
    for split, (itt, tot) in SCPP_EXPECTED.items():
        expected[f"{split}/itt"], expected[f"{split}/tot"] = itt, tot
    expected["itt"] = (2 / 3 + 2 / 4 + 2 / 3 + 1 / 2 + 2 / 5) / 5
    expected["tot"] = (2 / 3 + 2 / 4 + 1 / 3 + 1 / 2 + 3 / 5) / 5
    return expected, table, pairs


# --------------------------------------------------------------------------- What'sUp

# Controlled-A: two object pairs x four prepositions; (file name, options with the correct one first, outcome)
# outcome: "right" (correct scores highest), "wrong" (a wrong option scores highest), "tie" (correct ties a wrong one)
_A_CAPS = {"on": "A {0} on a {1}", "under": "A {0} under a {1}", "left_of": "A {0} to the left of a {1}",
           "right_of": "A {0} to the right of a {1}"}
_B_CAPS = {"in-front_of": "A {0} in front of a {1}", "behind": "A {0} behind a {1}",
           "left_of": "A {0} to the left of a {1}", "right_of": "A {0} to the right of a {1}"}
WHATSUP_A = [("mug", "table", {"on": "right", "under": "right", "left_of": "right", "right_of": "right"}),
             ("beer-bottle", "armchair", {"on": "right", "under": "tie", "left_of": "right", "right_of": "wrong"})]
WHATSUP_B = [("cube", "sphere", {"in-front_of": "right", "behind": "right", "left_of": "wrong", "right_of": "right"})]
# COCO/GQA-spatial: [image_id, correct, wrong] with the outcome
WHATSUP_QA = {
    "coco_qa_one_obj": [(139, "A photo of a dog on the left", "A photo of a dog on the right", "right"),
                        (285, "A photo of a bear on the top", "A photo of a bear on the bottom", "wrong"),
                        (632, "A photo of a bed on the right", "A photo of a bed on the left", "tie")],
    "coco_qa_two_obj": [(724, "A cup to the left of a plate", "A cup to the right of a plate", "right"),
                        (776, "A cat above a sofa", "A cat below a sofa", "wrong")],
    "vg_qa_one_obj": [(2354786, "A photo of a tree on the left", "A photo of a tree on the right", "right"),
                      (2368312, "A photo of a car on the bottom", "A photo of a car on the top", "right")],
    "vg_qa_two_obj": [(2400001, "A lamp to the right of a bed", "A lamp to the left of a bed", "wrong"),
                      (2400002, "A man in front of a bus", "A man behind a bus", "wrong"),
                      (2400003, "A boy behind a fence", "A boy in front of a fence", "tie"),
                      (2400004, "A hat on top of a head", "A hat below a head", "wrong")],
}
# by hand: A 7/8 right (the tie counts), pairs 3 of 4, sets 1 of 2; B 3/4, pairs 1 of 2, sets 0 of 1
WHATSUP_EXPECTED = {
    "controlled_a": 7 / 8, "controlled_a/pair": 3 / 4, "controlled_a/set": 1 / 2,
    "controlled_b": 3 / 4, "controlled_b/pair": 1 / 2, "controlled_b/set": 0.0,
    "coco_spatial_one": 2 / 3, "coco_spatial_two": 1 / 2, "gqa_spatial_one": 1.0, "gqa_spatial_two": 1 / 4,
    "controlled": (7 / 8 + 3 / 4) / 2, "coco_spatial": (2 / 3 + 1 / 2) / 2, "gqa_spatial": (1.0 + 1 / 4) / 2,
    "avg": (7 / 8 + 3 / 4 + 2 / 3 + 1 / 2 + 1.0 + 1 / 4) / 6,
}


def _option_scores(name: str, options: List[str], outcome: str, table: Dict) -> None:
    for k, c in enumerate(options):
        table[(name, c)] = 0.0
    table[(name, options[0])] = 1.0
    if outcome == "wrong":
        table[(name, options[-1])] = 2.0
    elif outcome == "tie":
        table[(name, options[1])] = 1.0


def build_whatsup(root: Path, coco_dir: Path = None) -> Tuple[Dict, Dict]:
    base = root / "whatsup"
    table: Dict = {}
    for kind, spec, caps, folder, fname in (("A", WHATSUP_A, _A_CAPS, "controlled_images", "controlled_images_dataset"),
                                             ("B", WHATSUP_B, _B_CAPS, "controlled_clevr", "controlled_clevr_dataset")):
        entries = []
        for s_idx, (o1, o2, outcomes) in enumerate(spec):
            for p_idx, (prep, outcome) in enumerate(outcomes.items()):
                name = f"{o1}_{prep}_{o2}.jpeg"
                write_image(base / folder / name, size=(24, 18), color=COLORS[(s_idx + p_idx) % 6], fmt="JPEG")
                correct = caps[prep].format(o1.replace("-", " "), o2)
                options = [correct] + [caps[q].format(o1.replace("-", " "), o2) for q in caps if q != prep]
                _option_scores(name, options, outcome, table)
                entries.append({"image_path": f"data/{folder}/{name}", "caption_options": options})
        (base / f"{fname}.json").write_text(json.dumps(entries, indent=1))
    coco_dir = coco_dir or base / "val2017"
    for stem, items in WHATSUP_QA.items():
        rows = []
        for image_id, correct, wrong, outcome in items:
            name = f"{image_id:012d}.jpg" if stem.startswith("coco") else f"{image_id}.jpg"
            write_image((coco_dir if stem.startswith("coco") else base / "vg_images") / name, size=(20, 20),
                        color=COLORS[image_id % 6])
            _option_scores(name, [correct, wrong], outcome, table)
            rows.append([image_id, correct, wrong])
        (base / f"{stem}.json").write_text(json.dumps(rows))
    return dict(WHATSUP_EXPECTED), table


# --------------------------------------------------------------------------- ColorSwap

# s(c, i) as (c1i1, c2i1, c1i2, c2i2) and (text, image, group) by hand
COLORSWAP_SPEC = [
    ((0.9, 0.1, 0.2, 0.8), (True, True, True)),
    ((0.9, 0.1, 0.95, 0.96), (True, False, False)),    # c1 prefers i2: image score fails
    ((0.5, 0.6, 0.1, 0.9), (False, True, False)),     # i1 prefers c2: text score fails
    ((0.5, 0.5, 0.6, 0.9), (False, False, False)),    # tie s(c1,i1) = s(c2,i1): text score fails (strict)
    ((0.7, 0.3, 0.7, 0.8), (True, False, False)),     # tie s(c1,i1) = s(c1,i2): image score fails (strict)
]
COLORSWAP_IDS = [3, 7, 12, 40, 41]


def build_colorswap(root: Path) -> Tuple[Dict, Dict]:
    """``colorswap/data/test.json`` + ``data/images/img_<id>_<k>.png`` (the GitHub release), and a
    ``train.json`` that must not be evaluated."""
    data = root / "colorswap" / "data"
    pair_scores, rows = {}, []
    for n, (ex_id, (s, _)) in enumerate(zip(COLORSWAP_IDS, COLORSWAP_SPEC)):
        c1, c2 = f"a red cup next to a blue plate {n}", f"a blue cup next to a red plate {n}"
        for k in (1, 2):
            write_image(data / "images" / f"img_{ex_id}_{k}.png", size=(20, 20), color=COLORS[(n + k) % 6], fmt="PNG")
        pair_scores[(f"img_{ex_id}_1.png", c1)], pair_scores[(f"img_{ex_id}_1.png", c2)] = s[0], s[1]
        pair_scores[(f"img_{ex_id}_2.png", c1)], pair_scores[(f"img_{ex_id}_2.png", c2)] = s[2], s[3]
        rows.append({"id": ex_id, "caption_1": c1, "caption_2": c2, "image_1": f"images/img_{ex_id}_1.png",
                     "image_2": f"images/img_{ex_id}_2.png", "image_source": "midjourney" if n < 3 else "dalle3",
                     "caption_source": "human"})
    (data / "test.json").write_text(json.dumps(rows, indent=1))
    (data / "train.json").write_text(json.dumps([{**rows[0], "id": 999, "image_1": "images/absent_1.png"}]))
    expected = {"text": 3 / 5, "image": 2 / 5, "group": 1 / 5}
    return expected, pair_scores


def build_colorswap_parquet(src: Path, dst: Path) -> Path:
    """The fixture of ``build_colorswap(src)`` as the Hugging Face dataset: ``dst/colorswap/data/test-00000-of-00001.parquet``
    with the PNGs embedded (id int32, image_1/image_2 image structs {bytes, path}, caption_1, caption_2,
    image_source, caption_source)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("id", pa.int32()), ("image_1", image), ("image_2", image), ("caption_1", pa.string()),
                        ("caption_2", pa.string()), ("image_source", pa.string()), ("caption_source", pa.string())])
    rows = []
    for e in json.loads((src / "colorswap" / "data" / "test.json").read_text()):
        for k in (1, 2):
            rel = e[f"image_{k}"]
            e[f"image_{k}"] = {"bytes": (src / "colorswap" / "data" / rel).read_bytes(), "path": Path(rel).name}
        rows.append({f.name: e[f.name] for f in schema})
    out = dst / "colorswap" / "data"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


# --------------------------------------------------------------------------- MMVP-VLM

# per pair: s(i1,t1), s(i2,t1), s(i1,t2), s(i2,t2) and whether the pair is right (by hand, Question IDs odd/even)
_MMVP_RIGHT = (0.9, 0.1, 0.2, 0.8)
_MMVP_KINDS = {
    "right": (_MMVP_RIGHT, True),
    "t1_wrong": ((0.1, 0.9, 0.2, 0.8), False),
    "t2_wrong": ((0.9, 0.1, 0.8, 0.2), False),
    "t1_tie": ((0.5, 0.5, 0.2, 0.8), False),     # tie on text 1 -> image 2 is picked: wrong (qid odd wants image 1)
    "t2_tie": ((0.9, 0.1, 0.5, 0.5), True),      # tie on text 2 -> image 2 is picked: right (qid even wants image 2)
}
# 17 pairs: 15 of the first pattern (folder Orientation), 2 of the second (folder Presence)
MMVP_LAYOUT = ["right", "t1_wrong", "t2_wrong", "t1_tie", "t2_tie", "right", "right", "t1_wrong", "right", "t2_wrong",
               "right", "t1_tie", "right", "t2_tie", "t1_wrong", "right", "swapped"]
# by hand: pattern 1 right: pairs 1, 5, 6, 7, 9, 11, 13, 14 -> 8 of 15; pattern 2: pair 16 right, pair 17 (Question
# IDs in even/odd order, scores that pick image 1 for text 1) wrong -> 1 of 2
MMVP_EXPECTED = {"orientation_and_direction": 8 / 15, "presence_of_specific_features": 1 / 2}


def build_mmvp(root: Path, layout: List[str] = None, images_dir: str = "MLLM_VLM Images") -> Tuple[Dict, Dict]:
    base = root / "mmvp-vlm"
    layout = MMVP_LAYOUT if layout is None else layout
    pair_scores, rows = {}, [["Question ID", "Type", "Statement"]]
    folders = ("Orientation", "Presence", "State", "Quantity", "Spatial", "Color", "Structural Character", "Text",
               "Camera_Perspective")
    for p, kind in enumerate(layout):
        folder = folders[p // 15]
        q1, q2 = 2 * p + 1, 2 * p + 2
        if kind == "swapped":   # the pair's rows in even/odd order: text 1's right image is image 2
            q1, q2 = q2, q1
            s = _MMVP_RIGHT
        else:
            s = _MMVP_KINDS[kind][0]
        t1, t2 = f"the dog is facing left {p}", f"the dog is facing right {p}"
        for q in (q1, q2):
            write_image(base / images_dir / folder / f"{q}.jpg", size=(16, 16), color=COLORS[q % 6], fmt="JPEG")
        a, b = f"{q1}.jpg", f"{q2}.jpg"
        pair_scores[(a, "a photo of " + t1)], pair_scores[(b, "a photo of " + t1)] = s[0], s[1]
        pair_scores[(a, "a photo of " + t2)], pair_scores[(b, "a photo of " + t2)] = s[2], s[3]
        rows += [[str(q1), folder, t1], [str(q2), folder, t2]]
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "Questions.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return dict(MMVP_EXPECTED), pair_scores


def build_all_new(root: Path) -> Dict[str, Dict]:
    """The four benchmarks' fixtures under ``root``; returns ``{benchmark: expected summary}``."""
    return {"sugarcrepe-pp": build_scpp(root)[0], "whatsup": build_whatsup(root)[0],
            "colorswap": build_colorswap(root)[0], "mmvp-vlm": build_mmvp(root)[0]}
