"""The model adapter: the forward that also encodes the hard negatives, in the same call.

Encoding positives and negatives in one ``forward`` keeps a single autograd graph per step, which
DDP needs (a second text-tower call outside ``forward`` would bypass its gradient hooks). The
adapter changes the model's class, never its parameters or ``state_dict``: checkpoints stay plain
open_clip checkpoints.

The text batch (positives + valid negatives, five captions per image at most) dominates the cost
of a CE-CLIP step. Where the text tower allows it exactly (open_clip's own causal towers; the
integration decides, :mod:`openclip_ce.integration.text_trim`), the rows are encoded in a few length
groups cut to the lengths present (:mod:`.trim`) instead of the full context length.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .data import split_text_batch
from .trim import GroupPlan, TrimSettings, encode_in_length_groups

log = logging.getLogger("openclip_ce.adapter")

_TRIM_ATTR = "_ce_text_trim"  # a plain attribute (not a module, parameter or buffer): state_dict unchanged
_SUPPORT_ATTR = "_ce_trim_support"  # the integration's verdict on the model as open_clip built it
PLAN_ATTR = "ce_text_plan"  # the GroupPlan of the last trimmed text batch, for benchmarks and logs


@dataclass(frozen=True)
class TextTrim:
    """How an adapted model trims its text batches: the integration's two functions and the grouping settings."""

    needed_lengths: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
    encode: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
    settings: TrimSettings = TrimSettings()


class NegativesForwardMixin:
    """Forward that also encodes hard negatives when ``text`` is a ``[B, 1 + K, L]`` batch.

    Positives and the *valid* negatives go through the text tower together (in length groups when
    the model was adapted with trimming); the output dict gains ``neg_text_features [B, K, D]``
    (zeros at placeholders) and ``neg_mask [B, K]``.
    A plain ``[B, L]`` batch (validation, zero-shot) takes the model's own forward unchanged.

    Valid negatives are gathered with a boolean mask (``neg_tokens[mask]``) rather than padded to a
    fixed ``B * K`` rows (placeholder rows encoded as all-padding rows, their features discarded):
    padding encodes every placeholder row too (~20% more rows at 80% valid), and the host
    synchronisation it would avoid is needed anyway by the trimming (the group sizes are host
    integers), whose group shapes vary per step either way. Measured on CPU
    (``scripts/bench_train_step.py --precision fp32 --threads 1 --compare-padding``: small model with
    4-layer towers, batch 32, 80% valid, CPU-time clock), images/s relative to plain CLIP:
    untrimmed 0.43x gathered vs 0.37-0.38x padded; trimmed 1.01-1.05x gathered vs 0.98-0.99x padded
    (two runs; padding also saves 8-17% more tensors for backward). Not measured on a GPU, where padding could only win
    for ``--ce-no-trim`` runs (no synchronisation at all); run the same command there to check.
    """

    def forward(self, image=None, text=None):  # noqa: D401 - same signature as open_clip's CLIP
        if text is None or text.dim() != 3:
            return super().forward(image, text)
        pos, neg_tokens, mask = split_text_batch(text)
        texts = torch.cat([pos, neg_tokens[mask]], dim=0)
        trim: Optional[TextTrim] = self.__dict__.get(_TRIM_ATTR)
        out = super().forward(image, texts if trim is None else None)
        if not isinstance(out, dict):
            raise TypeError("--loss ce_clip needs the model built with output_dict=True (open_clip training does)")
        if trim is None:
            feats = out["text_features"]
        else:
            feats, plan = encode_in_length_groups(
                texts, trim.needed_lengths(self, texts), functools.partial(trim.encode, self), trim.settings)
            feats = F.normalize(feats, dim=-1)
            self.__dict__[PLAN_ATTR] = plan
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


def _trim_support(model: torch.nn.Module):
    """``((needed_lengths, encode), None)`` when the integration can trim this model's text tower exactly,
    else ``(None, why)``. Asked before the model's class is adapted (the adapter overrides ``forward``)."""
    from ..integration import text_trim  # open_clip internals live there; imported only when a model is adapted

    why = text_trim.trim_support(model)
    return (None, why) if why is not None else ((text_trim.needed_lengths, text_trim.encode_text_trimmed), None)


def adapt_model(model: torch.nn.Module, trim: bool = True, settings: TrimSettings = TrimSettings()) -> None:
    """Make ``model`` (unwrapped) encode ``[B, 1 + K, L]`` text batches; state_dict unchanged.

    ``trim``: encode the text batch in length groups when the tower allows it exactly (``--ce-no-trim``
    sets it False). Idempotent; the decision is logged once, and again only if it changes."""
    first = not isinstance(model, NegativesForwardMixin)
    if first:
        model.__dict__[_SUPPORT_ATTR] = _trim_support(model)
        model.__class__ = _adapted_class(type(model))
    before = model.__dict__.get(_TRIM_ATTR)
    functions, why = model.__dict__[_SUPPORT_ATTR] if trim else (None, "--ce-no-trim")
    chosen = TextTrim(*functions, settings) if functions is not None else None
    model.__dict__[_TRIM_ATTR] = chosen
    model.__dict__.pop(PLAN_ATTR, None)
    if not first and before == chosen:
        return
    if chosen is not None:
        log.info("ce_clip: text batches (positives + valid negatives) are encoded in up to %d length groups, each "
                 "cut to its longest caption rounded up to a multiple of %d (exact for this text tower; "
                 "--ce-no-trim turns it off)", settings.max_groups, settings.round_to)
    else:
        log.info("ce_clip: text batches are encoded at the full context length, not trimmed: %s", why)


def text_trim_of(model: torch.nn.Module) -> Optional[TextTrim]:
    """The trimming an adapted model uses (None: full length)."""
    return model.__dict__.get(_TRIM_ATTR)


def last_text_plan(model: torch.nn.Module) -> Optional[GroupPlan]:
    """The length groups of the last trimmed text batch the model encoded (None: none yet, or untrimmed)."""
    return model.__dict__.get(PLAN_ATTR)
