"""Published numbers to read one's results against: ``openclip-ce compare ... --reference paper``.

A reference file (``references/NAME.json`` in the package, or any path in the same schema) holds
the numbers of a paper's result tables, keyed by our summary metric names, each with the table and
column it was read from and, where the paper's protocol differs from ours, what differs. ``compare``
adds the reference models as columns, the difference of each of the user's models to the paper
model it reproduces, and marks (``†n``) the metrics whose protocol differs, with the reason.

Schema::

    {"name", "title", "source", "units": "percent", "models": [...], "notes": [...],
     "metrics": [{"metric": "aro/vg_relation_macro", "table": "Table 1", "column": "ARO Relation",
                  "values": {"CLIP": 59.3, ...}, "protocol_difference": "..." (optional)}, ...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import UserError
from . import registry
from .common import decode_json
from .report import bench_of, fmt_percent

REFERENCES = Path(__file__).with_name("references")


@dataclass
class Reference:
    name: str
    title: str
    models: List[str]
    notes: List[str]
    values: Dict[str, Dict[str, float]]           # metric -> model -> fraction (0..1)
    where: Dict[str, str]                         # metric -> "Table 1, ARO Relation"
    differences: Dict[str, str] = field(default_factory=dict)  # metric -> what differs from our protocol


def available() -> List[str]:
    return sorted(p.stem for p in REFERENCES.glob("*.json"))


def load_reference(spec: str) -> Reference:
    """``spec``: a reference shipped with the package (``paper``) or a path to a file in the same schema."""
    path = REFERENCES / f"{spec}.json" if (REFERENCES / f"{spec}.json").is_file() else Path(spec)
    if not path.is_file():
        raise UserError(f"--reference {spec}: neither a shipped reference ({', '.join(available())}) nor a file")
    data = decode_json(path.read_bytes(), f"--reference {path}")  # one line for bytes, syntax and nesting alike
    try:
        models = list(data["models"])
        ref = Reference(data["name"], data["title"], models, list(data.get("notes", [])), {}, {})
        for entry in data["metrics"]:
            key = entry["metric"]
            unknown = set(entry["values"]) - set(models)
            if unknown:
                raise ValueError(f"metric {key}: values for models {sorted(unknown)} not in 'models'")
            scale = 100.0 if data.get("units", "percent") == "percent" else 1.0
            ref.values[key] = {m: float(v) / scale for m, v in entry["values"].items()}
            ref.where[key] = f"{entry['table']}, {entry['column']}"
            if entry.get("protocol_difference"):
                ref.differences[key] = entry["protocol_difference"]
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise UserError(f"--reference {path}: not a reference file ({type(e).__name__}: {e})") from e
    return ref


def pair_models(labels: Sequence[str], ref: Reference, pairs: Sequence[str]) -> Dict[str, str]:
    """Which paper model each of the user's models reproduces: ``LABEL=MODEL`` pairs, else equal names
    (case-insensitive). Unpaired models get no difference column."""
    out: Dict[str, str] = {}
    by_lower = {m.lower(): m for m in ref.models}
    for lab in labels:
        if lab.lower() in by_lower:
            out[lab] = by_lower[lab.lower()]
    for spec in pairs:
        lab, sep, model = spec.partition("=")
        if not sep or lab not in labels or model not in ref.models:
            raise UserError(f"--reference-pair {spec!r}: expected LABEL=MODEL with LABEL in {list(labels)} "
                            f"and MODEL in {ref.models}")
        out[lab] = model
    return out


def reference_section(results: Sequence[Dict], labels: Sequence[str], ref: Reference,
                      paired: Dict[str, str]) -> Tuple[str, Dict]:
    """The Markdown section ``compare`` appends, and the same as JSON."""
    keys = [k for k in ref.values if any(k in r["summary"] for r in results)]
    footnotes: List[str] = []
    marks: Dict[str, str] = {}
    for k in keys:
        if k in ref.differences:
            footnotes.append(ref.differences[k])
            marks[k] = f"†{len(footnotes)}"
    head = ["metric", *labels, *[f"paper: {m}" for m in ref.models],
            *[f"{lab} - paper {m}" for lab, m in paired.items()], "paper's table"]
    lines = [f"## Against {ref.title}", "",
             "Values in %; `-`: not reported. `†n`: the paper's protocol differs for this metric (notes below).",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = {}
    for k in keys:
        ours = {lab: r["summary"].get(k) for lab, r in zip(labels, results)}
        theirs = ref.values[k]
        diffs = {lab: (ours[lab] - theirs[m]) if ours[lab] is not None and m in theirs else None
                 for lab, m in paired.items()}
        cells = [f"{k} {marks.get(k, '')}".strip(), *(fmt_percent(ours[lab]) for lab in labels),
                 *(fmt_percent(theirs.get(m)) for m in ref.models),
                 *("-" if d is None else f"{100 * d:+.1f}" for d in diffs.values()), ref.where[k]]
        lines.append("| " + " | ".join(cells) + " |")
        rows[k] = {"ours": ours, "paper": theirs, "difference": diffs, "where": ref.where[k],
                   "protocol_difference": ref.differences.get(k)}
    missing = [k for k in ref.values if k not in keys]
    lines.append("")
    if footnotes:
        lines += ["Where the protocols differ:", ""] + [f"- †{i}: {t}" for i, t in enumerate(footnotes, 1)] + [""]
    if ref.notes:
        lines += ["About the paper's numbers:", ""] + [f"- {t}" for t in ref.notes] + [""]
    if missing:
        present = {bench_of(k) for k in keys}
        absent = sorted({bench_of(k) for k in missing} - present)
        partial = [k for k in missing if bench_of(k) in present]
        if absent:
            lines += [f"Benchmarks of the paper not in these results (not evaluated or skipped): {', '.join(absent)}."
                      + (f" `openclip-ce eval --benchmarks {ref.name}` runs every benchmark the paper reports."
                         if ref.name in registry.preset_names() else ""), ""]
        if partial:
            lines += [f"Metrics of the paper not in these results (a part of the benchmark not evaluated or skipped): "
                      f"{', '.join(partial)}.", ""]
    return "\n".join(lines) + "\n", {"name": ref.name, "title": ref.title, "paired": paired, "metrics": rows,
                                      "notes": ref.notes, "not_in_results": missing}


def chart_series(ref: Reference, keys: Sequence[str]) -> List[Tuple[str, Dict[str, Optional[float]]]]:
    """``[(label, {key: value})]`` of the reference models, for the chart's outlined bars."""
    return [(f"paper: {m}", {k: ref.values.get(k, {}).get(m) for k in keys}) for m in ref.models
            if any(m in ref.values.get(k, {}) for k in keys)]
