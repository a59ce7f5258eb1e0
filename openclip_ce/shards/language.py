"""Which captions are in a language make-shards edits (``--languages``, English by default).

The edits need an English tagger and an English dictionary: a German, Arabic or Japanese caption would
only get English words put into it. Such a caption passes through with null negatives and is counted
as ``other_language_caption``.

The language comes from CLD2 (``pycld2``: Chromium's compact language detector, its model compiled
into the wheel, nothing downloaded). Chosen by measurement on short captions (``docs/make-shards-alt-text.md``):
it keeps 99.6-100 % of English captions, three-word ones and Title Case ones included, where the
other candidates drop 12-42 % of them, and costs about 6 microseconds a caption (a few percent of
tagging). A caption most of whose letters are in a non-Latin script is another language (unless a
language written in one is selected).

CLD2 places only half to three quarters of three-word captions in other languages, and calls many
short ones English, reliably by its own flag ("Collier initiale A or", "Come preparare e attuare un
piano di marketing"). So with ``--languages en`` (the default) a caption CLD2 calls English or cannot
place is also read word by word (:class:`EnglishCheck`), with the word frequencies of English and
20 other Latin-script languages in web text (:class:`WordFrequencies`, from ``wordfreq``, whose lists
ship inside its wheel): it is another language when its words are a hundred times likelier in one of
those languages than in English ("Chaussures Femme Tongs Havaianas YOU MAXI Orange", "Topper voor
arbiter Makkelie in Champions League"), or three times when one of its lowercase words is another
language's and no English word ("Jeggings in denim stretch con stampa glitter"), when its function
words are another language's (one is enough when it is the caption's only lowercase word: "Faculdade
dos Guararapes", "Diesel Sweat & Pull UMLT-Willy gris"), or when half or more of its lowercase words
are another language's words and no English ones ("Collier initiale A or"; a word no language knows,
a name or a typo, counts for none).
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import Callable, FrozenSet, Optional, Sequence, Tuple

from ..errors import UserError
from ..generation.names import LABEL_WORDS

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
    names = tuple(dict.fromkeys(_CLD2_NAMES.get(n, n) for n in names))
    known = _cld2_codes()
    unknown = [n for n in names if known and n not in known]
    if unknown:  # it would match no caption: every caption would lose its negatives
        raise UserError(f"--languages: {', '.join(unknown)} is no language that CLD2 identifies (codes such as en, "
                        f"de, fr, ja, zh; a region or script, as in zh-hant, is not part of the code)")
    return names


# ISO 639-1 codes that CLD2 reports under their older names
_CLD2_NAMES = {"he": "iw", "jv": "jw", "nb": "no"}


@functools.lru_cache(maxsize=1)
def _cld2_codes() -> FrozenSet[str]:
    """The codes of the languages CLD2 detects (not every one it names), without region or script
    ("zh-Hant" -> "zh") nor its "unknown" codes: what the filter compares. Empty without pycld2 (then
    nothing is checked here)."""
    try:
        import pycld2
    except ImportError:  # pragma: no cover - a dependency of openclip-ce
        return frozenset()
    detected = set(pycld2.DETECTED_LANGUAGES)
    return frozenset(code.split("-")[0].lower() for name, code in pycld2.LANGUAGES if name in detected) - {"un", "xx"}


# Latin-script languages whose stop words (spaCy's own lists, shipped with spaCy) mark a caption as theirs
_STOP_LANGUAGES = "ca cs da de es fi fr hr hu id it nb nl pl pt ro sk sl sv tr".split()
# words that are neither English nor another language: labels of the file and units (names.LABEL_WORDS),
# and words of the web and of today that WordNet (2006), spaCy's dictionary, does not hold
_MODERN = frozenset("""app apps blog blogs blogger bloggers ebook ebooks audiobook audiobooks email emails online website
websites iphone ipad ipod smartphone smartphones selfie selfies wifi podcast podcasts hashtag hashtags emoji emojis vlog
vlogger instagram facebook youtube twitter pinterest tumblr flickr etsy ebay amazon google whatsapp tiktok webcam webcams
biker bikers gameplay pictogram pictograms hoodie hoodies wetsuit wetsuits zipline motocross kickboxer kickboxers
kickboxing skatepark snowboarder snowboarders vape vaping texting infographic infographics screenshot screenshots apk
pk""".split())
_NEUTRAL = LABEL_WORDS | _MODERN
_ARTICLES = frozenset("de la le les des del el los las il di da du et der das ein een het un una une uma os en "
                      "con por para och med".split())
# other languages' words that the English dictionary also holds (as an abbreviation, a loan or a rare
# word) but that an English caption does not write in lowercase: function words ("dos", "mit", "sur")
# and colours of product titles ("Sweat & Pull UMLT-Willy gris")
_FOREIGN_HELD = frozenset("dos mit sur gris blanc bleu nero braun amarillo".split())
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)?")
_EDGE = ".,;:!?\"'()[]{}«»“”‘’*|"
_AFTER_NAME = frozenset(("by", "via", "from", "@"))


def _stop_words(lang: str) -> FrozenSet[str]:
    try:
        return frozenset(importlib.import_module(f"spacy.lang.{lang}.stop_words").STOP_WORDS)
    except (ImportError, AttributeError):  # pragma: no cover - spaCy ships these
        return frozenset()


class WordFrequencies:
    """How often each word is written in English and in the languages of ``_STOP_LANGUAGES``, from
    ``wordfreq``'s "small" lists (words at least once in a million in web text, subtitles, news, books,
    Wikipedia; about 640,000 words in all: loaded once per process, in about 0.4 s, the process growing
    by about 100 MB).

    Frequencies are in steps of 3 centibels below 1 (100 * -log10 of the frequency, divided by 3: "the"
    is 42); a word not in a language's list is taken as ``FLOOR`` there (once in ten million). A word's
    row (English first, then each other language) is made the first time the word is asked for."""

    STEP = 3
    FLOOR = 700 // STEP
    CODES = {"hr": "sh"}  # wordfreq lists Croatian as Serbo-Croatian

    def __init__(self, languages: Sequence[str] = _STOP_LANGUAGES):
        try:
            from wordfreq import get_frequency_list
        except ImportError:  # pragma: no cover - a dependency of openclip-ce
            raise UserError("--languages en needs wordfreq (pip install wordfreq), or pass --languages all") from None
        self.tables = []
        for code in ["en"] + [self.CODES.get(lang, lang) for lang in languages]:
            table = {}
            for cb, bucket in enumerate(get_frequency_list(code, "small")):
                table.update(dict.fromkeys(bucket, cb // self.STEP))
            self.tables.append(table)
        self._rows = {}

    def row(self, word: str) -> bytes:
        row = self._rows.get(word)
        if row is None:
            if len(self._rows) > 200_000:  # bounded memory per worker
                self._rows.clear()
            floor = self.FLOOR
            row = self._rows[word] = bytes([t.get(word, floor) for t in self.tables])
        return row

    def margin(self, words: Sequence[str]) -> float:
        """How many times (log10) likelier the lowercase ``words`` are in the likeliest other language
        than in English (naive Bayes over the words, no prior)."""
        en, *others = map(sum, zip(*map(self.row, words)))
        return (en - min(others)) * self.STEP / 100

    def theirs(self, word: str) -> bool:
        """Is the lowercase ``word`` ten times more frequent in some other language than in English?"""
        row = self.row(word)
        return (row[0] - min(row[1:])) * self.STEP > 100


@functools.lru_cache(maxsize=1)
def word_frequencies() -> WordFrequencies:
    """One table per process, shared by every filter it builds."""
    return WordFrequencies()


class EnglishCheck:
    """``foreign(text, sure)``: are the words of a caption CLD2 calls English (``sure``: by its
    reliability flag) or cannot place those of another language? ``english(word)``: a dictionary."""

    # the words of a caption at least a hundred times likelier in another language than in English, or
    # three times when one of its lowercase words is another language's and no English word
    MARGIN = 2.0
    MARGIN_WITH_THEIR_WORD = 0.5

    def __init__(self, english: Callable[[str], bool]):
        self.english = english
        self.frequencies = word_frequencies()
        en = _stop_words("en")
        other = frozenset().union(*(_stop_words(lang) for lang in _STOP_LANGUAGES))
        self.en_stop = en - other  # "the", "with": English only ("a", "on", "or" are French or Czech too)
        # another language's function words that are no English word ("und", "avec", "della"), and the
        # articles and prepositions the dictionary holds only as abbreviations ("de", "la", "el", "un")
        self.foreign_stop = frozenset(w for w in other - en if len(w) > 1 and w.isalpha()
                                      and (w in _ARTICLES or not english(w))) | _FOREIGN_HELD
        self._memo = {}

    def foreign(self, text: str, sure: bool) -> bool:
        """Only the plain words count: no part of a joined chunk ("hi-res", "T-shirt"), a number, an
        address or a file name, no label, and not the name after "by" / "via" / "from"."""
        own = theirs = unknown = lower = 0
        prev = ""
        words = []
        memo, en_stop, foreign_stop, freq = self._memo, self.en_stop, self.foreign_stop, self.frequencies
        for chunk in text.split():
            core = chunk.strip(_EDGE)
            low = core.lower()
            if prev not in _AFTER_NAME and low not in _NEUTRAL and _WORD.fullmatch(core):
                own += low in en_stop
                if len(core) > 1 or low == core:  # "a", not the initial or size "E", "U", "W"
                    words.append(low)
                if len(core) > 1 and (low == core or not _LATIN.search(core)):  # a capital in another script: no name
                    lower += 1
                    theirs += core in foreign_stop
                    known = memo.get(core)
                    if known is None:
                        if len(memo) > 200_000:  # bounded memory per worker
                            memo.clear()
                        # another language's word: no English word, and in another script or ten times more
                        # frequent in another language than in English (not a name or a typo: "jonestown")
                        known = memo[core] = self.english(core) or (
                            _LATIN.search(core) is not None and not freq.theirs(core))
                    unknown += not known
            prev = low
        # "de la", "und", "mit": another language's grammar; when CLD2 is sure of English, two such words,
        # or one that is all the lowercase words of the caption ("Faculdade dos Guararapes")
        if theirs > own and (theirs > 1 or not sure or theirs == lower):
            return True
        if unknown > 0 and unknown * 2 >= lower:  # "Collier initiale A or", "Dywan shaggy ... bordo"
            return True
        # two English-only function words ("the", "with"): English grammar, the frequencies are not asked
        if own > 1 or not words:
            return False
        # "Chaussures Femme Tongs Havaianas"; with a word of theirs: "Jeggings in denim stretch con stampa glitter"
        return freq.margin(words) > (self.MARGIN_WITH_THEIR_WORD if unknown else self.MARGIN)


class LanguageFilter:
    """``other(text)``: the language code of a caption outside ``languages``, or None to keep it.

    ``english(word)``: the English dictionary that checks the words of captions CLD2 calls English or
    cannot place when ``languages`` is English alone (:class:`EnglishCheck`; without one, or with other
    languages selected, CLD2 alone decides)."""

    def __init__(self, languages: Sequence[str], english: Optional[Callable[[str], bool]] = None):
        self.languages = frozenset(languages)
        self._detect = None
        # only when English is all that is selected: the check knows English words, not German or French ones
        self._words = EnglishCheck(english) if english is not None and self.languages == {"en"} else None
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
            reliable, _, found = self._detect(text)
        except self._error:
            try:
                reliable, _, found = self._detect(_CONTROL.sub(" ", text))
            except (self._error, UnicodeError):
                reliable, found = False, (("", "un", 0, 0.0),)
        code = found[0][1]
        if code in ("un", "en") and self._words is not None:
            return "und" if self._words.foreign(text, reliable and code == "en") else None
        if code == "un":  # undetermined: kept
            return None
        code = code.split("-")[0].lower()
        return None if code in self.languages else code


# languages whose usual script is not Latin: selecting one keeps undetermined captions in other scripts
_NON_LATIN = frozenset("ar be bg bn el fa gu he hi hy iw ja ka kk km kn ko ky lo mk ml mr my ne or pa ru "
                       "si sr ta te th uk ur yi zh".split())
