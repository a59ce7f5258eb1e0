"""The tokenizer side of the masked-LM filler: which vocabulary entries may fill a slot, and the masked
token sequences of a whole chunk, built with numpy (no Python loop per token).

This side runs where the captions are tagged (a make-shards worker, a Ray shard task); the model side
(:mod:`.mlm_model`) only receives a :class:`FillBatch` of token ids and answers with vocabulary
columns, so a GPU process spends its CPU on nothing but the model.

Why the encoding is exactly what it was: every caption is tokenized whole, with character offsets
(so "wooden" after "A " is the token it is in the caption); the word's tokens are replaced by one mask
token; contexts longer than the model's positions are windowed around the mask, half each side or
what the shorter side leaves. The same ids, the same order of requests, the same batches: the output
bytes did not change (``tests/shards/test_golden.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import List, Optional, Sequence

import numpy as np

from . import GenerationSetupError, bpe_pieces
from .words import is_fill_word, is_word


@dataclass
class FillSlots:
    """The masked words of one chunk: slot ``i`` is ``texts[text[i]][start[i]:end[i]]``."""

    texts: Sequence[str]
    text: np.ndarray    # int64, index into texts
    start: np.ndarray   # int64, character offsets
    end: np.ndarray
    pos: List[str]      # coarse POS of each slot (ADJ / VERB / NOUN)
    tag: List[str]      # fine tag (the vocabulary filler's key)

    def __len__(self) -> int:
        return len(self.pos)

    @classmethod
    def from_requests(cls, requests) -> "FillSlots":
        """Slots of :class:`~.edits.FillRequest` objects (each distinct caption once)."""
        index, texts, text_of = {}, [], []
        for r in requests:
            t = r.left + r.word + r.right
            if t not in index:
                index[t] = len(texts)
                texts.append(t)
            text_of.append(index[t])
        start = np.fromiter((len(r.left) for r in requests), np.int64, len(requests))
        end = start + np.fromiter((len(r.word) for r in requests), np.int64, len(requests))
        return cls(texts, np.asarray(text_of, dtype=np.int64), start, end, [r.pos for r in requests],
                   [r.tag for r in requests])

    def space_before(self) -> np.ndarray:
        """Does slot ``i`` follow whitespace (bool per slot): it decides which vocabulary row applies."""
        return np.fromiter((s > 0 and self.texts[t][s - 1].isspace() for t, s in zip(self.text.tolist(),
                                                                                 self.start.tolist())),
                           bool, len(self))


@dataclass
class FillBatch:
    """What the model side needs: the masked sequences, concatenated (``ids``), their ``lengths``, and
    per sequence the vocabulary row (0: the slot follows a space, 1: it does not). Picklable, small."""

    ids: np.ndarray      # int64
    lengths: np.ndarray  # int64
    row: np.ndarray      # int64, 0 or 1

    def __len__(self) -> int:
        return len(self.lengths)


class MLMVocab:
    """The vocabulary entries that may fill a slot: whole words only, as columns ``0..len(words)-1``.

    ``union``: their token ids; ``words``: the word of each column; ``allow``: (2, columns) bool, row 0
    for a slot after a space, row 1 for one without (byte-level BPE marks word-initial pieces with
    "Ġ"); ``fill_word`` / ``is_lower``: per column, for the word filters (:class:`~.edits.RankedChooser`).
    """

    def __init__(self, tokenizer, model_name: str = ""):
        tok = tokenizer
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
            raise GenerationSetupError(f"the vocabulary of {model_name!r} has no whole-word tokens")
        col = {t: j for j, t in enumerate(union)}
        self.scheme = scheme
        self.union = np.asarray(union, dtype=np.int64)
        self.words: List[str] = [words[t] for t in union]
        self.allow = np.zeros((2, len(union)), dtype=bool)
        self.allow[0, [col[t] for t in after_space]] = True
        if no_space:
            self.allow[1, [col[t] for t in no_space]] = True
        self.fill_word = np.fromiter((is_fill_word(w) for w in self.words), bool, len(union))
        self.is_lower = np.fromiter((w == w.lower() for w in self.words), bool, len(union))

    def __len__(self) -> int:
        return len(self.words)


def _bos_eos(tok):
    bos = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    eos = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    return bos, eos


def _starts(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=out[1:])
    return out


def _rank(flags: np.ndarray, group_sizes: np.ndarray) -> np.ndarray:
    """1-based running count of ``flags`` within each consecutive group (groups of ``group_sizes``)."""
    cs = np.cumsum(flags, dtype=np.int64)
    base = np.concatenate([[0], cs])[_starts(group_sizes)]
    return cs - np.repeat(base, group_sizes)


class MLMEncoder:
    """Masked token sequences of a chunk's slots: one batched tokenizer call for its distinct captions
    (offsets included), then the windowing of every slot at once with numpy."""

    def __init__(self, tokenizer, max_length: int, fast_pieces: bool = True):
        from tokenizers import Tokenizer

        # a private copy of the fast tokenizer's backend, without truncation or padding: the call the
        # ``transformers`` wrapper makes, minus its per-token conversion into Python lists
        self._backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()
        # a caption's own text never becomes a special token: a literal "<mask>" in it would be a second
        # mask, and the fill would be predicted there instead of at the masked word
        self._backend.encode_special_tokens = True
        self.max_length = max_length
        self.bos, self.eos = _bos_eos(tokenizer)
        self.mask_id = tokenizer.mask_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._pieces = bpe_pieces.for_tokenizer(self._backend) if fast_pieces else None

    def _backend_tokenize(self, texts: Sequence[str]):
        encs = self._backend.encode_batch(list(texts), add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encs), np.int64, len(encs))
        total = int(lengths.sum())
        ids = np.fromiter(chain.from_iterable(e.ids for e in encs), np.int64, total)
        offs = np.fromiter(chain.from_iterable(chain.from_iterable(e.offsets for e in encs)), np.int64, 2 * total)
        return ids, offs[0::2], offs[1::2], lengths

    def tokenize(self, texts: Sequence[str]):
        """``(ids, starts, ends, lengths)`` of ``texts`` tokenized without special tokens, concatenated:
        plain-ASCII captions through the cache of byte-level pieces when the tokenizer allows it
        (:mod:`.bpe_pieces`, the same result), the others through the backend."""
        if self._pieces is None:
            return self._backend_tokenize(texts)
        done, *fast = self._pieces.tokenize(texts)
        if done.all():
            return tuple(fast)
        rest = [t for t, d in zip(texts, done.tolist()) if not d]
        slow = self._backend_tokenize(rest)
        lengths = np.empty(len(texts), dtype=np.int64)
        lengths[done], lengths[~done] = fast[3], slow[3]
        src_start = np.empty(len(texts), dtype=np.int64)  # where each text's tokens are in fast + slow
        src_start[done] = _starts(fast[3])
        src_start[~done] = len(fast[0]) + _starts(slow[3])
        gather = np.arange(int(lengths.sum())) + np.repeat(src_start - _starts(lengths), lengths)
        return tuple(np.concatenate([f, s])[gather] for f, s in zip(fast[:3], slow[:3])) + (lengths,)

    def encode(self, slots: FillSlots) -> FillBatch:
        n = len(slots)
        used, inverse = np.unique(slots.text, return_inverse=True)
        ids, a, b, lengths = self.tokenize([slots.texts[i] for i in used.tolist()])
        tok_lo, tok_n = _starts(lengths)[inverse], lengths[inverse]
        # one entry per (slot, token of its caption)
        slot = np.repeat(np.arange(n), tok_n)
        tok = np.arange(int(tok_n.sum())) - np.repeat(_starts(tok_n) - tok_lo, tok_n)
        ta, tb = a[tok], b[tok]
        is_left = tb <= slots.start[slot]
        is_right = (ta >= slots.end[slot]) & (tb > ta)
        n_left = np.bincount(slot, weights=is_left, minlength=n).astype(np.int64)
        n_right = np.bincount(slot, weights=is_right, minlength=n).astype(np.int64)
        budget = self.max_length - 3
        nl = np.minimum(n_left, np.maximum(budget // 2, budget - n_right))
        nr = np.minimum(n_right, budget - nl)
        # the rank (1-based) of each left / right token among its slot's
        left_rank, right_rank = _rank(is_left, tok_n), _rank(is_right, tok_n)
        keep_left = is_left & (left_rank > (n_left - nl)[slot])
        keep_right = is_right & (right_rank <= nr[slot])
        hb, he = int(self.bos is not None), int(self.eos is not None)
        out_len = hb + nl + 1 + nr + he
        out_at = _starts(out_len)
        out = np.empty(int(out_len.sum()), dtype=np.int64)
        if hb:
            out[out_at] = self.bos
        out[(out_at[slot] + hb + left_rank - (n_left - nl)[slot] - 1)[keep_left]] = ids[tok[keep_left]]
        out[out_at + hb + nl] = self.mask_id
        out[(out_at[slot] + hb + nl[slot] + right_rank)[keep_right]] = ids[tok[keep_right]]
        if he:
            out[out_at + out_len - 1] = self.eos
        return FillBatch(out, out_len, (~slots.space_before()).astype(np.int64))

    def sequences(self, batch: FillBatch) -> List[List[int]]:
        """The sequences of ``batch`` as lists (tests, debugging)."""
        at = _starts(batch.lengths)
        return [batch.ids[s:s + n].tolist() for s, n in zip(at.tolist(), batch.lengths.tolist())]


def cannot_load(model: str, error: Exception) -> GenerationSetupError:
    """The one line for a masked LM (tokenizer, config or weights) that does not load."""
    return GenerationSetupError(
        f"cannot load the masked LM {model!r} ({type(error).__name__}: {str(error).splitlines()[0][:300]}); "
        f"pass a local directory with --filler-model, or use --filler vocab (no model needed)")


def load_tokenizer(model: str):
    """The fast tokenizer of a masked LM, or a one-line :class:`GenerationSetupError`."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar / log lines only
    try:
        tok = AutoTokenizer.from_pretrained(model)
    except Exception as e:  # OSError, ValueError, HTTP errors: one clear line
        raise cannot_load(model, e) from None
    if tok.mask_token_id is None:
        raise GenerationSetupError(f"the tokenizer of {model!r} has no mask token: not a masked LM")
    if not getattr(tok, "is_fast", False):
        raise GenerationSetupError(f"the tokenizer of {model!r} has no fast (Rust) version: not supported")
    return tok


def max_length_for(model: str, tokenizer, max_length: int = 128) -> int:
    """The longest masked sequence the model takes (its positions; RoBERTa's start after the padding
    index), from its config alone, so that the tokenizer side needs no weights."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except Exception as e:  # noqa: BLE001 - the same one line as a tokenizer that cannot load
        raise cannot_load(model, e) from None
    limit = getattr(config, "max_position_embeddings", 512) or 512
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # RoBERTa positions start after the padding index
    return max(8, min(max_length, limit, tokenizer.model_max_length or limit))
