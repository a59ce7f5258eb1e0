"""Shared by the dataset converters (scripts/*_to_wds.py): sharded, resumable WebDataset writing.

Each shard is written under ``NAME.tmp`` and renamed when complete, so an interrupted run never
leaves a half shard under its final name, and a rerun skips the shards that are complete (the
items must come in the same order: the converters sort them). ``sizes.json`` (open_clip reads it
for ``--train-num-samples``) is written last, the same way.
"""

import io
import json
import os
import sys
import tarfile


class ItemError(Exception):
    """An item that cannot be converted (message names it); the shard being written is dropped."""


def add_member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_sharded(out, items, per_shard, write_item, prog):
    """Write ``items`` into ``out/00000.tar ...``, ``per_shard`` each; ``write_item(tar, item)`` adds one
    item's members (raising :class:`ItemError` to stop). Returns the exit code (0 or 1)."""
    os.makedirs(out, exist_ok=True)
    n_shards = (len(items) + per_shard - 1) // per_shard
    sizes = {}
    for s in range(n_shards):
        name = f"{s:05d}.tar"
        chunk = items[s * per_shard:(s + 1) * per_shard]
        sizes[name] = len(chunk)
        final = os.path.join(out, name)
        if os.path.exists(final):
            continue
        tmp = final + ".tmp"
        try:
            with tarfile.open(tmp, "w") as tar:
                for item in chunk:
                    write_item(tar, item)
        except ItemError as e:
            os.remove(tmp)
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 1
        os.replace(tmp, final)
        print(f"{prog}: {final} ({len(chunk)} samples)", file=sys.stderr)
    with open(os.path.join(out, "sizes.json.tmp"), "w") as f:
        json.dump(sizes, f)
    os.replace(os.path.join(out, "sizes.json.tmp"), os.path.join(out, "sizes.json"))
    print(f"{prog}: {len(items)} samples in {n_shards} shards under {out}", file=sys.stderr)
    return 0
