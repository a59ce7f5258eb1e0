"""Word rules shared by the edits and the fillers: what an editable word is, inflection variants,
casing of a word moved into another slot, and the per-(seed, key, type) random streams."""

from __future__ import annotations

import hashlib
import random
import re
from functools import lru_cache
from typing import Optional

# A whole word: letters, optionally joined by single hyphens / apostrophes ("t-shirt", "o'clock").
_WORD_RE = re.compile(r"^[^\W\d_]+(?:['\-][^\W\d_]+)*$")
_SENTENCE_END = ".!?"


@lru_cache(maxsize=500_000)
def is_word(s: str) -> bool:
    """A word of the caption that may be edited: two or more letters (hyphen/apostrophe inside only)."""
    return len(s) >= 2 and bool(_WORD_RE.match(s))


def is_fill_word(s: str) -> bool:
    """A replacement candidate from a filler: a word of three or more letters.

    Two-letter candidates from a masked LM are mostly sub-word pieces or abbreviations ("fr", "ab")
    that the dictionary check lets through, so they are not accepted."""
    return len(s) >= 3 and is_word(s)


def sample_rng(seed: int, key: str, kind: str) -> random.Random:
    """The random stream of one negative type of one sample: a function of (seed, key, type) only."""
    digest = hashlib.blake2b(f"{seed}\x1f{key}\x1f{kind}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


_SUFFIXES = ("ing", "est", "ed", "es", "er", "s")


def crude_stem(word: str) -> str:
    """``running``/``runs``/``run`` -> ``run``; ``glasses``/``glass`` -> ``glas``. Only for comparisons."""
    w = word.lower()
    for suf in _SUFFIXES:
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            w = w[: -len(suf)]
            break
    if len(w) > 3 and w[-1] == w[-2] and w[-1].isalpha() and w[-1] not in "aeiou":
        w = w[:-1]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


class VariantCheck:
    """Is ``candidate`` the original word, or a case / inflection variant of it?"""

    def __init__(self, lemma_fn=None):
        self.lemma_fn = lemma_fn or (lambda w, pos: w)
        self._forms = lru_cache(maxsize=200_000)(self._word_forms)

    def _word_forms(self, word: str, pos: str) -> frozenset:
        w = word.lower()
        lemma = self.lemma_fn(w, pos)
        return frozenset((w, lemma, crude_stem(w), crude_stem(lemma)))

    def forms(self, word: str, pos: str, context_lemma: Optional[str] = None) -> frozenset:
        out = self._forms(word, pos)
        return out | {context_lemma, crude_stem(context_lemma)} if context_lemma else out

    def __call__(self, original_forms: frozenset, candidate: str, pos: str) -> bool:
        return not original_forms.isdisjoint(self._forms(candidate, pos))


# ----------------------------------------------------------------------------- casing
def is_sentence_initial(text: str, start: int) -> bool:
    before = text[:start].rstrip()
    return not before or before[-1] in _SENTENCE_END


def recase(word: str, slot: str, slot_initial: bool, word_initial: bool = False) -> str:
    """Give ``word`` the capitalisation of the ``slot`` it goes into (sentence-initial, ALL CAPS)."""
    if word_initial and word[:1].isupper() and word[1:] == word[1:].lower():
        word = word[:1].lower() + word[1:]  # undo the capital it had only for starting a sentence
    if len(slot) > 1 and slot.isupper():
        return word.upper()
    if slot[:1].isupper() and (slot_initial or slot[1:] == slot[1:].lower()):
        return word[:1].upper() + word[1:]
    return word


def swap_case(word: str, word_initial: bool, slot: str, slot_initial: bool) -> str:
    """Casing of a noun moved by a swap: it keeps its own (an acronym stays one, "man" does not become
    "MAN" in the place of "TV"); only the capital that marks a sentence start stays with the position."""
    if word_initial and word[:1].isupper() and word[1:] == word[1:].lower():
        word = word[:1].lower() + word[1:]
    if slot_initial and slot[:1].isupper():
        word = word[:1].upper() + word[1:]
    return word


