"""Web alt-text rules: which words of a caption an edit may touch, and how Title Case is tagged.

Alt-text is not a sentence: product titles in Title Case, sizes and codes ("2lb", "66cm"), HTML
fragments, URLs, file names and slugs, names and brands. :class:`CaptionTagger` wraps the spaCy
tagger so that every edit (the noun swap and the three fills) sees only the words it may change:
a token it may not change gets the part of speech ``X``, which no edit uses.

A word may be edited only when all of these hold:

* it is not glued to a letter or digit outside itself ("lb" of "2lb", "cm" of "66cm"), nor joined
  to one by a hyphen, slash, ampersand, plus, dot, colon or apostrophe ("shirt" of "T-shirt",
  "up" of "close-up") or by a symbol, an emoji or a lost character ("bit" of "a bit\ufffdon"), nor
  touching a hyphen, slash, ampersand or plus ("salt" of "salt& pepper"): a hyphenated word is
  replaced whole or not at all, and no edit replaces it whole, so it is left as it is; a possessive
  ``'s`` is not a join ("man" of "man's" is a word);
* it is not inside an HTML tag or entity, a URL, an attribute (``class="..."``), or a chunk of
  text that holds a path, file or domain name, an e-mail address or an underscore;
* it is written in Latin letters ("играть" of a caption in two scripts is never an English word);
* a word with a capital letter is a dictionary word of the part of speech it was tagged with (spaCy's
  WordNet-derived lemma index): one that is not is a name or a brand ("Erykah", "Badu", "Damen"),
  and is not edited, nor is the capitalised word right after it (:func:`name_words`: "Bronski Beat",
  "Dsd Tech"). A lowercase word is an English word of any part of speech or a stop word (a
  lowercase brand, user name or foreign word is not: "myveganlife", "gris", "initiale"); the check
  does not ask for the tagged part of speech, which would drop 4 % of COCO's adjective edits
  (nouns tagged as adjectives: "fire hydrant");
* it is not inside a name, a title or a label found from where it stands (:mod:`.names`: "Stock Photo",
  "by Orange Tree Toys", "The Walking Dead", a capital inside a sentence, ...).

Title Case and ALL-CAPS captions ("Kitchen Cabinet Storage Ideas by Larder With Fridge Freezer") are
tagged as a lowercase copy, so that spaCy sees their common nouns, adjectives and verbs instead of a
run of proper nouns; the edits then work on the original text, and a replacement takes the case of
the word it replaces (:func:`~.words.recase`).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable, FrozenSet, List, Optional, Sequence, Tuple

from .names import name_spans
from .tagging import STOP_WORDS, Tagged, Tok

EDITABLE_POS = frozenset(("NOUN", "VERB", "ADJ"))
BLOCKED_POS = "X"

# text an edit never enters: tags (also one cut off at the end), entities, URLs, attributes, and
# whitespace-delimited chunks with a path, file or domain name, an address or an underscore
_PROTECTED = re.compile(
    r"\S*<[A-Za-z/!?][^<>]*(?:>\S*|$)"
    r"|\S*&(?:#\d+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);?\S*"
    r"|(?:[A-Za-z][A-Za-z0-9+.-]*://|www\.)\S*"
    r"|[\w-]+\s*=\s*(?:\"[^\"]*\"?|'[^']*'?|\S*)"
    r"|\S*(?:[/\\_@=<>{}|~^]|\w\.\w)\S*"
)
# characters that join two words into one ("T-shirt", "AC/DC", "R&B", "U.S.A", "l'eau", "Typography,Phone",
# "Miles...$144K", "Ref…,978")
_JOINERS = frozenset("-\u2010\u2011\u2012\u2013\u2014/&+.,;:'\u2019_@\u2026$\u20ac\u00a3\u00a5%#")
# of those, the ones that make a joined word even when nothing stands on their other side ("V- Neck",
# "Salt& Pepper", "Logo- Black": half of a joined word written with a stray space)
_HALF_JOINERS = frozenset("-\u2010\u2011/&+")
_WORDS = re.compile(r"[^\W\d_]+")
_NAME_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")


# one of these is in every match of _PROTECTED: plain text (most captions) is ruled out by a cheap search
_PROTECTED_CHARS = re.compile(r"[<>&=/\\_@{}|~^]")
_PROTECTED_DOTS = re.compile(r"\w\.\w|www\.")


def protected_spans(text: str) -> List[Tuple[int, int]]:
    """Character spans of ``text`` that no edit may enter (empty for plain text)."""
    if not _PROTECTED_CHARS.search(text) and not ("." in text and _PROTECTED_DOTS.search(text)):
        return []
    return [m.span() for m in _PROTECTED.finditer(text)]


def case_normalised(text: str) -> Optional[str]:
    """A lowercase copy of a Title Case or ALL-CAPS caption, with the same offsets; None otherwise.

    Title Case: at least half of the words after the first start with a capital (and one at least
    does). ALL CAPS: four or more cased letters, at most a fifth of them lowercase."""
    if text[1:].islower():  # no capital after the first character ("A man riding a bike."): neither
        return None  # Title Case nor ALL CAPS
    words = _WORDS.findall(text)
    if not words:
        return None
    cased = sum(len(w) for w in words)
    lower_letters = sum(c.islower() for w in words for c in w)
    all_caps = cased >= 4 and lower_letters * 5 <= cased
    rest = words[1:]
    capitals = sum(w[0].isupper() for w in rest)
    title = capitals > 0 and capitals * 2 >= len(rest)
    if not (all_caps or title):
        return None
    low = text.lower()
    if len(low) != len(text):  # a character whose lowercase is longer ("İ"): map one by one
        low = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    return low


def _joins(char: str) -> bool:
    """Does the non-ASCII ``char``, not one of the joiners, join the words on its sides? Any character but
    letters, digits, spaces and punctuation does: a symbol, an emoji, a combining mark, a zero-width joiner
    or a soft hyphen, the replacement character of a lost one ("backtracks\ufffda bit\ufffdon")."""
    return not char.isspace() and unicodedata.category(char)[0] in "SCM"


def _glued(text: str, start: int, end: int) -> bool:
    """Is ``text[start:end]`` joined to a letter or digit outside it, directly or by joining characters
    ("T-shirt", "Chair--Beige", "Seat\U0001F469Recliner"), or touching a hyphen, slash, ampersand or plus
    ("Salt& Pepper")? A possessive ('s, ’s) is not a join."""
    i = start - 1
    while i >= 0 and (text[i] in _JOINERS or (text[i] > "\x7f" and _joins(text[i]))):
        i -= 1
    if (i >= 0 and text[i].isalnum()) or (i < start - 1 and not _HALF_JOINERS.isdisjoint(text[i + 1:start])):
        return True
    j = end
    while j < len(text) and (text[j] in _JOINERS or (text[j] > "\x7f" and _joins(text[j]))):
        j += 1
    if j > end and not _HALF_JOINERS.isdisjoint(text[end:j]):
        return True
    if j < len(text) and text[j].isalnum():
        possessive = (j == end + 1 and text[end] in "'\u2019" and text[j] in "sS"
                      and (j + 1 == len(text) or not text[j + 1].isalnum()))
        return not possessive
    return False


def _latin(word: str) -> bool:
    """Every letter of ``word`` is a Latin one ("café" is, "играть" is not: never an English word)."""
    return all(c < "\u0250" or "\u1e00" <= c < "\u1f00" for c in word if c.isalpha())


def name_words(text: str, toks: Tagged, english: Callable[[str], bool]) -> FrozenSet[int]:
    """Indexes of the tokens of a name that holds a word no dictionary has: a capitalised non-word
    ("Bronski", "Dsd", "JacketFlap") and the capitalised word right after it, joined by one space and
    not a stop word ("Bronski Beat", "Dsd Tech", "JacketFlap Blog"; "Dsd Tech For Gopro": not "For").

    Only the word after: in a brand and its product ("Glenni Coffee Table") the product's last words
    stay editable. The whole capitalised run, or the word before a name too ("Palm Atlantis"), would
    leave many more LAION product titles without a negative (docs/make-shards-alt-text.md)."""
    names = None
    for i, t in enumerate(toks):
        word = text[t.start:t.end]
        if word[:1].isupper() and len(word) > 1 and _NAME_WORD.fullmatch(word) and not english(word):
            if names is None:
                names = set()
            names.add(i)
            if i + 1 < len(toks):
                after = toks[i + 1]
                nxt = text[after.start:after.end]
                if (text[t.end:after.start] == " " and nxt[:1].isalpha() and not nxt.islower()
                        and nxt.lower() not in STOP_WORDS):
                    names.add(i + 1)
    return frozenset(names) if names else frozenset()


class CaptionTagger:
    """``tag(texts)``: the spaCy tags of each caption, with every token no edit may touch set to
    :data:`BLOCKED_POS`. Title Case / ALL-CAPS captions are tagged as a lowercase copy. ``tagger``: a
    :class:`~.tagging.SpacyTagger` (its ``known`` and ``english`` dictionaries)."""

    def __init__(self, tagger):
        self.tagger = tagger
        self.lemma, self.known = tagger.lemma, tagger.known
        self.english = getattr(tagger, "english", lambda word: True)

    def tag(self, texts: Sequence[str]) -> List[Tagged]:
        copies = [case_normalised(t) for t in texts]
        tagged = self.tagger.tag([c if c is not None else t for t, c in zip(texts, copies)])
        return [self._editable(text, toks) for text, toks in zip(texts, tagged)]

    def _editable(self, text: str, toks: Tagged) -> Tagged:
        spans = None
        names = None
        out = None
        known, english = self.known, self.english
        for i, t in enumerate(toks):
            if t.pos not in EDITABLE_POS:
                continue
            word = text[t.start:t.end]
            ok = (not _glued(text, t.start, t.end) and (word.isascii() or _latin(word))
                  and (english(word) if word.islower() else known(word, t.pos)))
            if ok:
                if spans is None:
                    spans = protected_spans(text) + name_spans(text)
                ok = not any(s < t.end and t.start < e for s, e in spans)
            if ok and not word.islower():
                if names is None:
                    names = name_words(text, toks, english)
                ok = i not in names
            if not ok:
                if out is None:
                    out = list(toks)
                out[i] = Tok(t.start, t.end, BLOCKED_POS, t.tag, t.lemma)
        return toks if out is None else tuple(out)
