"""The generator: the four hard negatives of each caption of a chunk (tag, swap, fill, re-case)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..negatives import NEG_TYPES, Negatives, empty_negatives
from .alttext import CaptionTagger
from .edits import FILL_POS, fill_candidates, make_rel
from .fillers import Filler
from .mlm_tokens import FillSlots
from .tagging import SpacyTagger, Tok
from .words import VariantCheck, is_sentence_initial, recase, sample_rng


def plan_fill(text: str, toks, kind: str, seed: int, key: str) -> Optional[Tuple[Tok, random.Random]]:
    """The word a ``kind`` fill replaces in ``text`` and the sample's stream that drew it (which then
    chooses the fill), or None when the caption has no such word (the type's placeholder)."""
    cands = fill_candidates(text, toks, FILL_POS[kind])
    if not cands:  # a stream is seeded only when there is a draw to make: the same draws as ever
        return None
    rng = sample_rng(seed, key, kind)
    return cands[rng.randrange(len(cands))], rng


@dataclass
class Timings:
    """Seconds of one generator: ``tag_s`` tagging, swapping, picking and encoding the masked words (CPU);
    ``fill_s`` getting and choosing the fills, of which ``wait_s`` waiting for the filler's answer (a
    masked LM in this process computes during it; a remote one was computing meanwhile)."""

    tag_s: float = 0.0
    fill_s: float = 0.0
    wait_s: float = 0.0
    captions: int = 0
    fills: int = 0

    def as_dict(self) -> Dict[str, float]:
        return {"tag_s": round(self.tag_s, 3), "fill_s": round(self.fill_s, 3), "wait_s": round(self.wait_s, 3),
                "captions": self.captions, "fills": self.fills}


class Prepared:
    """A chunk between :meth:`NegativeGenerator.prepare` and :meth:`NegativeGenerator.finish`."""

    __slots__ = ("items", "out", "pending", "handle")

    def __init__(self, items, out, pending, handle):
        self.items, self.out, self.pending, self.handle = items, out, pending, handle


class NegativeGenerator:
    """``generate([(key, caption), ...]) -> [neg dict, ...]`` for one chunk of captions; or in two steps,
    ``finish(prepare(items))``, so that a caller can tag the next chunk while a remote masked LM fills
    this one (``prepare`` sends the fills, ``finish`` waits for them)."""

    def __init__(self, tagger: SpacyTagger, filler: Optional[Filler], seed: int = 0,
                 types: Sequence[str] = NEG_TYPES, top_k: int = 10):
        if any(t in FILL_POS for t in types) and filler is None:
            raise ValueError(f"types {list(types)} need a filler")
        self.tagger, self.filler, self.seed = tagger, filler, seed
        self.captions = CaptionTagger(tagger)  # the words an edit may touch (:mod:`.alttext`)
        self.types = tuple(t for t in NEG_TYPES if t in types)
        self.top_k = top_k
        self.variants = VariantCheck(tagger.lemma)
        self.timings = Timings()

    def generate(self, items: Sequence[Tuple[str, str]]) -> List[Negatives]:
        return self.finish(self.prepare(items))

    def prepare(self, items: Sequence[Tuple[str, str]]) -> Prepared:
        """Tag the chunk, make its swaps, pick its masked words and send them to the filler."""
        t0 = time.perf_counter()
        texts = [text for _, text in items]
        tagged = self.captions.tag(texts)
        out = [empty_negatives() for _ in items]
        pending: List[Tuple[int, str, Tok, random.Random]] = []
        fill_kinds = [k for k in self.types if k in FILL_POS]
        rel = "rel" in self.types
        seed = self.seed
        for i, ((key, text), toks) in enumerate(zip(items, tagged)):
            if rel:
                out[i]["rel"] = make_rel(text, toks, lambda: sample_rng(seed, key, "rel"))
            for kind in fill_kinds:
                planned = plan_fill(text, toks, kind, seed, key)
                if planned is not None:
                    pending.append((i, kind, *planned))
        handle = None
        if pending:
            n = len(pending)
            slots = FillSlots(texts, np.fromiter((p[0] for p in pending), np.int64, n),
                              np.fromiter((p[2].start for p in pending), np.int64, n),
                              np.fromiter((p[2].end for p in pending), np.int64, n),
                              [p[2].pos for p in pending], [p[2].tag for p in pending])
            handle = self.filler.submit(slots)
        self.timings.tag_s += time.perf_counter() - t0
        return Prepared(items, out, pending, handle)

    def finish(self, prep: Prepared) -> List[Negatives]:
        """Wait for the chunk's fills, choose a word per slot, and return the chunk's negatives."""
        t0 = time.perf_counter()
        items, out, pending = prep.items, prep.out, prep.pending
        if pending:
            cands = self.filler.collect(prep.handle)
            t1 = time.perf_counter()
            self.timings.wait_s += t1 - t0
            originals = [items[i][1][tok.start:tok.end] for i, _, tok, _ in pending]
            words = self.filler.choose_all(cands, originals, [p[2] for p in pending], [p[3] for p in pending],
                                           self.top_k, self.variants, self.tagger.known)
            for (i, kind, tok, _), original, word in zip(pending, originals, words):
                if word is not None:
                    text = items[i][1]
                    new = recase(word, original, is_sentence_initial(text, tok.start))
                    out[i][kind] = text[:tok.start] + new + text[tok.end:]
        for negs, (_, text) in zip(out, items):
            for k, v in negs.items():
                if v is not None and (v == text or not v.strip()):
                    negs[k] = None
        self.timings.fill_s += time.perf_counter() - t0
        self.timings.captions += len(items)
        self.timings.fills += len(pending)
        return out
