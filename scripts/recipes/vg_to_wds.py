#!/usr/bin/env python
"""Convert Visual Genome region descriptions into WebDataset shards that open_clip and
`openclip-ce make-shards` read: one sample per (region, phrase), members `<key>.jpg` (the region
cropped out of its image, re-encoded as JPEG), `<key>.txt` (the phrase) and `<key>.json` (image id,
region id, box).

    python scripts/recipes/vg_to_wds.py --regions /data/vg/region_descriptions.json \
        --images /data/vg/VG_100K --images /data/vg/VG_100K_2 --out /data/vg-wds \
        --exclude-images /data/bench/aro/visual_genome_relation.json \
        --exclude-images /data/bench/aro/visual_genome_attribution.json

Why regions: Visual Genome has no image captions, but ~50 described regions per image, each a short
phrase about the objects, attributes and relations inside its box ("man riding a brown horse").
A crop with its phrase is an image-caption pair whose text is about what the crop shows.

Filters (each counted in the summary): boxes smaller than `--min-box` pixels on a side, phrases
with fewer than `--min-words` words, repeated phrases of an image; at most `--max-per-image`
regions per image (the largest boxes first). `--exclude-images` leaves out images that a benchmark
tests on: ARO's VG-Relation / VG-Attribution are built from Visual Genome images, so training on
them would leak the test set (give ARO's JSON files, or a text file of VG image ids).

Shards are written under a temporary name and renamed when complete; a rerun skips complete shards.
A missing or unreadable image is an error naming it (nothing is written for that shard).
"""

import argparse
import io
import json
import os
import re
import sys

from PIL import Image

from _wds import ItemError, add_member, write_sharded


def excluded_ids(paths):
    """VG image ids from ARO-style JSON lists (``image_path`` "2316849.jpg") or text files of ids."""
    ids = set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if text.lstrip().startswith("["):
            for entry in json.loads(text):
                name = os.path.basename(str(entry.get("image_path", "")))
                if name.split(".")[0].isdigit():
                    ids.add(int(name.split(".")[0]))
        else:
            ids.update(int(tok) for tok in re.findall(r"\d+", text))
    return ids


def regions(path, exclude, min_box, min_words, per_image, counts):
    """``(image_id, region)`` pairs that pass the filters, images in id order, largest boxes first."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    for entry in sorted(data, key=lambda e: e["id"]):
        image_id = entry["id"]
        if image_id in exclude:
            counts["excluded_images"] += 1
            continue
        seen, kept = set(), []
        for r in sorted(entry["regions"], key=lambda r: (-r["width"] * r["height"], r["region_id"])):
            phrase = " ".join(str(r.get("phrase", "")).split())
            if min(r["width"], r["height"]) < min_box:
                counts["small_box"] += 1
            elif len(phrase.split()) < min_words:
                counts["short_phrase"] += 1
            elif phrase.lower() in seen:
                counts["repeated_phrase"] += 1
            elif len(kept) >= per_image:
                counts["over_per_image"] += 1
            else:
                seen.add(phrase.lower())
                kept.append({**r, "phrase": phrase})
        for r in kept:
            yield image_id, r


def find_image(dirs, image_id):
    for d in dirs:
        path = os.path.join(d, f"{image_id}.jpg")
        if os.path.exists(path):
            return path
    return None


def crop_jpeg(path, r):
    with Image.open(path) as im:
        box = (r["x"], r["y"], r["x"] + r["width"], r["y"] + r["height"])
        out = io.BytesIO()
        im.convert("RGB").crop(box).save(out, format="JPEG", quality=92)
    return out.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--regions", required=True, help="region_descriptions.json of Visual Genome 1.2")
    p.add_argument("--images", action="append", required=True, help="image folder (repeat: VG_100K, VG_100K_2)")
    p.add_argument("--out", required=True)
    p.add_argument("--per-shard", type=int, default=5000)
    p.add_argument("--min-box", type=int, default=64, help="smallest box side in pixels")
    p.add_argument("--min-words", type=int, default=3, help="shortest phrase in words")
    p.add_argument("--max-per-image", type=int, default=5, help="regions kept per image (largest first)")
    p.add_argument("--exclude-images", action="append", default=[],
                   help="JSON list with image_path entries (ARO) or a text file of VG image ids; repeatable")
    a = p.parse_args(argv)
    counts = {"excluded_images": 0, "small_box": 0, "short_phrase": 0, "repeated_phrase": 0, "over_per_image": 0}
    items = list(regions(a.regions, excluded_ids(a.exclude_images), a.min_box, a.min_words, a.max_per_image, counts))

    def write_item(tar, item):
        image_id, r = item
        path = find_image(a.images, image_id)
        try:
            if path is None:
                raise FileNotFoundError(f"{image_id}.jpg not in {', '.join(a.images)}")
            jpg = crop_jpeg(path, r)
        except (OSError, ValueError) as e:
            raise ItemError(f"image {image_id} (region {r['region_id']}): {e}") from None
        key = f"vg{image_id:09d}_{r['region_id']}"
        add_member(tar, f"{key}.jpg", jpg)
        add_member(tar, f"{key}.txt", r["phrase"].encode("utf-8"))
        add_member(tar, f"{key}.json", json.dumps({
            "image_id": image_id, "region_id": r["region_id"], "box": [r["x"], r["y"], r["width"], r["height"]]}).encode())

    rc = write_sharded(a.out, items, a.per_shard, write_item, "vg_to_wds")
    if rc == 0:
        print("vg_to_wds: left out: " + ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr)
    return rc

if __name__ == "__main__":
    sys.exit(main())
