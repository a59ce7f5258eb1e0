"""Encoding a text batch cut short of the context length, for open_clip's own text towers (3.3).

Why this is exact: open_clip's text transformer uses a causal mask, so the output at position ``p``
depends only on the tokens and positional embeddings at positions ``<= p``. The pooled feature is
read at one position per row (``argmax``: the end-of-text token, the largest id; ``eos``: the first
end-of-sequence token; ``first``: position 0), so every position after it can be dropped without
changing the feature or its gradient. Dropping them means slicing the learned positional embedding
and the causal mask to the kept length; nothing else in the tower depends on the length.

Three functions form the interface used by :mod:`openclip_ce.training.adapter`:

* :func:`trim_support` - ``None`` when the model's tower can be trimmed exactly, else the reason;
* :func:`needed_lengths` - per row, how many leading positions the pooled feature depends on;
* :func:`encode_text_trimmed` - ``encode_text`` (unnormalised) for a batch already cut to ``T`` positions.

Anything not known to be exact is refused by :func:`trim_support` (and then encoded at full length):
Hugging Face towers, bidirectional towers (``no_causal_mask``: every position sees the padding),
``last`` / ``none`` pooling (the pooled position moves with the length), CoCa's appended CLS token,
towers that return tokens, subclasses that override ``encode_text`` or the tower's ``forward``.
This module is the only place that knows those attribute names.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn as nn

from open_clip.model import CLIP, CustomTextCLIP
from open_clip.transformer import (CustomResidualAttentionBlock, ResidualAttentionBlock, TextTransformer, Transformer,
                                   text_global_pool)

TRIMMABLE_POOLS = ("argmax", "eos", "first")
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


def trim_support(model: nn.Module) -> Optional[str]:
    """``None`` if :func:`encode_text_trimmed` is exact for ``model`` (as open_clip built it); otherwise why not."""
    if isinstance(model, (CLIP, CustomTextCLIP)):
        base = CLIP if isinstance(model, CLIP) else CustomTextCLIP
        for method in ("encode_text", "forward"):
            if _overrides(model, base, method):
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
    if tower.pool_type not in TRIMMABLE_POOLS:
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


def needed_lengths(model: nn.Module, text: torch.Tensor) -> torch.Tensor:
    """``LongTensor[N]``: the pooled position of each row of ``text [N, L]`` plus one.

    Positions from there on cannot change the row's feature (causal mask). Same position as
    open_clip's ``text_global_pool`` reads, by the same rule."""
    tower = _tower(model)
    if tower.pool_type == "argmax":
        pos = text.argmax(dim=-1)
    elif tower.pool_type == "eos":
        pos = (text == tower.eos_id).int().argmax(dim=-1)
    elif tower.pool_type == "first":
        pos = torch.zeros(text.shape[0], dtype=torch.long, device=text.device)
    else:
        raise ValueError(f"text pooling {tower.pool_type!r} cannot be trimmed")
    return pos + 1


def encode_text_trimmed(model: nn.Module, text: torch.Tensor) -> torch.Tensor:
    """Unnormalised text features of ``text [N, T]``, ``T <= context length``, every row's pooled position ``< T``.

    open_clip's ``encode_text`` (CLIP) / ``TextTransformer.forward`` with the positional embedding
    and the causal mask sliced to ``T``; equal to encoding the same rows padded to full length."""
    tower = _tower(model)
    n = text.shape[1]
    if n > tower.positional_embedding.shape[0]:
        raise ValueError(f"text of length {n} exceeds the context length {tower.positional_embedding.shape[0]}")
    cast_dtype = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(text).to(cast_dtype)
    x = x + tower.positional_embedding[:n].to(cast_dtype)
    x = tower.transformer(x, attn_mask=tower.attn_mask[:n, :n])
    x = tower.ln_final(x)
    x = text_global_pool(x, text, tower.pool_type, eos_token_id=tower.eos_id)
    proj = tower.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return x
