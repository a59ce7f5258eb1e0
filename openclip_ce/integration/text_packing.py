"""Encoding packed text rows with open_clip's own text towers (3.3): several captions per row.

Why this is exact: open_clip's text transformer uses a causal mask, so the output at position ``p``
depends only on the tokens and positional embeddings at positions ``<= p``. The pooled feature is
read at one position per caption (``argmax``: the end-of-text token, the largest id; ``eos``: the
first end-of-sequence token; ``first``: position 0). A caption placed at columns ``s .. s + n - 1`` of
a row, with position ids ``0 .. n - 1`` and attention allowed only within its own segment and
causally, therefore gets exactly the feature it gets alone: nothing after its pooled token, nor any
other caption of the row, is visible to it. Only the positional embedding (indexed by position id)
and the attention mask (block-diagonal causal) change; every weight is used as open_clip uses it.

The interface used by :mod:`openclip_ce.training.adapter` (this module imports nothing of ``training``):

* :func:`pack_support` - ``None`` when the model's tower encodes packed rows exactly, else the reason;
* :func:`pooling` - ``(pool_type, eos_id)``: which token the tower pools, for the data side's layout;
* :func:`encode_packed` - unnormalised features of the captions in packed rows, read at given tokens.

Anything not known to be exact is refused by :func:`pack_support` (and then encoded one caption per
row at the full context length): Hugging Face towers, bidirectional towers (``no_causal_mask``),
``last`` / ``none`` pooling (the pooled position moves with the length), CoCa's appended CLS token,
towers that return tokens or mask padding themselves, subclasses that override ``encode_text`` or
the tower's ``forward``. This module is the only place that knows those attribute names.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from open_clip.model import CLIP, CustomTextCLIP
from open_clip.transformer import CustomResidualAttentionBlock, ResidualAttentionBlock, TextTransformer, Transformer

from ..contract import PACKABLE_POOLS

_BLOCKS = (ResidualAttentionBlock, CustomResidualAttentionBlock)


class _Tower(NamedTuple):
    """The pieces of a text tower that ``encode_text`` uses, whichever model class holds them."""

    token_embedding: nn.Embedding
    positional_embedding: torch.Tensor
    transformer: nn.Module
    ln_final: nn.Module
    text_projection: Optional[object]
    attn_mask: Optional[torch.Tensor]
    pool_type: str
    eos_id: Optional[int]


def _tower(model: nn.Module) -> _Tower:
    if isinstance(model, CLIP):
        return _Tower(model.token_embedding, model.positional_embedding, model.transformer, model.ln_final,
                      model.text_projection, model.attn_mask, model.text_pool_type, getattr(model, "text_eos_id", None))
    t = model.text
    return _Tower(t.token_embedding, t.positional_embedding, t.transformer, t.ln_final, t.text_projection,
                  t.attn_mask, t.pool_type, getattr(t, "eos_id", None))


def _overrides(obj, base: type, name: str) -> bool:
    return getattr(type(obj), name) is not getattr(base, name)


def pack_support(model: nn.Module) -> Optional[str]:
    """``None`` if :func:`encode_packed` is exact for ``model`` (as open_clip built it); otherwise why not."""
    if isinstance(model, (CLIP, CustomTextCLIP)):
        base = CLIP if isinstance(model, CLIP) else CustomTextCLIP
        for method in ("encode_text", "_encode_text", "forward"):  # _encode_text: main's, under encode_text
            if hasattr(base, method) and _overrides(model, base, method):
                return f"{type(model).__name__} overrides {base.__name__}.{method}"
    if isinstance(model, CustomTextCLIP):
        text = getattr(model, "text", None)
        if not isinstance(text, TextTransformer):
            return f"text tower {type(text).__name__} (not open_clip's TextTransformer, e.g. a Hugging Face model)"
        if _overrides(text, TextTransformer, "forward"):
            return f"text tower {type(text).__name__} overrides TextTransformer.forward"
        if text.cls_emb is not None:
            return "text tower appends a CLS token (embed_cls)"
        if text.output_tokens:
            return "text tower returns its tokens (output_tokens)"
        if getattr(text, "use_pad_mask", False):
            return "text tower masks padding itself (use_pad_mask)"
    elif not isinstance(model, CLIP):
        return f"model class {type(model).__name__} (only open_clip's CLIP and CustomTextCLIP are known)"
    tower = _tower(model)
    if tower.pool_type not in PACKABLE_POOLS:
        return f"text pooling {tower.pool_type!r} reads a position that depends on the length"
    if tower.attn_mask is None:
        return "text tower is bidirectional (no causal mask): every position sees the padding"
    n = tower.positional_embedding.shape[0]
    causal = torch.full((n, n), float("-inf"), device=tower.attn_mask.device).triu_(1)
    if tower.attn_mask.shape != (n, n) or not torch.equal(tower.attn_mask.to(causal.dtype), causal):
        return "text attention mask is not open_clip's causal mask"
    if type(tower.transformer) is not Transformer or _overrides(tower.transformer, Transformer, "forward"):
        return f"text transformer {type(tower.transformer).__name__} is not open_clip's Transformer"
    if not all(type(b) in _BLOCKS for b in tower.transformer.resblocks):
        return "text transformer has blocks other than open_clip's residual attention blocks"
    if tower.pool_type == "eos" and tower.eos_id is None:
        return "eos pooling without an eos id"
    return None


def pooling(model: nn.Module) -> Tuple[str, Optional[int]]:
    """``(pool_type, eos_id)`` of the model's text tower (the rule open_clip's ``text_global_pool`` applies)."""
    tower = _tower(model)
    return tower.pool_type, tower.eos_id


def encode_packed(model: nn.Module, tokens: torch.Tensor, positions: torch.Tensor, segments: torch.Tensor,
                  index: torch.Tensor) -> torch.Tensor:
    """Unnormalised features ``[N, D]`` of the captions packed in ``tokens [R, T]``, ``T <=`` context length.

    ``positions [R, T]``: each token's position id; ``segments [R, T]``: its caption (tokens attend
    only to earlier tokens of the same caption; padding has its own id); ``index [N]``: the flat
    token index ``r * T + p`` of each wanted caption's pooled token. Equal to open_clip's
    ``encode_text`` of each caption alone (see module docstring). Static shapes, no host read."""
    tower = _tower(model)
    rows, n = tokens.shape
    if n > tower.positional_embedding.shape[0]:
        raise ValueError(f"text of length {n} exceeds the context length {tower.positional_embedding.shape[0]}")
    cast_dtype = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(tokens).to(cast_dtype)
    x = x + F.embedding(positions, tower.positional_embedding).to(cast_dtype)
    causal = torch.ones((n, n), dtype=torch.bool, device=tokens.device).tril_()
    allowed = (segments[:, :, None] == segments[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill_(~allowed, float("-inf"))
    x = tower.transformer(x, attn_mask=mask.repeat_interleave(_heads(tower.transformer), dim=0))
    x = tower.ln_final(x.reshape(rows * n, -1).index_select(0, index))  # per-token LayerNorm: pool first
    proj = tower.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return x


def _heads(transformer: nn.Module) -> int:
    return transformer.resblocks[0].attn.num_heads
