"""Fuzzed alt-text for make-shards: real captions with the debris of the web put into them, as a caption
file that ``alttext_quality.py`` reads (a JSON list of strings).

Each caption is a real one (drawn from the files given) with one to five mutations: a piece of markup,
an entity, a URL or a file name, quotes in runs (CSV escaping), joiners and dashes, control, format and
zero-width characters, emoji and their joiners, combining marks, other scripts, long runs, the text in
capitals or Title Case, a deleted stretch, random code points. A fifth of the output is made of such
pieces alone. Lone surrogates are left out: a .txt member cannot hold them (JSON captions with
escaped ones are covered by the make-shards tests).

    python scripts/benchmarks/fuzz_captions.py laion.parquet capsfusion.json --out fuzz.json --count 15000
    python scripts/benchmarks/alttext_quality.py fuzz=fuzz.json --limit 15000 --out /tmp/fuzz
"""

from __future__ import annotations

import argparse
import random
import sys

from alttext_quality import read_captions  # this script's folder is on the path when it runs

from openclip_ce.fileio import write_json_atomic

PIECES = [
    '"', '""', '"""', '""""', "'", "''", "“", "”", "«", "»", "<b>", "</b>", '<a href="x">', "&amp;", "&#39;",
    "http://x.co/a-b", "www.a.com", "a_b.jpg", "-", "--", "—", "/", "\\", "|", ":", ";", "(", ")", "[", "]", "{",
    "}", "™", "®", "©", "#", "@", "$", "%", "&", "*", "…", ".", "..", "...", ",", "\u200b", "\u200d", "\u200e",
    "\u202e", "\u0301", "\ufeff", "\u00ad", "\ufffd", "\t", "\n", "\r", "\x00", "\x07", "\x1b", "\x85", "\u2028",
    "🙂", "👩\u200d👩\u200d👧", "你好", "こんにちは", "Привет", "مرحبا", "İ", "ß", "ﬁ", "Ⅻ", "²", "½", "٣", "x" * 300,
    "A" * 50, " " * 20, "T-shirt", "feat", "ft", "by", "The", "Season", "(2008)", "Inc", "X", "II", "Stock Photo",
]


def _code_point(rng: random.Random) -> str:
    c = rng.randrange(32, 0x2FFFF)
    return "\ufffd" if 0xD800 <= c <= 0xDFFF else chr(c)


def mutate(caption: str, rng: random.Random) -> str:
    s = list(caption)
    for _ in range(rng.randrange(1, 6)):
        op, p = rng.random(), rng.randrange(len(s) + 1)
        if op < 0.6:
            s[p:p] = list(rng.choice(PIECES))
        elif op < 0.8:
            del s[p:p + rng.randrange(1, 10)]
        elif op < 0.9:
            text = "".join(s)
            s = list(text.upper() if rng.random() < 0.5 else text.title())
        else:
            s[p:p] = [_code_point(rng) for _ in range(rng.randrange(1, 5))]
    return "".join(s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="+", help="caption files (as alttext_quality.py reads them)")
    ap.add_argument("--out", required=True, help="the JSON list of fuzzed captions to write")
    ap.add_argument("--count", type=int, default=15000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    base = [c for path in args.sources for c in read_captions(path)]
    if not base:
        ap.error("the source files hold no caption")
    pieces = args.count // 5
    out = [mutate(rng.choice(base), rng) for _ in range(args.count - pieces)]
    out += ["".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 12))) for _ in range(pieces)]
    write_json_atomic(args.out, out, indent=None)
    print(f"{len(out)} fuzzed captions from {len(base)} real ones -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
