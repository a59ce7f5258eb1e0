#!/usr/bin/env python
"""The `--train-data` / `--train-data-upsampling-factors` / `--train-num-samples` of a data mixture.

    python scripts/recipes/mixture.py --mix 1:1:1 OUT/neg/coco OUT/neg/cc3m OUT/neg/vg
    -> prints one line: TRAIN_DATA FACTORS SAMPLES_PER_EPOCH

Each argument is a `make-shards` output folder (its `stats.json` gives the number of samples). open_clip
gives every shard of a source that source's factor as its sampling weight (with --dataset-resampled),
so a source's share of what the model sees is factor x samples; the factors printed are
share / samples (scaled so the largest is 1), which makes each source's share the one in --mix
whatever the sources' sizes. SAMPLES_PER_EPOCH: an epoch holds the first source once (its size
divided by its share of the mixture), so that source is seen once per epoch.
"""

import argparse
import json
import os
import re
import sys


def shard_list(folder):
    """Complete output shards of a make-shards run (the hidden partial files are not shards)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if f.endswith((".tar", ".tar.gz", ".tgz")) and not f.startswith(".")]
    return found


def brace(paths):
    """One braceexpand pattern for a list of paths: ``/d/{00000,00001}.tar`` (or ``{/a.tar,/b.tar}``)."""
    if len(paths) == 1:
        return paths[0]
    folders = {os.path.dirname(p) for p in paths}
    if len(folders) == 1:
        folder = folders.pop()
        names = [os.path.basename(p) for p in paths]
        return os.path.join(folder, numbered_runs(names) or "{" + ",".join(names) + "}")
    return "{" + ",".join(paths) + "}"


def numbered_runs(names):
    """``{00000..41455}.tar`` for shards numbered as img2dataset numbers them (one width, one extension), with
    ``{{00000..00099},{00101..41455}}.tar`` around missing numbers; None for other names. A list of every name
    would not do for LAION-400M: 41,456 names are one argument of ~330 KB, over Linux's 128 KB per argument."""
    found = [re.fullmatch(r"(\d+)(\..+)", n) for n in names]
    if not all(found) or len({m.group(2) for m in found}) != 1 or len({len(m.group(1)) for m in found}) != 1:
        return None
    width, ext = len(found[0].group(1)), found[0].group(2)
    numbers = sorted(int(m.group(1)) for m in found)
    runs, start = [], numbers[0]
    for prev, n in zip(numbers, numbers[1:] + [None]):
        if n is None or n != prev + 1:
            runs.append(f"{start:0{width}d}" if start == prev else f"{{{start:0{width}d}..{prev:0{width}d}}}")
            start = n
    return (runs[0] if len(runs) == 1 else "{" + ",".join(runs) + "}") + ext


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="make-shards output folders, one per source")
    p.add_argument("--mix", default=None, help="shares, e.g. 1:1:1 (default: equal)")
    a = p.parse_args(argv)
    try:
        shares = [float(x) for x in a.mix.split(":")] if a.mix else [1.0] * len(a.folders)
    except ValueError:
        shares = []
    if len(shares) != len(a.folders) or min(shares) <= 0:
        print(f"mixture: error: --mix needs {len(a.folders)} positive shares, got {a.mix!r}", file=sys.stderr)
        return 2
    patterns, samples = [], []
    for folder in a.folders:
        stats_path = os.path.join(folder, "stats.json")
        shards = shard_list(folder)
        try:
            with open(stats_path, encoding="utf-8") as f:
                n = int(json.load(f)["samples"])
        except (OSError, KeyError, ValueError) as e:
            print(f"mixture: error: {stats_path}: no sample count ({e}); run make-shards on it first", file=sys.stderr)
            return 2
        if not shards or n <= 0:
            print(f"mixture: error: {folder}: no complete shards", file=sys.stderr)
            return 2
        patterns.append(brace(shards))
        samples.append(n)
    raw = [s / n for s, n in zip(shares, samples)]
    factors = [r / max(raw) for r in raw]
    per_epoch = round(samples[0] * sum(shares) / shares[0])
    print("::".join(patterns), "::".join(f"{f:.6g}" for f in factors), per_epoch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
