"""Fillers: candidate words for a masked slot. :class:`MLMFiller` asks a ``transformers`` masked LM
(tokenizer side in :mod:`.mlm_tokens`, model side in :mod:`.mlm_model`); :class:`RemoteMLMFiller` is its
tokenizer side in front of a model that runs elsewhere (a GPU process, a Ray actor); :class:`VocabFiller`
offers same-tag words of the corpus's own captions (no model).

A filler works on a whole chunk: ``submit(slots)`` starts the work and returns a handle (a remote
model computes while the caller tags the next chunk), ``collect(handle)`` returns the candidates, and
``choose_all`` picks one word per slot (:func:`~.edits.choose_fill`'s rules).
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

import numpy as np

from .edits import FILL_POS, FillRequest, RankedChooser, choose_fill
from .mlm_tokens import FillBatch, FillSlots, MLMEncoder, MLMVocab, load_tokenizer, max_length_for
from .words import VariantCheck, is_word

if TYPE_CHECKING:
    from .tagging import SpacyTagger, Tok

log = logging.getLogger(__name__)

DEFAULT_FILLER_MODEL = "distilroberta-base"


class Filler:
    """Interface: ``submit(slots) -> handle``, ``collect(handle) -> candidates``, ``choose_all``;
    ``fill(requests) -> candidate words per request`` for simple use.

    ``ranked``: the candidates are best-first and the generator draws among the top-k of them;
    otherwise they are an unordered pool and the generator draws among all of them.
    """

    ranked = True
    name = "filler"

    def submit(self, slots: FillSlots):
        raise NotImplementedError

    def collect(self, handle):
        raise NotImplementedError

    def words_of(self, candidates, i: int) -> List[str]:
        """The candidate words of slot ``i`` (best first when ``ranked``)."""
        return candidates[i]

    def choose_all(self, candidates, originals: Sequence[str], toks: Sequence["Tok"], rngs: Sequence[random.Random],
                   top_k: int, variants: VariantCheck, known) -> List[Optional[str]]:
        return [choose_fill(self.words_of(candidates, i), o, t, r, top_k, self.ranked, variants, known)
                for i, (o, t, r) in enumerate(zip(originals, toks, rngs))]

    def fill(self, requests: Sequence[FillRequest]) -> List[List[str]]:
        if not requests:
            return []
        cands = self.collect(self.submit(FillSlots.from_requests(requests)))
        return [list(self.words_of(cands, i)) for i in range(len(requests))]

    def describe(self) -> Dict[str, object]:
        return {"filler": self.name}


class MLMTokens(Filler):
    """The tokenizer side of a masked-LM filler; subclasses say where the model runs (``_start`` /
    ``_finish``). Candidates are (slots, k) vocabulary columns, best first, -1 for none."""

    ranked = True
    name = "mlm"

    def __init__(self, model: str = DEFAULT_FILLER_MODEL, max_length: int = 128):
        self.model_name = model
        self.tokenizer = load_tokenizer(model)
        self.max_length = max_length_for(model, self.tokenizer, max_length)
        self.vocab = MLMVocab(self.tokenizer, model)
        self.encoder = MLMEncoder(self.tokenizer, self.max_length)
        self._chooser: Optional[RankedChooser] = None
        self._chooser_key = None

    def _start(self, batch: FillBatch):
        raise NotImplementedError

    def _finish(self, handle) -> np.ndarray:
        raise NotImplementedError

    def submit(self, slots: FillSlots):
        return self._start(self.encoder.encode(slots)) if len(slots) else None

    def collect(self, handle) -> np.ndarray:
        if handle is None:
            return np.zeros((0, 0), dtype=np.int32)
        return self._finish(handle)

    def words_of(self, candidates, i: int) -> List[str]:
        return [self.vocab.words[c] for c in candidates[i].tolist() if c >= 0]

    def choose_all(self, candidates, originals, toks, rngs, top_k, variants, known):
        key = (id(variants), id(known))
        if self._chooser is None or self._chooser_key != key:
            self._chooser = RankedChooser(self.vocab.words, self.vocab.fill_word, self.vocab.is_lower, variants, known,
                                          self.vocab.allow)
            self._chooser_key = key
        return self._chooser.choose_all(candidates, originals, toks, rngs, top_k)


class MLMFiller(MLMTokens):
    """Batched masked-LM fills with ``transformers`` in this process: the vocabulary projection runs
    only at the masked positions and only over the admissible word tokens; fp32 on CPU, fp16 on GPU.

    ``model``: a hub name or a local directory holding a masked LM and its tokenizer.
    """

    def __init__(self, model: str = DEFAULT_FILLER_MODEL, device: str = "cpu", batch_size: int = 256,
                 n_candidates: int = 40, max_length: int = 128, half: Optional[bool] = None):
        from .mlm_model import MLMScorer

        super().__init__(model, max_length)
        self.scorer = MLMScorer(model, self.vocab, self.encoder.pad_id, self.encoder.mask_id, device=device,
                                batch_size=batch_size, n_candidates=n_candidates, half=half)
        self.device, self.half, self.batch_size = self.scorer.device, self.scorer.half, batch_size
        self.model = self.scorer.model

    def describe(self) -> Dict[str, object]:
        return {"filler": self.name, "filler_model": self.model_name, **self.scorer.describe()}

    def _start(self, batch: FillBatch):
        return batch  # computed when collected: the caller has nothing to overlap with on this device

    def _finish(self, handle) -> np.ndarray:
        return self.scorer.topk(handle)


class RemoteMLMFiller(MLMTokens):
    """The tokenizer side here, the model elsewhere: ``send(batch) -> handle`` and ``receive(handle) ->
    columns`` (a GPU process of the local engine, a Ray actor)."""

    def __init__(self, model: str, send: Callable[[FillBatch], object], receive: Callable[[object], np.ndarray],
                 max_length: int = 128):
        super().__init__(model, max_length)
        self.send, self.receive = send, receive

    def _start(self, batch: FillBatch):
        return self.send(batch)

    def _finish(self, handle) -> np.ndarray:
        return self.receive(handle)


class VocabFiller(Filler):
    """Offline filler: words with the same fine-grained tag (``NNS``, ``VBG``, ``JJ``...) taken from the
    corpus's own captions, so inflection matches without any model. Build with :meth:`from_captions`:
    only words an edit could replace are taken (:mod:`.alttext`), those of Title Case / ALL-CAPS
    captions in lowercase."""

    ranked = False
    name = "vocab"

    def __init__(self, vocab: Dict[str, List[str]]):
        self.vocab = {tag: list(words) for tag, words in vocab.items()}

    @classmethod
    def from_captions(cls, tagger: "SpacyTagger", captions: Sequence[str], per_tag: int = 2000,
                      min_count: int = 2) -> "VocabFiller":
        from .alttext import CaptionTagger, case_normalised

        counts: Dict[str, Dict[str, int]] = {}
        for text, toks in zip(captions, CaptionTagger(tagger).tag(captions)):
            any_case = case_normalised(text) is not None  # Title Case / ALL CAPS: its words in lowercase
            for t in toks:
                if t.pos in FILL_POS.values():
                    w = text[t.start:t.end]
                    if is_word(w) and (w == w.lower() or t.start == 0 or any_case):
                        bucket = counts.setdefault(t.tag, {})
                        bucket[w.lower()] = bucket.get(w.lower(), 0) + 1
        vocab = {
            tag: [w for w, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:per_tag] if n >= min_count]
            for tag, c in sorted(counts.items())
        }
        return cls({t: ws for t, ws in vocab.items() if ws})

    def submit(self, slots: FillSlots):
        return [self.vocab.get(tag, []) for tag in slots.tag]

    def collect(self, handle):
        return handle

    def describe(self) -> Dict[str, object]:
        return {"filler": self.name, "vocab_words": {t: len(w) for t, w in self.vocab.items()}}
