"""Results files of ``openclip-ce eval``: reading them back, ordering their metrics, the Markdown table.

Used by ``eval`` (the ``.md`` next to each results JSON) and by ``compare``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Sequence

from ..errors import UserError
from . import registry


def load_results(path: str | Path) -> Dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read results JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("summary"), dict):
        raise UserError(f"{path}: not an `openclip-ce eval` results file (no 'summary' object)")
    for k, v in data["summary"].items():
        if v is not None and not isinstance(v, (int, float)):
            raise UserError(f"{path}: summary[{k!r}] is {type(v).__name__}, expected a number")
    return data


def bench_of(key: str) -> str:
    return key.split("/", 1)[0]


def metric_keys(results: Sequence[Dict]) -> List[str]:
    keys: List[str] = []
    for r in results:
        keys += [k for k in r["summary"] if k not in keys]
    rank = {b.name: i for i, b in enumerate(registry.all_benchmarks())}
    return sorted(keys, key=lambda k: (rank.get(bench_of(k), len(rank)), keys.index(k)))


def fmt_percent(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def markdown_table(results: Sequence[Dict], labels: Sequence[str]) -> str:
    """One table per benchmark: rows = metrics, columns = models (+ difference to the first)."""
    keys = metric_keys(results)
    lines = ["# openclip-ce evaluation (values in %)", ""]
    delta = len(results) > 1
    for bench in dict.fromkeys(bench_of(k) for k in keys):
        lines += [f"## {bench}", ""]
        head = ["metric", *labels] + ([f"{lab} - {labels[0]}" for lab in labels[1:]] if delta else [])
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for k in (k for k in keys if bench_of(k) == bench):
            vals = [r["summary"].get(k) for r in results]
            row = [k.split("/", 1)[1], *map(fmt_percent, vals)]
            if delta:
                for v in vals[1:]:
                    ok = v is not None and vals[0] is not None
                    row.append(f"{100 * (v - vals[0]):+.1f}" if ok else "-")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    notes = [f"- {lab}: skipped {b} ({n})" for lab, r in zip(labels, results) for b, n in (r.get("skipped") or {}).items()]
    if notes:
        lines += ["Skipped benchmarks:", "", *notes, ""]
    protocol = (results[0].get("protocol") or {}).get("document")
    if protocol:
        lines.append(f"Protocol: {protocol}")
    return "\n".join(lines) + "\n"
