"""Per-item outcomes in results files, and the paired test ``compare`` draws from them.

A difference of a few points between two models on a 200-item split can be noise. To tell, the
two models must be compared item by item on the *same* items, so every results JSON keeps, per
benchmark, which item each summary metric was computed from and whether the model got it right::

    "outcomes": {
      "ids": "position of the item in its benchmark file",
      "groups":  {"replace_obj": {"ids": "0-1651", "correct": "1101..."}, ...},
      "metrics": {"replace_obj": ["replace_obj"], "replace": ["replace_obj", "replace_att", "replace_rel"], ...}
    }

``ids`` are whole numbers written as ranges (``"0-4,7,9-12"``) and ``correct`` is one character
per item (``1`` right, ``0`` wrong), so a full run adds a few hundred kilobytes. A metric that is a
mean of several splits or groups pools the items of all of them.

The test is the exact McNemar test (two-sided binomial test on the discordant items: those one
model gets right and the other wrong), on the items both results files share.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

ID_NOTE = "position of the item in its benchmark file"
TEST_NAME = "exact McNemar test (two-sided), paired on the items both models were scored on"


def encode_ids(ids: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 7, 9, 10]`` -> ``"0-3,7,9-10"`` (runs of consecutive numbers become ranges)."""
    parts: List[str] = []
    start = prev = None
    for i in ids:
        i = int(i)
        if start is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)


def decode_ids(text: str) -> List[int]:
    out: List[int] = []
    for part in filter(None, text.split(",")):
        lo, sep, hi = part.partition("-")
        out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return out


class Outcomes:
    """Collects a benchmark's per-item outcomes while it computes its summary (see module docstring)."""

    def __init__(self, id_note: str = ID_NOTE):
        self.id_note = id_note
        self.groups: Dict[str, Dict[str, str]] = {}
        self.metrics: Dict[str, List[str]] = {}

    def add_group(self, name: str, ids: Sequence[int], correct) -> None:
        correct = np.asarray(correct, dtype=bool).ravel()
        if len(ids) != len(correct):
            raise ValueError(f"outcome group {name}: {len(ids)} ids for {len(correct)} outcomes")
        if len(set(int(i) for i in ids)) != len(ids):
            raise ValueError(f"outcome group {name}: duplicate item ids")
        self.groups[name] = {"ids": encode_ids(ids), "correct": "".join("1" if c else "0" for c in correct)}

    def add_grouped(self, labels: Sequence[str], ids: Sequence[int], correct, names: Optional[Sequence[str]] = None,
                    prefix: str = "") -> List[str]:
        """One group per label (``prefix + label``) of items ``k`` with ``labels[k]``; returns the group names.

        ``names``: the labels to write, in order, also those with no item (default: every label, sorted)."""
        correct = np.asarray(correct, dtype=bool).ravel()
        members: Dict[str, List[int]] = {}
        for k, label in enumerate(labels):
            members.setdefault(label, []).append(k)
        out = []
        for name in (names if names is not None else sorted(members)):
            idx = members.get(name, [])
            self.add_group(prefix + name, [ids[k] for k in idx], correct[idx] if idx else [])
            out.append(prefix + name)
        return out

    def add_metric(self, metric: str, groups: Sequence[str]) -> None:
        unknown = [g for g in groups if g not in self.groups]
        if unknown:
            raise ValueError(f"metric {metric}: unknown outcome groups {unknown}")
        self.metrics[metric] = list(groups)

    def to_json(self) -> Dict:
        return {"ids": self.id_note, "groups": self.groups, "metrics": self.metrics}


class OutcomesFormatError(ValueError):
    pass


def metric_items(results: Mapping, key: str) -> Optional[Dict[Tuple[str, int], bool]]:
    """``{(group, item id): correct}`` behind summary metric ``key`` ("bench/metric"); None when the
    file has no outcomes for it (written before outcomes were recorded, or a metric without items)."""
    bench, _, metric = key.partition("/")
    res = (results.get("benchmarks") or {}).get(bench) or {}
    out = res.get("outcomes")
    if not isinstance(out, dict) or metric not in (out.get("metrics") or {}):
        return None
    items: Dict[Tuple[str, int], bool] = {}
    for g in out["metrics"][metric]:
        try:
            group = out["groups"][g]
            ids, flags = decode_ids(group["ids"]), group["correct"]
        except (KeyError, TypeError, ValueError) as e:
            raise OutcomesFormatError(f"outcomes of {bench}: group {g!r} is malformed ({type(e).__name__}: {e})") from e
        if len(ids) != len(flags) or set(flags) - {"0", "1"}:
            raise OutcomesFormatError(f"outcomes of {bench}: group {g!r} has {len(ids)} ids for {len(flags)} outcomes")
        items.update(((g, i), f == "1") for i, f in zip(ids, flags))
    return items


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``min(1, 2 * P[X <= min(b, c)])`` for X ~ Binomial(b + c, 1/2).

    ``b``, ``c``: the discordant counts (first model right and second wrong, and the reverse).
    No discordant item: p = 1 (nothing tells the models apart)."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    if n <= 1000:  # exact integer arithmetic
        return min(1.0, 2 * sum(math.comb(n, j) for j in range(k + 1)) / 2 ** n)
    # log-space sum of the lower tail (terms grow with j up to n/2, so the last is the largest)
    logs = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) - n * math.log(2) for j in range(k + 1)]
    top = max(logs)
    return min(1.0, 2 * math.exp(top) * sum(math.exp(v - top) for v in logs))


def paired_test(first: Mapping[Tuple[str, int], bool], other: Mapping[Tuple[str, int], bool]) -> Dict:
    """McNemar on the items both outcome maps share: ``{"n", "first_only", "other_only", "p"}``.

    ``first_only``: items the first model gets right and the other wrong; ``other_only``: the reverse."""
    common = first.keys() & other.keys()
    b = sum(1 for k in common if first[k] and not other[k])
    c = sum(1 for k in common if other[k] and not first[k])
    return {"n": len(common), "first_only": b, "other_only": c, "p": mcnemar_exact(b, c)}
