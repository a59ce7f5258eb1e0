"""The edits: ``rel`` swaps two different nouns; ``att``/``act``/``obj`` mask one ADJ/VERB/NOUN, which a
filler refills. All on character offsets, so the rest of the caption is kept exactly."""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import chain
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


def make_rel(text: str, toks: Tagged, rng) -> Optional[str]:
    """Swap two different nouns; ``None`` when the caption has fewer than two different ones.

    ``rng``: a ``random.Random``, or a function returning one, called only when there is a choice
    to make (seeding a stream costs microseconds, and most captions of a chunk need few)."""
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
    i, j = pairs[(rng() if callable(rng) else rng).randrange(len(pairs))]
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



def fill_candidates(text: str, toks: Tagged, pos: str) -> List[Tok]:
    """The words of ``pos`` that a fill may replace."""
    return [t for t in toks if t.pos == pos and is_word(text[t.start:t.end])]


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


def _twins(words: Sequence[str]) -> bool:
    return len(set(words)) != len(words)


class RankedChooser:
    """:func:`choose_fill` for a whole chunk of ranked masked-LM answers given as vocabulary columns
    (``cols``: (slots, k) int32, best first, -1 for none), with the same result slot by slot.

    Every filter is an array operation over the chunk: the ones that depend on the candidate alone (a
    whole word of three letters or more; lowercase when the original is; a dictionary word of the
    slot's POS) are table lookups; "a variant of the original" compares the candidate's forms (word,
    lemma, stems: :class:`~.words.VariantCheck`) with the original's as integer ids; "the same word
    as a better candidate" keeps the first of each lowercase word per slot. The pool (the first
    ``top_k`` survivors) is sorted by a precomputed alphabetical rank. Tables are filled lazily, per
    column, the first time a column is a candidate. What is left per slot is one draw.
    """

    MAX_FORMS = 1_000_000  # distinct forms kept as ids; beyond, the ids start over (memory stays bounded)

    def __init__(self, words: Sequence[str], fill_word: np.ndarray, is_lower: np.ndarray, variants: VariantCheck,
                 known=lambda word, pos: True, allow: Optional[np.ndarray] = None):
        self.words = list(words)
        self.fill_word, self.is_lower = fill_word, is_lower
        self.variants, self.known = variants, known
        lower_ids: Dict[str, int] = {}
        self.lower_id = np.fromiter((lower_ids.setdefault(w.lower(), len(lower_ids)) for w in self.words), np.int64,
                                    len(self.words))
        self.n_lower = len(lower_ids)
        self.lower_twins = any(_twins([w for w, a in zip(self.words, row) if a and w == w.lower()])
                               for row in (allow if allow is not None else [[True] * len(self.words)]))
        by_alpha = sorted(range(len(self.words)), key=self.words.__getitem__)  # str order, as pool.sort()
        self.alpha_rank = np.empty(len(self.words), dtype=np.int64)
        self.alpha_rank[by_alpha] = np.arange(len(self.words))
        self.by_alpha = [self.words[c] for c in by_alpha]
        self._known: Dict[str, np.ndarray] = {}  # pos -> int8 per column: -1 not yet looked up, 0 / 1
        self._forms: Dict[str, np.ndarray] = {}  # pos -> (columns, 4) form ids; -1 rows: not yet computed
        self._form_id: Dict[str, int] = {}       # a form (word, lemma or stem) -> its id
        self._orig: Dict[tuple, Tuple[int, ...]] = {}  # (original, pos, lemma in context) -> its 6 form ids

    def _id(self, form: str) -> int:
        return self._form_id.setdefault(form, len(self._form_id))

    def _orig_ids(self, original: str, pos: str, lemma: str) -> Tuple[int, ...]:
        ids = [self._id(f) for f in self.variants.forms(original, pos, lemma)]
        return tuple(ids + [-1] * (6 - len(ids)))  # -1: no form (never equal to a candidate's)

    def _tables(self, pos: str, cols: np.ndarray):
        known = self._known.setdefault(pos, np.full(len(self.words), -1, dtype=np.int8))
        forms = self._forms.setdefault(pos, np.full((len(self.words), 4), -1, dtype=np.int32))
        for c in np.unique(cols[known[cols] < 0]).tolist():
            known[c] = bool(self.known(self.words[c], pos))
        for c in np.unique(cols[forms[cols, 0] < 0]).tolist():
            ids = [self._id(f) for f in self.variants.forms(self.words[c], pos)]
            forms[c] = ids + [-2] * (4 - len(ids))  # -2: no form (never equal to an original's)
        return known, forms

    def choose_all(self, cols: np.ndarray, originals: Sequence[str], toks: Sequence[Tok],
                   rngs: Sequence[random.Random], top_k: int) -> List[Optional[str]]:
        n = len(originals)
        if not n:
            return []
        if len(self._form_id) > self.MAX_FORMS or len(self._orig) > self.MAX_FORMS:
            self._form_id.clear(), self._orig.clear()
            for forms in self._forms.values():
                forms[:] = -1
        valid = cols >= 0
        c = np.where(valid, cols, 0)
        lowercase_only = np.fromiter((o == o.lower() for o in originals), bool, n)
        ok = valid & self.fill_word[c] & (self.is_lower[c] | ~lowercase_only[:, None])
        # the candidates left so far, one entry each (row-major: by slot, then rank)
        pos_names = [t.pos for t in toks]
        codes = {p: i for i, p in enumerate(dict.fromkeys(pos_names))}
        pos_code = np.fromiter((codes[p] for p in pos_names), np.int64, n)
        row, rank = np.nonzero(ok)
        col = c[row, rank]
        row_code = pos_code[row]
        keep = np.zeros(len(row), dtype=bool)
        cand_forms = np.empty((len(row), 4), dtype=np.int32)
        for pos, code in codes.items():
            sel = np.flatnonzero(row_code == code)
            col_sel = col[sel]
            known, forms = self._tables(pos, col_sel)
            keep[sel] = known[col_sel] == 1
            cand_forms[sel] = forms[col_sel]
        # not a variant of the original: none of the candidate's forms is one of the original's
        cache, orig_ids = self._orig, self._orig_ids
        orig = np.fromiter(chain.from_iterable(cache.get(k) or cache.setdefault(k, orig_ids(*k))
                                               for k in zip(originals, pos_names, [t.lemma for t in toks])),
                           np.int32, 6 * n).reshape(n, 6)[row]
        for a in range(4):
            fa = cand_forms[:, a]
            for b in range(6):
                keep &= fa != orig[:, b]
        # not the same word (any case) as a better candidate kept for this slot: only possible where the
        # original has capitals, as other slots take lowercase words only, and a vocabulary row (``allow``)
        # has each lowercase word in one column (checked at start: else every slot is checked)
        kept = np.flatnonzero(keep)
        if not self.lower_twins:
            kept_any = kept[~lowercase_only[row[kept]]]
            _, first = np.unique(row[kept_any] * self.n_lower + self.lower_id[col[kept_any]], return_index=True)
            kept = np.concatenate([kept[lowercase_only[row[kept]]], kept_any[first]])
        else:
            _, first = np.unique(row[kept] * self.n_lower + self.lower_id[col[kept]], return_index=True)
            kept = kept[first]
        pool = np.zeros_like(ok)
        pool[row[kept], rank[kept]] = True
        pool &= np.cumsum(pool, axis=1) <= top_k  # the first top_k of them
        # the pool in str order (as sorted() would), and one draw per slot
        k = min(top_k, pool.shape[1])
        alpha = np.sort(np.where(pool, self.alpha_rank[c], len(self.words)), axis=1)[:, :k].ravel().tolist()
        out: List[Optional[str]] = []
        by_alpha = self.by_alpha
        for i, (size, rng) in enumerate(zip(pool.sum(axis=1).tolist(), rngs)):
            out.append(by_alpha[alpha[i * k + rng.randrange(size)]] if size else None)
        return out
