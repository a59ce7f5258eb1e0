#!/usr/bin/env python
"""Convert COCO captions (images + captions_*.json) into WebDataset shards that open_clip and
`openclip-ce make-shards` read: one sample per (image, caption) pair, members `<key>.jpg`,
`<key>.txt`, `<key>.json` (image id, caption id, file name).

    python scripts/recipes/coco_to_wds.py --images /data/coco/train2017 \
        --captions /data/coco/annotations/captions_train2017.json --out /data/coco-wds --per-shard 5000

`--captions-per-image 1` keeps the first caption of each image (118k samples for train2017, the size
NegCLIP / CE-CLIP fine-tune on); `all` keeps every caption (~591k). Shards are written to a
temporary name and renamed when complete; a rerun skips complete shards (scripts/recipes/_wds.py). A missing image file is
an error naming it (nothing is written for that shard).
"""

import argparse
import json
import os
import sys
from collections import defaultdict

from _wds import ItemError, add_member, write_sharded


def pairs(captions_json, per_image):
    with open(captions_json) as f:
        coco = json.load(f)
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    by_image = defaultdict(list)
    for ann in sorted(coco["annotations"], key=lambda a: a["id"]):
        by_image[ann["image_id"]].append(ann)
    for image_id in sorted(by_image):
        anns = by_image[image_id] if per_image == "all" else by_image[image_id][:1]
        for ann in anns:
            yield image_id, ann["id"], files[image_id], ann["caption"].strip()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="folder of COCO images (e.g. train2017)")
    p.add_argument("--captions", required=True, help="captions_*.json")
    p.add_argument("--out", required=True)
    p.add_argument("--per-shard", type=int, default=5000)
    p.add_argument("--captions-per-image", choices=["1", "all"], default="1")
    a = p.parse_args(argv)
    items = list(pairs(a.captions, a.captions_per_image))

    def write_item(tar, item):
        image_id, cap_id, file_name, caption = item
        path = os.path.join(a.images, file_name)
        if not os.path.exists(path):
            raise ItemError(f"{path}: image of caption {cap_id} not found")
        key = f"{image_id:012d}_{cap_id}"
        with open(path, "rb") as f:
            add_member(tar, f"{key}.jpg", f.read())
        add_member(tar, f"{key}.txt", caption.encode("utf-8"))
        add_member(tar, f"{key}.json", json.dumps(
            {"image_id": image_id, "caption_id": cap_id, "file_name": file_name}).encode())

    return write_sharded(a.out, items, a.per_shard, write_item, "coco_to_wds")

if __name__ == "__main__":
    sys.exit(main())
