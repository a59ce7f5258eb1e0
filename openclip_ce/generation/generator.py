"""The generator: the four hard negatives of each caption of a chunk (tag, swap, fill, re-case)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..negatives import NEG_TYPES, Negatives, empty_negatives
from .edits import FILL_POS, FillRequest, choose_fill, make_rel, pick_fill_token
from .fillers import Filler
from .tagging import SpacyTagger, Tok
from .words import VariantCheck, is_sentence_initial, recase, sample_rng


@dataclass
class Timings:
    tag_s: float = 0.0
    fill_s: float = 0.0
    captions: int = 0
    fills: int = 0

    def as_dict(self) -> Dict[str, float]:
        return {"tag_s": round(self.tag_s, 3), "fill_s": round(self.fill_s, 3), "captions": self.captions,
                "fills": self.fills}


class NegativeGenerator:
    """``generate([(key, caption), ...]) -> [neg dict, ...]`` for one chunk of captions."""

    def __init__(self, tagger: SpacyTagger, filler: Optional[Filler], seed: int = 0,
                 types: Sequence[str] = NEG_TYPES, top_k: int = 10):
        if any(t in FILL_POS for t in types) and filler is None:
            raise ValueError(f"types {list(types)} need a filler")
        self.tagger, self.filler, self.seed = tagger, filler, seed
        self.types = tuple(t for t in NEG_TYPES if t in types)
        self.top_k = top_k
        self.variants = VariantCheck(tagger.lemma)
        self.timings = Timings()

    def generate(self, items: Sequence[Tuple[str, str]]) -> List[Negatives]:
        t0 = time.perf_counter()
        tagged = self.tagger.tag([text for _, text in items])
        t1 = time.perf_counter()
        out = [empty_negatives() for _ in items]
        pending: List[Tuple[int, str, Tok, random.Random]] = []
        requests: List[FillRequest] = []
        for i, ((key, text), toks) in enumerate(zip(items, tagged)):
            if "rel" in self.types:
                out[i]["rel"] = make_rel(text, toks, sample_rng(self.seed, key, "rel"))
            for kind in self.types:
                if kind not in FILL_POS:
                    continue
                rng = sample_rng(self.seed, key, kind)
                tok = pick_fill_token(text, toks, FILL_POS[kind], rng)
                if tok is None:
                    continue
                pending.append((i, kind, tok, rng))
                requests.append(FillRequest(text[:tok.start], text[tok.end:], tok.pos, tok.tag,
                                            text[tok.start:tok.end]))
        t2 = time.perf_counter()
        filled = self.filler.fill(requests) if requests else []
        t3 = time.perf_counter()
        for (i, kind, tok, rng), cands in zip(pending, filled):
            text = items[i][1]
            original = text[tok.start:tok.end]
            word = choose_fill(cands, original, tok, rng, self.top_k, self.filler.ranked, self.variants,
                               self.tagger.known)
            if word is not None:
                new = recase(word, original, is_sentence_initial(text, tok.start))
                out[i][kind] = text[:tok.start] + new + text[tok.end:]
        for negs, (_, text) in zip(out, items):
            for k, v in negs.items():
                if v is not None and (v == text or not v.strip()):
                    negs[k] = None
        t4 = time.perf_counter()
        self.timings.tag_s += (t1 - t0) + (t2 - t1)
        self.timings.fill_s += (t3 - t2) + (t4 - t3)
        self.timings.captions += len(items)
        self.timings.fills += len(requests)
        return out
