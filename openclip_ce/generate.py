"""Hard-negative captions (CE-CLIP paper, section 3.1): spaCy POS tags, a noun swap, masked-LM fills.

For every caption four negatives are made, each independently:

* ``rel``: two different nouns (runs of consecutive ``NOUN`` tokens, so "tennis racket" moves as one)
  swap places;
* ``att`` / ``act`` / ``obj``: one ``ADJ`` / ``VERB`` / ``NOUN`` token is masked and refilled by a
  :class:`MLMFiller` (a ``transformers`` masked LM) or a :class:`VocabFiller` (same-tag words of the
  corpus's own vocabulary, no model needed).

Everything operates on spaCy's character offsets: the rest of the caption, whitespace included, is
kept exactly. A type whose required words are absent gives ``None`` (never a lone ``<mask>`` fill).
A fill is never the original word nor a case or inflection variant of it (same lowercase, same
lemma or same crude stem), never punctuation, a sub-word fragment, a number or an empty string.

Determinism: every random choice comes from a ``random.Random`` seeded by ``(seed, sample key,
type)``, never by process, worker or batch. The MLM choice is uniform over the *set* of the top-k
admissible words (sorted alphabetically before drawing), so the rank order among the top-k, which
tiny floating-point differences between batch compositions could flip, does not matter; only a
near-tie exactly at the k-th place could. On CPU (fp32) with a fixed model this did not happen in
the tests; in fp16 on a GPU, such boundary ties are more frequent, so outputs made on different
device types can differ for a small fraction of samples (documented in the README).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

from .negatives import NEG_TYPES, Negatives, empty_negatives

log = logging.getLogger("openclip_ce.generate")

FILL_POS: Dict[str, str] = {"att": "ADJ", "act": "VERB", "obj": "NOUN"}
DEFAULT_SPACY_MODEL = "en_core_web_sm"
DEFAULT_FILLER_MODEL = "distilroberta-base"
_SPACY_EXCLUDE = ["parser", "ner", "senter", "textcat", "textcat_multilabel", "entity_ruler", "entity_linker"]

# A whole word: letters, optionally joined by single hyphens / apostrophes ("t-shirt", "o'clock").
_WORD_RE = re.compile(r"^[^\W\d_]+(?:['\-][^\W\d_]+)*$")
_SENTENCE_END = ".!?"
# Penn tags of base forms: the lemmatizer keeps these words as they are (spaCy decides so from the
# morphology the attribute ruler sets; here from the tag directly)
_BASE_FORM_TAGS = frozenset(("NN", "JJ", "VB", "VBP"))


class GenerationSetupError(RuntimeError):
    """A model (spaCy or masked LM) that cannot be loaded; the message says what to do."""


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


# ----------------------------------------------------------------------------- tagging
@dataclass(frozen=True)
class Tok:
    """One spaCy token as character offsets into the caption (``text[start:end]``)."""

    start: int
    end: int
    pos: str
    tag: str
    lemma: str


Tagged = Tuple[Tok, ...]


class SpacyTagger:
    """spaCy with only what POS tags and lemmas need (no parser, no NER), batched with ``nlp.pipe``."""

    def __init__(self, model: str = DEFAULT_SPACY_MODEL, batch_size: int = 256):
        import spacy

        try:
            self.nlp = spacy.load(model, exclude=_SPACY_EXCLUDE)
        except OSError as e:
            raise GenerationSetupError(
                f"spaCy model {model!r} cannot be loaded ({str(e).splitlines()[0]}); install it "
                f"(python -m spacy download {model}) or choose another with --spacy-model"
            ) from None
        missing = [p for p in ("tagger", "attribute_ruler") if p not in self.nlp.pipe_names]
        if missing and "morphologizer" not in self.nlp.pipe_names:
            raise GenerationSetupError(f"spaCy model {model!r} has no POS tagger (pipes {self.nlp.pipe_names})")
        self.batch_size = batch_size
        self._lemmatizer = self.nlp.get_pipe("lemmatizer") if "lemmatizer" in self.nlp.pipe_names else None
        self.lemma = lru_cache(maxsize=200_000)(self._lemma)
        self._pos_table = self._attribute_table()
        self._fast_disable = [p for p in ("attribute_ruler", "lemmatizer") if p in self.nlp.pipe_names]
        self._index = self._dictionary()
        self.known = lru_cache(maxsize=200_000)(self._known)
        if self._index is None:
            log.warning("spaCy model %s has no lemma index: fills are not checked against a dictionary", model)

    def _dictionary(self):
        """The lemmatizer's per-POS word lists (WordNet-derived ``lemma_index``), if the model has them."""
        try:
            table = self._lemmatizer.lookups.get_table("lemma_index")
            return {pos: frozenset(table[pos.lower()]) for pos in ("NOUN", "VERB", "ADJ")}
        except Exception:
            return None

    def _known(self, word: str, pos: str) -> bool:
        """Is ``word`` (any case, any inflection) a dictionary word of this POS? True without a dictionary."""
        if self._index is None or pos not in self._index:
            return True
        w = word.lower()
        return w in self._index[pos] or self.lemma(w, pos) in self._index[pos]

    def tag(self, texts: Sequence[str]) -> List[Tagged]:
        if self._pos_table is None:  # the model's own attribute ruler and lemmatizer
            return [
                tuple(Tok(t.idx, t.idx + len(t.text), t.pos_, t.tag_, t.lemma_.lower()) for t in doc)
                for doc in self.nlp.pipe(texts, batch_size=self.batch_size)
            ]
        out = []
        table = self._pos_table
        for doc in self.nlp.pipe(texts, batch_size=self.batch_size, disable=self._fast_disable):
            toks = []
            for t in doc:
                tag = t.tag_
                pos = "SPACE" if t.is_space else table.get((tag, t.lower_)) or table.get((tag, None)) or "X"
                inflected = pos in ("NOUN", "VERB", "ADJ") and tag not in _BASE_FORM_TAGS
                lemma = self.lemma(t.lower_, pos) if inflected else t.lower_
                toks.append(Tok(t.idx, t.idx + len(t.text), pos, tag, lemma))
            out.append(tuple(toks))
        return out

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

    def _lemma(self, word: str, pos: str) -> str:
        """Lemma of a lowercase word out of context, given its coarse POS (rule lemmatizer)."""
        if self._lemmatizer is None:
            return word
        from spacy.tokens import Doc

        doc = Doc(self.nlp.vocab, words=[word], pos=[pos])
        try:
            self._lemmatizer(doc)
        except Exception:  # a lemmatizer that needs more context: fall back to the word itself
            return word
        return doc[0].lemma_.lower() or word


# ----------------------------------------------------------------------------- variants
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
def _is_initial(text: str, start: int) -> bool:
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


# ----------------------------------------------------------------------------- rel
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
    init1, init2 = _is_initial(text, s1), _is_initial(text, s2)
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


class Filler:
    """Interface: ``fill(requests) -> candidate words per request``.

    ``ranked``: the candidates are best-first and the generator draws among the top-k of them;
    otherwise they are an unordered pool and the generator draws among all of them.
    """

    ranked = True
    name = "filler"

    def fill(self, requests: Sequence[FillRequest]) -> List[List[str]]:
        raise NotImplementedError

    def describe(self) -> Dict[str, object]:
        return {"filler": self.name}


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


# ----------------------------------------------------------------------------- generator
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
                new = recase(word, original, _is_initial(text, tok.start))
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


# ----------------------------------------------------------------------------- MLM filler
def _split_head(model):
    """(transform, decoder weight, decoder bias) of a masked-LM head, to project only masked positions."""
    import torch.nn.functional as F

    head = getattr(model, "lm_head", None)
    if head is not None and all(hasattr(head, a) for a in ("dense", "layer_norm", "decoder")):  # RoBERTa family
        bias = head.bias if getattr(head, "bias", None) is not None else head.decoder.bias
        return (lambda x: head.layer_norm(F.gelu(head.dense(x)))), head.decoder.weight, bias
    cls = getattr(model, "cls", None)
    if cls is not None and hasattr(cls, "predictions"):  # BERT family
        p = cls.predictions
        bias = p.decoder.bias if getattr(p.decoder, "bias", None) is not None else p.bias
        return p.transform, p.decoder.weight, bias
    if hasattr(model, "vocab_projector"):  # DistilBERT
        return (lambda x: model.vocab_layer_norm(model.activation(model.vocab_transform(x)))), \
            model.vocab_projector.weight, model.vocab_projector.bias
    return None


class MLMFiller(Filler):
    """Batched masked-LM fills with ``transformers``: the vocabulary projection runs only at the
    masked positions and only over the admissible word tokens; fp32 on CPU, fp16 on GPU.

    ``model``: a hub name or a local directory holding a masked LM and its tokenizer.
    """

    ranked = True
    name = "mlm"

    def __init__(self, model: str = DEFAULT_FILLER_MODEL, device: str = "cpu", batch_size: int = 256,
                 n_candidates: int = 40, max_length: int = 128, half: Optional[bool] = None):
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bar / log lines only
        self.model_name, self.batch_size, self.n_candidates = model, batch_size, n_candidates
        self.device = torch.device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForMaskedLM.from_pretrained(model)
        except Exception as e:  # OSError, ValueError, HTTP errors: one clear line
            raise GenerationSetupError(
                f"cannot load the masked LM {model!r} ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
                f"pass a local directory with --filler-model, or use --filler vocab (no model needed)"
            ) from None
        if self.tokenizer.mask_token_id is None:
            raise GenerationSetupError(f"the tokenizer of {model!r} has no mask token: not a masked LM")
        self.half = (self.device.type == "cuda") if half is None else half
        self.model.to(self.device, dtype=torch.float16 if self.half else torch.float32).eval()
        limit = getattr(self.model.config, "max_position_embeddings", 512) or 512
        if getattr(self.model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            limit -= 2  # RoBERTa positions start after the padding index
        self.max_length = max(8, min(max_length, limit, self.tokenizer.model_max_length or limit))
        self._build_vocab_tables()
        self._head = _split_head(self.model)
        if self._head is None:
            log.warning("filler %s: unknown masked-LM head layout; projecting the full vocabulary at every position",
                        model)

    def describe(self) -> Dict[str, object]:
        return {"filler": self.name, "filler_model": self.model_name, "device": str(self.device),
                "half": self.half}

    def _build_vocab_tables(self) -> None:
        import torch

        tok = self.tokenizer
        vocab_size = len(tok)
        pieces = tok.convert_ids_to_tokens(list(range(vocab_size)))
        special = set(tok.all_special_ids)
        if any(p.startswith("Ġ") for p in pieces if p):
            scheme = "bytelevel"  # GPT-2/RoBERTa: word-initial pieces carry "Ġ"
        elif any(p.startswith("▁") for p in pieces if p):
            scheme = "sentencepiece"
        else:
            scheme = "wordpiece"  # BERT: continuation pieces carry "##"
        words: List[Optional[str]] = [None] * vocab_size
        vocab = set(pieces)
        after_space, no_space = [], []
        for i, p in enumerate(pieces):
            if i in special or not p:
                continue
            if scheme == "wordpiece":
                if p.startswith("##"):
                    continue
                word, initial = p, True
            else:
                marker = "Ġ" if scheme == "bytelevel" else "▁"
                initial = p.startswith(marker)
                word = tok.convert_tokens_to_string([p]).strip()
            if not is_word(word):
                continue
            words[i] = word
            if scheme == "bytelevel" and not initial and not ({"Ġ" + word, "Ġ" + word.lower(), "Ġ" + word.capitalize()}
                                                            & vocab):
                continue  # a piece without a whole-word twin: a fragment ("ing"), even at the caption start
            if scheme != "bytelevel" or initial:
                after_space.append(i)
            if scheme != "bytelevel" or not initial:
                no_space.append(i)
        union = sorted(set(after_space) | set(no_space))
        if not union:
            raise GenerationSetupError(f"the vocabulary of {self.model_name!r} has no whole-word tokens")
        pos = {t: j for j, t in enumerate(union)}
        self._union = torch.tensor(union, dtype=torch.long)
        self._words = [words[t] for t in union]
        allow = torch.zeros(2, len(union), dtype=torch.bool)  # row 0: after a space, row 1: no space
        allow[0, [pos[t] for t in after_space]] = True
        if no_space:
            allow[1, [pos[t] for t in no_space]] = True
        self._allow = allow.to(self.device)
        self._scheme = scheme

    def _encode(self, requests: Sequence[FillRequest]) -> List[List[int]]:
        """Token ids with the word masked: each distinct caption is tokenized once (a caption usually
        has several fill requests), the word's tokens are replaced by one mask token using the
        character offsets, and long contexts are windowed around the mask."""
        tok = self.tokenizer
        texts = list(dict.fromkeys(r.left + r.word + r.right for r in requests))
        enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
        by_text = {t: (ids, offs) for t, ids, offs in zip(texts, enc["input_ids"], enc["offset_mapping"])}
        budget = self.max_length - 3
        bos = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        eos = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        out = []
        for r in requests:
            ids, offs = by_text[r.left + r.word + r.right]
            start, end = len(r.left), len(r.left) + len(r.word)
            left = [i for i, (a, b) in zip(ids, offs) if b <= start]
            right = [i for i, (a, b) in zip(ids, offs) if a >= end and b > a]
            nl = min(len(left), max(budget // 2, budget - len(right)))
            nr = min(len(right), budget - nl)
            seq = ([bos] if bos is not None else []) + left[len(left) - nl:] + [tok.mask_token_id] + right[:nr]
            out.append(seq + ([eos] if eos is not None else []))
        return out

    def fill(self, requests: Sequence[FillRequest]) -> List[List[str]]:
        import torch

        if not requests:
            return []
        seqs = self._encode(requests)
        order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i]), i))
        result: List[List[str]] = [[] for _ in requests]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        mask_id = self.tokenizer.mask_token_id
        k = min(self.n_candidates, len(self._words))
        with torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                idx = order[b:b + self.batch_size]
                width = max(len(seqs[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                att = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids[row, :len(seqs[i])] = torch.tensor(seqs[i])
                    att[row, :len(seqs[i])] = 1
                ids, att = ids.to(self.device), att.to(self.device)
                at = (ids == mask_id).int().argmax(dim=1)
                scores = self._masked_scores(ids, att, at).float()
                space = torch.tensor([0 if requests[i].space_before else 1 for i in idx], device=self.device)
                scores = scores.masked_fill(~self._allow[space], float("-inf"))
                top = scores.topk(k, dim=1)
                for row, i in enumerate(idx):
                    vals, cols = top.values[row].tolist(), top.indices[row].tolist()
                    result[i] = [self._words[c] for v, c in zip(vals, cols) if v != float("-inf")]
        return result

    def _masked_scores(self, ids, att, at):
        import torch

        rows = torch.arange(ids.shape[0], device=ids.device)
        if self._head is None:
            logits = self.model(input_ids=ids, attention_mask=att).logits[rows, at]
            return logits[:, self._union.to(ids.device)]
        transform, weight, bias = self._head
        hidden = self.model.base_model(input_ids=ids, attention_mask=att)[0][rows, at]
        union = self._union.to(ids.device)
        logits = transform(hidden) @ weight[union].T
        return logits + bias[union] if bias is not None else logits


# ----------------------------------------------------------------------------- vocab filler
class VocabFiller(Filler):
    """Offline filler: words with the same fine-grained tag (``NNS``, ``VBG``, ``JJ``...) taken from the
    corpus's own captions, so inflection matches without any model. Build with :meth:`from_captions`."""

    ranked = False
    name = "vocab"

    def __init__(self, vocab: Dict[str, List[str]]):
        self.vocab = {tag: list(words) for tag, words in vocab.items()}

    @classmethod
    def from_captions(cls, tagger: SpacyTagger, captions: Sequence[str], per_tag: int = 2000,
                      min_count: int = 2) -> "VocabFiller":
        counts: Dict[str, Dict[str, int]] = {}
        for text, toks in zip(captions, tagger.tag(captions)):
            for t in toks:
                if t.pos in FILL_POS.values():
                    w = text[t.start:t.end]
                    if is_word(w) and (w == w.lower() or t.start == 0):
                        bucket = counts.setdefault(t.tag, {})
                        bucket[w.lower()] = bucket.get(w.lower(), 0) + 1
        vocab = {
            tag: [w for w, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:per_tag] if n >= min_count]
            for tag, c in sorted(counts.items())
        }
        return cls({t: ws for t, ws in vocab.items() if ws})

    def fill(self, requests: Sequence[FillRequest]) -> List[List[str]]:
        return [self.vocab.get(r.tag, []) for r in requests]

    def describe(self) -> Dict[str, object]:
        return {"filler": self.name, "vocab_words": {t: len(w) for t, w in self.vocab.items()}}
