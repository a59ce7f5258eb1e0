"""Fillers: candidate words for a masked slot. :class:`MLMFiller` asks a ``transformers`` masked LM
(batched, only the masked positions projected); :class:`VocabFiller` offers same-tag words of the
corpus's own captions (no model)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from . import GenerationSetupError
from .edits import FILL_POS, FillRequest
from .words import is_word

if TYPE_CHECKING:
    from .tagging import SpacyTagger

log = logging.getLogger("openclip_ce.generation")

DEFAULT_FILLER_MODEL = "distilroberta-base"


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


class VocabFiller(Filler):
    """Offline filler: words with the same fine-grained tag (``NNS``, ``VBG``, ``JJ``...) taken from the
    corpus's own captions, so inflection matches without any model. Build with :meth:`from_captions`."""

    ranked = False
    name = "vocab"

    def __init__(self, vocab: Dict[str, List[str]]):
        self.vocab = {tag: list(words) for tag, words in vocab.items()}

    @classmethod
    def from_captions(cls, tagger: "SpacyTagger", captions: Sequence[str], per_tag: int = 2000,
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
