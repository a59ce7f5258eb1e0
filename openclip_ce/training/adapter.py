"""The model adapter: the forward that also encodes the hard negatives, in the same call.

Encoding positives and negatives in one ``forward`` keeps a single autograd graph per step, which
DDP needs (a second text-tower call outside ``forward`` would bypass its gradient hooks). The
adapter changes the model's class, never its parameters or ``state_dict``: checkpoints stay plain
open_clip checkpoints.
"""

from __future__ import annotations

import functools

import torch

from .data import split_text_batch


class NegativesForwardMixin:
    """Forward that also encodes hard negatives when ``text`` is a ``[B, 1 + K, L]`` batch.

    Positives and the *valid* negatives go through the text tower in one call; the output dict
    gains ``neg_text_features [B, K, D]`` (zeros at placeholders) and ``neg_mask [B, K]``.
    A plain ``[B, L]`` batch (validation, zero-shot) takes the model's own forward unchanged.
    """

    def forward(self, image=None, text=None):  # noqa: D401 - same signature as open_clip's CLIP
        if text is None or text.dim() != 3:
            return super().forward(image, text)
        pos, neg_tokens, mask = split_text_batch(text)
        flat = neg_tokens[mask]
        out = super().forward(image, torch.cat([pos, flat], dim=0))
        if not isinstance(out, dict):
            raise TypeError("--loss ce_clip needs the model built with output_dict=True (open_clip training does)")
        feats = out["text_features"]
        b = pos.shape[0]
        neg = feats.new_zeros((b, neg_tokens.shape[1], feats.shape[-1]))
        neg[mask] = feats[b:]
        out["text_features"] = feats[:b]
        out["neg_text_features"] = neg
        out["neg_mask"] = mask
        return out


@functools.lru_cache(maxsize=None)
def _adapted_class(cls: type) -> type:
    return type(f"CeClip{cls.__name__}", (NegativesForwardMixin, cls), {"__module__": cls.__module__})


def adapt_model(model: torch.nn.Module) -> None:
    """Make ``model`` (unwrapped) encode ``[B, 1 + K, L]`` text batches; idempotent, state_dict unchanged."""
    if isinstance(model, NegativesForwardMixin):
        return
    model.__class__ = _adapted_class(type(model))
