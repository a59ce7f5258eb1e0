"""Length-grouped text encoding: each row goes through the text tower only as long as it needs to.

CE-CLIP sends five captions per image through the text tower; captions are short (COCO: 13.9
tokens on average, p99 24, max 52) but padded to the context length (77). Cutting the whole batch
to its longest row is not enough (the longest of 256 captions is about 31 tokens), so the rows are
split into a few groups by length, each group is cut to its own longest row rounded up to a
multiple of ``round_to`` (so that compiled graphs and kernel plans are reused across steps) and
encoded in one call, and the features are put back in the original order.

The groups are chosen per batch (:func:`plan_groups`) by an exact dynamic programme over the few
rounded lengths present, minimising the tokens encoded; a further group is used only if it saves
at least ``min_gain`` of the full-length token count, because each group costs one more pass of
kernel launches through the tower. Plain torch; which positions a row needs and how a cut batch
is encoded come from the model's integration (:mod:`openclip_ce.integration.text_trim`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import torch

ROUND_TO = 8
MAX_GROUPS = 4
MIN_GAIN = 0.02  # a further group must save >= 2% of the full-length tokens (launch overhead, GPU)


@dataclass(frozen=True)
class TrimSettings:
    round_to: int = ROUND_TO
    max_groups: int = MAX_GROUPS
    min_gain: float = MIN_GAIN

    def __post_init__(self):
        if self.round_to < 1 or self.max_groups < 1 or self.min_gain < 0:
            raise ValueError(f"invalid trim settings {self}")


@dataclass(frozen=True)
class GroupPlan:
    """What one batch was encoded as: ``groups`` = ``((length, rows), ...)``, shortest first."""

    groups: Tuple[Tuple[int, int], ...]
    full_length: int

    @property
    def rows(self) -> int:
        return sum(n for _, n in self.groups)

    @property
    def tokens(self) -> int:
        return sum(t * n for t, n in self.groups)

    @property
    def mean_length(self) -> float:
        return self.tokens / max(self.rows, 1)


def rounded_lengths(needed: torch.Tensor, full_length: int, round_to: int) -> torch.Tensor:
    """Each row's length rounded up to a multiple of ``round_to``, capped at ``full_length``."""
    r = (needed.clamp(min=1) + round_to - 1) // round_to * round_to
    return r.clamp(max=full_length)


def plan_groups(histogram: Sequence[int], full_length: int, settings: TrimSettings = TrimSettings()) -> GroupPlan:
    """Split rows into at most ``max_groups`` contiguous length ranges, minimising encoded tokens.

    ``histogram[t]`` = number of rows whose rounded length is ``t``. A group's length is its
    longest rounded length. Exact DP over the distinct lengths present (at most ``77 / 8`` of them)."""
    present = [(t, n) for t, n in enumerate(histogram) if n]
    if not present:
        return GroupPlan((), full_length)
    m = len(present)
    prefix = [0]
    for _, n in present:
        prefix.append(prefix[-1] + n)

    def cost(i, j):  # one group holding present[i..j] (inclusive)
        return (prefix[j + 1] - prefix[i]) * present[j][0]

    inf = float("inf")
    # best[g][j]: min tokens for present[0..j] in g groups; back[g][j]: start index of the last group
    best = [[inf] * m for _ in range(settings.max_groups + 1)]
    back = [[0] * m for _ in range(settings.max_groups + 1)]
    for j in range(m):
        best[1][j] = cost(0, j)
    for g in range(2, settings.max_groups + 1):
        for j in range(m):
            for i in range(1, j + 1):
                c = best[g - 1][i - 1] + cost(i, j)
                if c < best[g][j]:
                    best[g][j], back[g][j] = c, i
    penalty = settings.min_gain * prefix[-1] * full_length
    g_best = min(range(1, settings.max_groups + 1), key=lambda g: (best[g][m - 1] + (g - 1) * penalty, g))
    groups: List[Tuple[int, int]] = []
    j, g = m - 1, g_best
    while g >= 1:
        i = back[g][j] if g > 1 else 0
        groups.append((present[j][0], prefix[j + 1] - prefix[i]))
        j, g = i - 1, g - 1
    return GroupPlan(tuple(reversed(groups)), full_length)


def encode_in_length_groups(
    text: torch.Tensor,
    needed: torch.Tensor,
    encode: Callable[[torch.Tensor], torch.Tensor],
    settings: TrimSettings = TrimSettings(),
) -> Tuple[torch.Tensor, GroupPlan]:
    """Features of ``text [N, L]`` in row order, each row encoded at its group's length.

    ``needed[i]``: how many leading positions row ``i``'s feature depends on; ``encode`` maps a cut
    batch ``[n, T]`` to features ``[n, D]``. One host synchronisation (a histogram of at most ``L + 1``
    counts); rows are sorted by length on the device and the groups are contiguous slices of that order.
    """
    full = text.shape[1]
    if text.shape[0] == 0:
        return encode(text), GroupPlan((), full)
    r = rounded_lengths(needed, full, settings.round_to)
    plan = plan_groups(torch.bincount(r, minlength=full + 1).tolist(), full, settings)
    if len(plan.groups) == 1:
        t = plan.groups[0][0]
        return encode(text if t == full else text[:, :t]), plan
    order = torch.argsort(r, stable=True)
    parts = [encode(text.index_select(0, idx)[:, :t])
             for (t, _), idx in zip(plan.groups, order.split([n for _, n in plan.groups]))]
    feats = torch.cat(parts) if len(parts) > 1 else parts[0]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return feats.index_select(0, inverse), plan
