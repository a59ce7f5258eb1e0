"""The text layout of a CE-CLIP batch, decided on the CPU before the batch reaches the device.

A CE-CLIP step encodes, per image, its caption and the valid ones of its K hard negatives. Which
captions are encoded and where is known from the tokens alone, so the data workers decide it (in
the collate step) and ship it as index tensors; the device then runs one text-tower pass of a fixed
shape, with no host read-back, no boolean gather and no shape that depends on the data:

* **packed** (default, where exact): the captions are packed, best-fit decreasing, into rows of the
  context length, each caption a segment with its own position ids; attention is causal within a
  segment (a block-diagonal causal mask), and each caption's feature is read at its pooled token.
  For open_clip's causal towers this equals encoding each caption alone (its pooled token never sees
  anything after it, nor another segment). COCO-like captions (about 14 tokens, 4 negatives, 80%
  valid) fill about 67 of every 77 positions per image: less text-tower work than plain CLIP's.
* **rows**: one caption per row at the full context length, placeholders left out (``--ce-no-pack``,
  and towers that packing would not keep exact: Hugging Face, bidirectional, ``last`` pooling).
* **dense**: a ``[B, 1 + K, L]`` tensor that arrived without a layout (no data stage): every slot is
  encoded, a placeholder as a copy of its positive, its feature then discarded (built on the device).

Shapes stay fixed from step to step because :meth:`CeTextBatch.to` pads the rows to this process's
row capacity (:class:`RowCapacity`): sized from the first batch with some headroom, raised (and
logged) only when a batch needs more, or fixed with ``--ce-text-rows``. Plain torch and numpy; how a
tower encodes packed rows is the integration's business (:mod:`openclip_ce.integration.text_packing`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch

from ..contract import PACKABLE_POOLS

log = logging.getLogger(__name__)

PLACEHOLDER_TOKEN = -1  # a placeholder negative's row (never a real token id: ids are >= 0)


@dataclass(frozen=True)
class PackSpec:
    """Which token of a caption a causal text tower pools: the largest id (``argmax``, open_clip's
    CLIP: the end-of-text token), the first ``eos_id`` (``eos``), or position 0 (``first``)."""

    pool: str = "argmax"
    eos_id: Optional[int] = None

    def __post_init__(self):
        if self.pool not in PACKABLE_POOLS or (self.pool == "eos" and self.eos_id is None):
            raise ValueError(f"cannot pack captions for pooling {self.pool!r} (eos_id {self.eos_id})")

    def pooled_positions(self, rows: np.ndarray) -> np.ndarray:
        """Per row of ``rows [N, L]``, the position open_clip's ``text_global_pool`` reads (same rule)."""
        if self.pool == "argmax":
            return rows.argmax(axis=1)
        if self.pool == "eos":
            return (rows == self.eos_id).argmax(axis=1)
        return np.zeros(rows.shape[0], dtype=np.int64)


class CeTextBatch(NamedTuple):
    """A text batch with its layout: what the adapted model's ``forward`` takes as ``text``.

    ``tokens [R, L]`` are the rows the text tower encodes. ``positions`` / ``segments`` ``[R, L]``
    (packed layout only, else None) give each token's position id and caption (-1: padding).
    ``index [B, 1 + K]`` says where each caption's feature is read: the flat token index ``r * L + p``
    of its pooled token (packed) or its row (rows, dense); 0 for placeholders. ``valid [B, K]``:
    False at placeholders. A NamedTuple of tensors, so DataLoader pinning, DDP and torch.compile
    handle it as they handle tuples."""

    tokens: torch.Tensor
    index: torch.Tensor
    valid: torch.Tensor
    positions: Optional[torch.Tensor] = None
    segments: Optional[torch.Tensor] = None

    @property
    def packed(self) -> bool:
        return self.positions is not None

    @property
    def kind(self) -> str:
        return "packed" if self.packed else "rows"

    def to(self, device=None, dtype=None, non_blocking: bool = False, **kwargs) -> "CeTextBatch":
        """Pad the rows to this process's row capacity (so every step has the same shapes), then move.

        ``dtype`` is ignored (token ids stay integers), as for open_clip's own token tensors."""
        limit = int(self.index.numel())  # one caption per row at most
        rows = CAPACITY.rows_for(self.kind, int(self.tokens.shape[0]), limit)
        padded = self._pad_rows(rows) if rows > self.tokens.shape[0] else self
        return CeTextBatch(*(None if t is None else t.to(device, non_blocking=non_blocking, **kwargs)
                             for t in padded))

    def _pad_rows(self, rows: int) -> "CeTextBatch":
        """Extra rows are copies of row 0 (valid input for any tower); nothing reads their features."""
        extra = rows - self.tokens.shape[0]

        def pad(t):
            return None if t is None else torch.cat([t, t[:1].expand(extra, -1)])

        return self._replace(tokens=pad(self.tokens), positions=pad(self.positions), segments=pad(self.segments))


class RowCapacity:
    """Rows per text batch in this process: fixed (``--ce-text-rows``) or grown as batches need.

    The first batch of a layout sets it to its rows plus ``headroom``, rounded up to a multiple of
    ``multiple``; a batch needing more raises it the same way (one log line: a compiled model
    compiles that new shape once). Never above one caption per row."""

    def __init__(self, headroom: float = 0.1, multiple: int = 8):
        self.headroom, self.multiple = headroom, multiple
        self.fixed: Optional[int] = None
        self._rows = {}

    def configure(self, fixed: Optional[int]) -> None:
        self.fixed = fixed
        self._rows.clear()

    def rows_for(self, kind: str, needed: int, limit: int) -> int:
        have = self._rows.get(kind)
        if have is not None and needed <= have:
            return have
        if self.fixed is not None:
            target = max(self.fixed, needed)
            if needed > self.fixed:
                log.warning("ce_clip: a %s text batch needs %d rows, more than --ce-text-rows %d; encoding %d rows "
                            "(a new shape)", kind, needed, self.fixed, needed)
        else:
            grown = math.ceil(needed * (1 + self.headroom) / self.multiple) * self.multiple
            target = max(needed, min(limit, grown))
            if have is None:
                log.info("ce_clip: %s text batches padded to %d rows of tokens (first batch: %d; raised if a batch "
                         "needs more; --ce-text-rows fixes it)", kind, target, needed)
            else:
                log.info("ce_clip: %s text batch capacity raised from %d to %d rows (a batch needed %d)",
                         kind, have, target, needed)
        self._rows[kind] = target
        return target


CAPACITY = RowCapacity()


# ----------------------------------------------------------------------------- layouts
def layout_text_batch(tokens: torch.Tensor, spec: Optional[PackSpec]) -> CeTextBatch:
    """The layout of one batch ``[B, 1 + K, L]`` (CPU): packed for ``spec``, one caption per row if None."""
    b, slots, width = tokens.shape
    flat = tokens.reshape(-1, width).numpy()
    present = (flat[:, 0] != PLACEHOLDER_TOKEN).reshape(b, slots)
    if not present[:, 0].all():
        raise ValueError(f"sample {int(np.argmin(present[:, 0]))} of the batch has no caption (a placeholder row)")
    valid = torch.from_numpy(present[:, 1:].copy())
    keep = np.flatnonzero(present.reshape(-1))
    index = np.zeros(b * slots, dtype=np.int64)
    if spec is None:
        index[keep] = np.arange(len(keep))
        return CeTextBatch(torch.from_numpy(flat[keep].copy()), torch.from_numpy(index.reshape(b, slots)), valid)
    captions = flat[keep]
    lengths = spec.pooled_positions(captions) + 1
    row_of, start_of, n_rows = _best_fit_decreasing(lengths, width)
    packed = np.zeros((n_rows, width), dtype=flat.dtype)
    positions = np.zeros((n_rows, width), dtype=np.int64)
    segments = np.full((n_rows, width), -1, dtype=np.int32)
    # every caption token's destination (row * width + start + offset) and source (caption * width + offset)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    caption = np.repeat(np.arange(len(keep)), lengths)
    dst = row_of[caption] * width + start_of[caption] + offsets
    packed.reshape(-1)[dst] = captions.reshape(-1)[caption * width + offsets]
    positions.reshape(-1)[dst] = offsets
    segments.reshape(-1)[dst] = caption
    index[keep] = row_of * width + start_of + lengths - 1
    return CeTextBatch(torch.from_numpy(packed), torch.from_numpy(index.reshape(b, slots)), valid,
                       torch.from_numpy(positions), torch.from_numpy(segments))


def _best_fit_decreasing(lengths: np.ndarray, width: int):
    """Pack items of ``lengths`` (each <= width) into rows of ``width``: longest first, each into the
    fullest row it fits. Returns each item's row and start, and the number of rows. Deterministic."""
    row_of = np.empty(len(lengths), dtype=np.int64)
    start_of = np.empty(len(lengths), dtype=np.int64)
    by_room = [[] for _ in range(width + 1)]  # by_room[c]: rows with exactly c free positions
    n_rows = 0
    for i in np.argsort(-lengths, kind="stable").tolist():
        n = int(lengths[i])
        room = n
        while room <= width and not by_room[room]:
            room += 1
        if room > width:
            row, room = n_rows, width
            n_rows += 1
        else:
            row = by_room[room].pop()
        row_of[i], start_of[i] = row, width - room
        if room - n:
            by_room[room - n].append(row)
    return row_of, start_of, n_rows


def dense_text_batch(tokens: torch.Tensor) -> CeTextBatch:
    """Every slot of ``[B, 1 + K, L]`` as a row (on the tokens' device, no host read): a placeholder
    is encoded as a copy of its positive, and its feature discarded."""
    if tokens.dim() != 3:
        raise ValueError(f"expected a [B, 1 + K, L] token batch, got shape {tuple(tokens.shape)}")
    b, slots, width = tokens.shape
    valid = tokens[:, 1:, 0] != PLACEHOLDER_TOKEN
    rows = torch.where(tokens[:, :, :1] == PLACEHOLDER_TOKEN, tokens[:, :1], tokens).reshape(-1, width)
    index = torch.arange(b * slots, device=tokens.device).reshape(b, slots)
    return CeTextBatch(rows, index, valid)


class TextLayoutCollate:
    """A collate function that lays out the text of what ``collate`` returns: the ``"text"`` entry of a
    dict batch (open_clip 4's), or column 1 of a tuple batch ``(images, texts)`` (open_clip 3's).

    Picklable (data workers). ``spec``: pack for this pooling rule; None: one caption per row."""

    def __init__(self, collate: Callable, spec: Optional[PackSpec]):
        self.collate, self.spec = collate, spec

    def __call__(self, samples):
        batch = self.collate(samples)
        if isinstance(batch, dict):
            return {**batch, "text": layout_text_batch(batch["text"], self.spec)}
        batch = list(batch)
        batch[1] = layout_text_batch(batch[1], self.spec)
        return batch
