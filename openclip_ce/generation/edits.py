"""The edits: ``rel`` swaps two different nouns; ``att``/``act``/``obj`` mask one ADJ/VERB/NOUN, which a
filler refills. All on character offsets, so the rest of the caption is kept exactly."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .tagging import Tagged, Tok
from .words import VariantCheck, is_fill_word, is_sentence_initial, is_word, swap_case

FILL_POS: Dict[str, str] = {"att": "ADJ", "act": "VERB", "obj": "NOUN"}


def noun_units(text: str, toks: Tagged) -> List[Tuple[int, int]]:
    """Maximal runs of adjacent NOUN tokens, as (start, end) character spans."""
    units: List[Tuple[int, int]] = []
    prev_noun = False
    for t in toks:
        noun = t.pos == "NOUN" and is_word(text[t.start:t.end].replace(" ", ""))
        if noun and prev_noun:
            units[-1] = (units[-1][0], t.end)
        elif noun:
            units.append((t.start, t.end))
        prev_noun = noun
    return units


def make_rel(text: str, toks: Tagged, rng: random.Random) -> Optional[str]:
    """Swap two different nouns; ``None`` when the caption has fewer than two different ones."""
    units = noun_units(text, toks)
    # "different" nouns: compare the head's lemma, so "dog"/"dogs" or "man"/"men" are not swapped
    head_lemma = {t.end: t.lemma.lower() for t in toks}

    def unit_key(s: int, e: int):  # ("tennis", "racket") for "tennis rackets"
        *modifiers, head = text[s:e].lower().split()
        return " ".join(modifiers), head_lemma.get(e, head)

    keys = [unit_key(s, e) for s, e in units]
    pairs = [(i, j) for i in range(len(units)) for j in range(i + 1, len(units)) if keys[i] != keys[j]]
    if not pairs:
        return None
    i, j = pairs[rng.randrange(len(pairs))]
    (s1, e1), (s2, e2) = units[i], units[j]
    w1, w2 = text[s1:e1], text[s2:e2]
    init1, init2 = is_sentence_initial(text, s1), is_sentence_initial(text, s2)
    new1 = swap_case(w2, init2, w1, init1)
    new2 = swap_case(w1, init1, w2, init2)
    return text[:s1] + new1 + text[e1:s2] + new2 + text[e2:]


# ----------------------------------------------------------------------------- fills
@dataclass(frozen=True)
class FillRequest:
    """One masked word: the caption is ``left + <word> + right``. Picklable (sent to filler actors)."""

    left: str
    right: str
    pos: str
    tag: str
    word: str = ""  # the original word (context for tokenization only; never a candidate)

    @property
    def space_before(self) -> bool:
        return bool(self.left) and self.left[-1].isspace()



def pick_fill_token(text: str, toks: Tagged, pos: str, rng: random.Random) -> Optional[Tok]:
    cands = [t for t in toks if t.pos == pos and is_word(text[t.start:t.end])]
    return cands[rng.randrange(len(cands))] if cands else None


def choose_fill(candidates: Sequence[str], original: str, tok: Tok, rng: random.Random, top_k: int,
                ranked: bool, variants: VariantCheck, known=lambda word, pos: True) -> Optional[str]:
    """The replacement word (not yet re-cased), or ``None`` when no admissible candidate is left.

    Admissible: a whole word (:func:`is_fill_word`), a dictionary word of the slot's POS (``known``), not
    a variant of the original, lowercase when the original is (no stray capitals mid-sentence).
    """
    orig_forms = variants.forms(original, tok.pos, tok.lemma)
    lowercase_only = original == original.lower()
    if ranked:
        pool, seen = [], set()
        for c in candidates:
            low = c.lower()
            if (not is_fill_word(c) or low in seen or (lowercase_only and c != low) or not known(c, tok.pos)
                    or variants(orig_forms, c, tok.pos)):
                continue
            seen.add(low)
            pool.append(c)
            if len(pool) == top_k:
                break
        if not pool:
            return None
        pool.sort()  # membership, not rank order, decides: robust to float noise between batches
        return pool[rng.randrange(len(pool))]
    n = len(candidates)
    if not n:
        return None
    start = rng.randrange(n)
    for i in range(n):  # first admissible word from a random starting point
        c = candidates[(start + i) % n]
        if is_fill_word(c) and known(c, tok.pos) and not variants(orig_forms, c, tok.pos):
            return c
    return None


class RankedChooser:
    """:func:`choose_fill` for a whole chunk of ranked masked-LM answers given as vocabulary columns
    (``cols``: (slots, k) int32, best first, -1 for none), with the same result slot by slot.

    The filters that depend on the candidate alone (a whole word of three letters or more; lowercase
    when the original is; a dictionary word of the slot's POS) are table lookups over the chunk at
    once; the dictionary table is filled lazily, column by column, as candidates first appear. Only
    the filters that depend on the original word (variants) and the de-duplication stay per slot.
    """

    def __init__(self, words: Sequence[str], fill_word: np.ndarray, is_lower: np.ndarray, variants: VariantCheck,
                 known=lambda word, pos: True):
        self.words, self.lower = list(words), [w.lower() for w in words]
        self.fill_word, self.is_lower = fill_word, is_lower
        self.variants, self.known = variants, known
        self._known: Dict[str, np.ndarray] = {}  # pos -> int8 per column: -1 not yet looked up, 0 / 1

    def _known_table(self, pos: str, cols: np.ndarray) -> np.ndarray:
        table = self._known.setdefault(pos, np.full(len(self.words), -1, dtype=np.int8))
        todo = np.unique(cols[table[cols] < 0])
        for c in todo.tolist():
            table[c] = bool(self.known(self.words[c], pos))
        return table

    def choose_all(self, cols: np.ndarray, originals: Sequence[str], toks: Sequence[Tok],
                   rngs: Sequence[random.Random], top_k: int) -> List[Optional[str]]:
        if not len(originals):
            return []
        valid = cols >= 0
        c = np.where(valid, cols, 0)
        lowercase_only = np.fromiter((o == o.lower() for o in originals), bool, len(originals))
        ok = valid & self.fill_word[c] & (self.is_lower[c] | ~lowercase_only[:, None])
        poses = np.asarray([t.pos for t in toks])
        for pos in set(poses.tolist()):
            rows = poses == pos
            ok[rows] &= self._known_table(pos, c[rows][ok[rows]])[c[rows]] == 1
        out: List[Optional[str]] = []
        words, lower, variants = self.words, self.lower, self.variants
        for row_ok, row, original, tok, rng in zip(ok.tolist(), c.tolist(), originals, toks, rngs):
            orig_forms = variants.forms(original, tok.pos, tok.lemma)
            pool, seen = [], set()
            for good, col in zip(row_ok, row):
                if not good:
                    continue
                low = lower[col]
                if low in seen or variants(orig_forms, words[col], tok.pos):
                    continue
                seen.add(low)
                pool.append(words[col])
                if len(pool) == top_k:
                    break
            if not pool:
                out.append(None)
                continue
            pool.sort()  # membership, not rank order, decides: robust to float noise between batches
            out.append(pool[rng.randrange(len(pool))])
        return out
