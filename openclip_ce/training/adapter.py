"""The model adapter: the forward that also encodes the hard negatives, in the same call.

Encoding positives and negatives in one ``forward`` keeps a single autograd graph per step, which
DDP needs (a second text-tower call outside ``forward`` would bypass its gradient hooks). The
adapter changes the model's class, never its parameters or ``state_dict``: checkpoints stay plain
open_clip checkpoints.

The text batch arrives with its layout decided on the CPU (:mod:`.packing`): packed rows where the
tower encodes them exactly (the integration decides: :mod:`openclip_ce.integration.text_packing`),
else one caption per row. The step reads nothing back to the host and its shapes do not depend on
the data, so a GPU never waits on the CPU and ``torch.compile`` traces it once.
"""

from __future__ import annotations

import functools
import logging
from typing import Optional

import torch
import torch.nn.functional as F

from .packing import CeTextBatch, PackSpec, dense_text_batch

log = logging.getLogger(__name__)

_SPEC_ATTR = "_ce_pack_spec"  # plain attributes (not modules, parameters or buffers): state_dict unchanged
_ENCODER_ATTR = "_ce_encode_packed"  # the integration's packed encoder, when this run packs
_SUPPORT_ATTR = "_ce_pack_support"  # the integration's verdict on the model as open_clip built it


class NegativesForwardMixin:
    """Forward that also encodes hard negatives when ``text`` is a :class:`CeTextBatch` (or a raw
    ``[B, 1 + K, L]`` token tensor, laid out densely on the device).

    The output dict gains ``neg_text_features [B, K, D]`` (zeros at placeholders) and ``neg_mask [B, K]``.
    A plain ``[B, L]`` batch (validation, zero-shot) takes the model's own forward unchanged.
    """

    def forward(self, image=None, text=None):  # noqa: D401 - same signature as open_clip's CLIP
        if isinstance(text, torch.Tensor) and text.dim() == 3:
            text = dense_text_batch(text)
        if not isinstance(text, CeTextBatch):
            return super().forward(image, text)
        out = super().forward(image, None)
        if not isinstance(out, dict):
            raise TypeError("--loss ce_clip needs the model built with output_dict=True (open_clip training does)")
        b, slots = text.index.shape
        feats = F.normalize(self._encode_laid_out(text), dim=-1).reshape(b, slots, -1)
        out["text_features"] = feats[:, 0]
        out["neg_text_features"] = torch.where(text.valid[..., None], feats[:, 1:], 0.0)
        out["neg_mask"] = text.valid
        return out

    def _encode_laid_out(self, text: CeTextBatch) -> torch.Tensor:
        """Unnormalised features of every slot, ``[B * (1 + K), D]`` (placeholders: any finite value)."""
        index = text.index.reshape(-1)
        if not text.packed:
            return self.encode_text(text.tokens).index_select(0, index)
        encode_packed = self.__dict__.get(_ENCODER_ATTR)
        if encode_packed is None:
            raise ValueError("a packed text batch reached a model that does not encode packed rows "
                             "(the data stage and the model adapter disagree on the layout)")
        return encode_packed(self, text.tokens, text.positions, text.segments, index)


@functools.lru_cache(maxsize=None)
def _adapted_class(cls: type) -> type:
    return type(f"CeClip{cls.__name__}", (NegativesForwardMixin, cls), {"__module__": cls.__module__})


def _pack_support(model: torch.nn.Module):
    """``(PackSpec, encoder, None)`` when the integration can encode this model's text tower packed,
    exactly, else ``(None, None, why)``. Asked before the model's class is adapted (the adapter
    overrides ``forward``)."""
    from ..integration import text_packing  # open_clip internals live there; imported only when a model is adapted

    why = text_packing.pack_support(model)
    if why is not None:
        return None, None, why
    pool, eos_id = text_packing.pooling(model)
    return PackSpec(pool, eos_id if pool == "eos" else None), text_packing.encode_packed, None


def adapt_model(model: torch.nn.Module, pack: bool = True) -> Optional[PackSpec]:
    """Make ``model`` (unwrapped) take CE-CLIP text batches; state_dict unchanged. Returns the packing
    rule the data side must use (None: one caption per row).

    ``pack``: pack captions where the tower allows it exactly (``--ce-no-pack`` sets it False).
    Idempotent; the decision is logged once, and again only if it changes."""
    first = not isinstance(model, NegativesForwardMixin)
    if first:
        model.__dict__[_SUPPORT_ATTR] = _pack_support(model)
        model.__class__ = _adapted_class(type(model))
    before = model.__dict__.get(_SPEC_ATTR, "unset")
    spec, encoder, why = model.__dict__[_SUPPORT_ATTR] if pack else (None, None, "--ce-no-pack")
    model.__dict__[_SPEC_ATTR] = spec
    model.__dict__[_ENCODER_ATTR] = encoder
    if before != spec:
        if spec is not None:
            log.info("ce_clip: captions and valid negatives are packed into rows of the context length, "
                     "one text-tower pass of a fixed shape per step (exact for this text tower; --ce-no-pack "
                     "encodes one caption per row at the full length instead)")
        else:
            log.info("ce_clip: text batches are encoded one caption per row at the full context length: %s", why)
    return spec


def pack_spec_of(model: torch.nn.Module) -> Optional[PackSpec]:
    """The packing rule an adapted model uses (None: one caption per row)."""
    return model.__dict__.get(_SPEC_ATTR)
