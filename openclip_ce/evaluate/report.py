"""Results files of ``openclip-ce eval``: reading them back, ordering their metrics, the Markdown table.

Used by ``eval`` (the ``.md`` next to each results JSON) and by ``compare``. Next to each value the
table gives the number of items behind the metric, the chance level, and, for every model after
the first, the exact McNemar p-value of its difference to the first model on the same items
(:mod:`.outcomes`); a difference with p >= alpha is marked ``ns`` (not significant).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import UserError
from . import registry
from .common import decode_json
from .outcomes import TEST_NAME, OutcomesFormatError, metric_items, paired_test

ALPHA = 0.05


def load_results(path: str | Path) -> Dict:
    path = Path(path)
    try:
        data = decode_json(path.read_bytes(), str(path))  # one line for bytes, syntax and nesting alike
    except OSError as e:
        raise UserError(f"{path}: cannot read results JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("summary"), dict):
        raise UserError(f"{path}: not an `openclip-ce eval` results file (no 'summary' object)")
    for k, v in data["summary"].items():
        if v is not None and not isinstance(v, (int, float)):
            raise UserError(f"{path}: summary[{k!r}] is {type(v).__name__}, expected a number")
        try:
            metric_items(data, k)
        except OutcomesFormatError as e:
            raise UserError(f"{path}: {e}") from e
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


def fmt_p(p: Optional[float]) -> str:
    return "-" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def chance_level(result: Dict, key: str) -> Optional[float]:
    """Chance accuracy of summary metric ``key``: the results file's own (zero-shot: 1/classes) or the registry's."""
    bench, _, metric = key.partition("/")
    own = (((result.get("benchmarks") or {}).get(bench) or {}).get("chance") or {}).get(metric)
    if isinstance(own, (int, float)):
        return float(own)
    b = registry.find(bench)
    return b.chance_level(metric) if b is not None else None


def metric_stats(results: Sequence[Dict], keys: Sequence[str]) -> Dict[str, Dict]:
    """Per key: ``n`` per model (None without outcomes), the chance level, and per model after the
    first the paired test against the first (None where either file lacks the outcomes)."""
    out = {}
    for k in keys:
        items = [metric_items(r, k) if r["summary"].get(k) is not None else None for r in results]
        tests = [None] + [paired_test(items[0], it) if items[0] is not None and it is not None else None
                          for it in items[1:]]
        chance = next((c for c in (chance_level(r, k) for r in results) if c is not None), None)
        out[k] = {"n": [len(it) if it is not None else None for it in items], "chance": chance, "tests": tests}
    return out


# protocol record entries that describe the machine or the run, not what is measured
_RUN_ONLY = frozenset({"started", "device", "batch_size", "data_root", "versions", "image_roots", "benchmarks_requested"})


def protocol_differences(results: Sequence[Dict], labels: Sequence[str]) -> List[str]:
    """``"order_seed: A 0, B 1"`` for every protocol setting that differs between the files: a
    paired test then compares items scored under different settings (e.g. other Order perturbations)."""
    protos = [r.get("protocol") or {} for r in results]
    keys = [k for k in dict.fromkeys(k for p in protos for k in p) if k not in _RUN_ONLY]
    out = []
    for k in keys:
        vals = [p.get(k) for p in protos]
        if any(v != vals[0] for v in vals[1:]):
            out.append(f"{k}: " + ", ".join(f"{lab} {json.dumps(v)}" for lab, v in zip(labels, vals)))
    return out


def _fmt_n(ns: Sequence[Optional[int]]) -> str:
    known = [n for n in ns if n is not None]
    if not known:
        return "-"
    if len(set(known)) == 1 and len(known) == len(ns):
        return str(known[0])
    return "/".join("-" if n is None else str(n) for n in ns)


def markdown_table(results: Sequence[Dict], labels: Sequence[str], alpha: float = ALPHA) -> str:
    """One table per benchmark: rows = metrics; n, chance, one column per model, and for each model after
    the first its difference to the first with the paired test's p-value (``ns`` where p >= alpha)."""
    keys = metric_keys(results)
    stats = metric_stats(results, keys)
    lines = ["# openclip-ce evaluation (values in %)", ""]
    delta = len(results) > 1
    p_head = (lambda lab: "p") if len(results) == 2 else (lambda lab: f"p ({lab})")
    for bench in dict.fromkeys(bench_of(k) for k in keys):
        lines += [f"## {bench}", ""]
        head = ["metric", "n", "chance", *labels]
        if delta:
            for lab in labels[1:]:
                head += [f"{lab} - {labels[0]}", p_head(lab)]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for k in (k for k in keys if bench_of(k) == bench):
            st = stats[k]
            vals = [r["summary"].get(k) for r in results]
            row = [k.split("/", 1)[1], _fmt_n(st["n"]), fmt_percent(st["chance"]), *map(fmt_percent, vals)]
            if delta:
                for v, test in zip(vals[1:], st["tests"][1:]):
                    if v is None or vals[0] is None:
                        row += ["-", "-"]
                        continue
                    ns = test is not None and test["p"] >= alpha
                    row += [f"{100 * (v - vals[0]):+.1f}" + (" ns" if ns else ""), fmt_p(test and test["p"])]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    notes = [f"- {lab}: skipped {b} ({n})" for lab, r in zip(labels, results) for b, n in (r.get("skipped") or {}).items()]
    if notes:
        lines += ["Skipped benchmarks:", "", *notes, ""]
    lines.append("n: items behind the metric (a mean over splits or groups pools their items); chance: the "
                 "accuracy of random guessing.")
    if delta:
        lines.append(f"p: {TEST_NAME}, of each model against {labels[0]}; a metric that averages splits or "
                     f"groups is tested on their pooled items. **ns**: not significant (p >= {alpha:g}): the "
                     f"difference may be noise. '-': a results file without per-item outcomes.")
    lines.append("")
    diffs = protocol_differences(results, labels) if delta else []
    if diffs:
        lines += ["**The files were evaluated under different protocol settings** (numbers and tests compare "
                  "unlike things where these matter):", "", *[f"- {d}" for d in diffs], ""]
    protocol = (results[0].get("protocol") or {}).get("document")
    if protocol:
        lines.append(f"Protocol: {protocol}")
    return "\n".join(lines) + "\n"
