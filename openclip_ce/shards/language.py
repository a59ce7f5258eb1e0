"""Which captions are in a language make-shards edits (``--languages``, English by default).

The edits need an English tagger and an English dictionary: a German, Arabic or Japanese caption would
only get English words put into it. Such a caption passes through with null negatives and is counted
as ``other_language_caption``.

The language comes from CLD2 (``pycld2``: Chromium's compact language detector, its model compiled
into the wheel, nothing downloaded). Chosen by measurement on short captions (``docs/make-shards-alt-text.md``):
it keeps 99.6-100 % of English captions, three-word ones and Title Case ones included, where the
other candidates drop 12-42 % of them, and costs about 6 microseconds a caption (a few percent of
tagging). A caption most of whose letters are in a non-Latin script is another language (unless a
language written in one is selected); a caption CLD2 cannot place is kept.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence, Tuple

from ..errors import UserError

ALL = "all"
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]")
# C0/C1 control characters other than whitespace: CLD2 refuses text that holds them
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def parse_languages(spec: str) -> Tuple[str, ...]:
    """``"en"`` -> ``("en",)``; ``"all"`` -> ``()`` (no filter). Codes are ISO 639-1 as CLD2 reports them."""
    names = tuple(dict.fromkeys(s.strip().lower() for s in spec.split(",") if s.strip()))
    if not names:
        raise UserError("--languages: expected a comma-separated list of language codes (en, de, ...) or 'all'")
    if ALL in names:
        return ()
    bad = [n for n in names if not re.fullmatch(r"[a-z]{2,3}(-[a-z]{2,4})?", n)]
    if bad:
        raise UserError(f"--languages: {', '.join(bad)} is not a language code (ISO 639-1, e.g. en, de, fr) or 'all'")
    return names


class LanguageFilter:
    """``other(text)``: the language code of a caption outside ``languages``, or None to keep it."""

    def __init__(self, languages: Sequence[str]):
        self.languages = frozenset(languages)
        self._detect = None
        if self.languages:
            try:
                import pycld2
            except ImportError:  # pragma: no cover - a dependency of openclip-ce
                raise UserError("--languages needs pycld2 (pip install pycld2), or pass --languages all") from None
            self._detect, self._error = pycld2.detect, pycld2.error

    def other(self, text: str) -> Optional[str]:
        if self._detect is None:
            return None
        if not text.isascii() and not self.languages & _NON_LATIN:
            letters = sum(c.isalpha() for c in text)
            if len(_LATIN.findall(text)) * 2 < letters:  # mostly another script: not a language selected
                return "und"
        try:
            code = self._detect(text)[2][0][1]
        except self._error:
            try:
                code = self._detect(_CONTROL.sub(" ", text))[2][0][1]
            except (self._error, UnicodeError):
                code = "un"
        if code == "un":  # undetermined: kept
            return None
        code = code.split("-")[0].lower()
        return None if code in self.languages else code


# languages whose usual script is not Latin: selecting one keeps undetermined captions in other scripts
_NON_LATIN = frozenset("ar be bg bn el fa gu he hi hy ja ka kk km kn ko ky lo mk ml mn mr my ne or pa ru "
                       "si sr ta te th uk ur zh".split())
