"""The model side of the masked-LM filler: the top-k admissible vocabulary columns of every masked
sequence of a :class:`~.mlm_tokens.FillBatch`.

Per batch: the padded ids and mask are built with numpy (no Python loop per row), copied to the device
once, the vocabulary projection runs only at the masked positions and only over the admissible word
columns (their weight rows gathered once, at load), and the answer comes back in one device-to-host copy
of the (rows, k) column indices, -1 where fewer than k columns were allowed. On a GPU the copy of batch
*i* is collected only after batch *i + 1* is queued, so the GPU is not left idle while the host waits.

Batches are formed exactly as before (requests sorted by length, then cut every ``batch_size``), so the
same request block gives the same numbers as the filler it replaces.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, Optional

import numpy as np

from .mlm_tokens import FillBatch, MLMVocab, _starts, cannot_load

log = logging.getLogger(__name__)


def split_head(model):
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


def padded_batches(batch: FillBatch, batch_size: int, pad_id: int, mask_id: int):
    """``(rows, ids, attention, mask_at)`` per batch: requests sorted by (length, index), cut every
    ``batch_size``; int64 numpy arrays."""
    lengths = batch.lengths
    order = np.argsort(lengths, kind="stable")  # == sorted by (length, index)
    starts = _starts(lengths)
    for b in range(0, len(order), batch_size):
        rows = order[b:b + batch_size]
        width = int(lengths[rows].max())
        cols = np.arange(width)
        valid = cols[None, :] < lengths[rows][:, None]
        pos = np.minimum(starts[rows][:, None] + cols[None, :], len(batch.ids) - 1)
        ids = np.where(valid, batch.ids[pos], pad_id)
        at = (ids == mask_id).argmax(axis=1)
        yield rows, ids, valid.astype(np.int64), at


class MLMScorer:
    """A ``transformers`` masked LM on ``device`` (fp32 on CPU, fp16 on GPU unless ``half``) answering
    :meth:`topk` for the columns of ``vocab``."""

    def __init__(self, model: str, vocab: MLMVocab, pad_id: int, mask_id: int, device: str = "cpu",
                 batch_size: int = 256, n_candidates: int = 40, half: Optional[bool] = None):
        import torch
        from transformers import AutoModelForMaskedLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model_name, self.batch_size = model, batch_size
        self.pad_id, self.mask_id = pad_id, mask_id
        self.device = torch.device(device)
        try:
            self.model = AutoModelForMaskedLM.from_pretrained(model)
        except Exception as e:  # OSError, ValueError, HTTP errors: one clear line
            raise cannot_load(model, e) from None
        self.half = (self.device.type == "cuda") if half is None else half
        self.model.to(self.device, dtype=torch.float16 if self.half else torch.float32).eval()
        self.k = min(n_candidates, len(vocab))
        self._union = torch.from_numpy(vocab.union).to(self.device)
        self._allow = torch.from_numpy(vocab.allow).to(self.device)
        head = split_head(self.model)
        self._transform = None
        if head is None:
            log.warning("filler %s: unknown masked-LM head layout; projecting the full vocabulary at every position",
                        model)
        else:
            transform, weight, bias = head
            with torch.no_grad():  # the admissible rows, gathered once (the same values every batch used)
                self._transform, self._weight = transform, weight[self._union].detach()
                self._bias = bias[self._union].detach() if bias is not None else None
        self.requests = self.fills = self.batches = 0
        self.busy_s = 0.0

    def describe(self) -> Dict[str, object]:
        return {"device": str(self.device), "half": self.half}

    def scores(self, ids, att, at):
        """Scores of the admissible columns at the masked positions (device tensors in, device tensor out)."""
        import torch

        rows = torch.arange(ids.shape[0], device=ids.device)
        if self._transform is None:
            logits = self.model(input_ids=ids, attention_mask=att).logits[rows, at]
            return logits[:, self._union]
        hidden = self.model.base_model(input_ids=ids, attention_mask=att)[0][rows, at]
        logits = self._transform(hidden) @ self._weight.T
        return logits + self._bias if self._bias is not None else logits

    def _mask(self, scores, row: np.ndarray):
        """-inf at the columns a slot may not take (row 0 of ``allow`` after a space, row 1 without):
        row 0, the common case, broadcast over the batch in place; the few rows of row 1 apart."""
        ones = np.flatnonzero(row)
        if len(ones):
            sel = self._to_device(ones)
            apart = scores[sel].masked_fill_(~self._allow[1], float("-inf"))  # indexing copies
        scores.masked_fill_(~self._allow[0], float("-inf"))
        if len(ones):
            scores[sel] = apart
        return scores

    def _to_device(self, array: np.ndarray):
        import torch

        t = torch.from_numpy(array)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    def topk(self, batch: FillBatch) -> np.ndarray:
        """(len(batch), k) int32: the best ``k`` admissible columns of each sequence, best first; -1
        where fewer than ``k`` columns are admissible."""
        import torch

        t0 = time.perf_counter()
        out = np.full((len(batch), self.k), -1, dtype=np.int32)
        cuda = self.device.type == "cuda"
        pending = None
        with torch.inference_mode():
            for rows, ids, att, at in padded_batches(batch, self.batch_size, self.pad_id, self.mask_id):
                scores = self.scores(self._to_device(ids), self._to_device(att), self._to_device(at)).float()
                top = self._mask(scores, batch.row[rows]).topk(self.k, dim=1)
                cols = torch.where(top.values == float("-inf"), -1, top.indices).to(torch.int32)
                if cuda:  # one copy per batch, collected after the next batch is queued
                    host = torch.empty(cols.shape, dtype=torch.int32, pin_memory=True)
                    host.copy_(cols, non_blocking=True)
                    done = torch.cuda.Event()
                    done.record()
                    if pending is not None:
                        pending[2].synchronize()
                        out[pending[0]] = pending[1].numpy()
                    pending = (rows, host, done)
                else:
                    out[rows] = cols.numpy()
                self.batches += 1
            if pending is not None:
                pending[2].synchronize()
                out[pending[0]] = pending[1].numpy()
        self.requests += 1
        self.fills += len(batch)
        self.busy_s += time.perf_counter() - t0
        return out
