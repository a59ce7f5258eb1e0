"""``openclip-ce compare``: a Markdown table, a PNG bar chart and a JSON from several ``eval`` results.

Only the ``summary`` of each results file is compared (``"<benchmark>/<metric>": value``); every
metric present in at least one file gets a row (``-`` where a model lacks it). Values are shown in
percent. The chart shows the headline metrics of each benchmark (``--chart all`` for every one).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence

log = logging.getLogger("openclip_ce.compare")

BENCHMARK_ORDER = ("aro", "sugarcrepe", "valse", "vl-checklist", "winoground", "zeroshot")
HEADLINE = (
    "aro/vg_relation_macro", "aro/vg_attribution_macro", "aro/coco_order", "aro/flickr30k_order",
    "sugarcrepe/replace", "sugarcrepe/swap", "sugarcrepe/add", "sugarcrepe/avg",
    "valse/instrument/*", "valse/avg",
    "vl-checklist/attribute", "vl-checklist/object", "vl-checklist/relation", "vl-checklist/avg",
    "winoground/text", "winoground/image", "winoground/group",
    "zeroshot/*/acc1",
)


class CompareError(ValueError):
    pass


def load_results(path: str | Path) -> Dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CompareError(f"{path}: cannot read results JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("summary"), dict):
        raise CompareError(f"{path}: not an `openclip-ce eval` results file (no 'summary' object)")
    for k, v in data["summary"].items():
        if v is not None and not isinstance(v, (int, float)):
            raise CompareError(f"{path}: summary[{k!r}] is {type(v).__name__}, expected a number")
    return data


def unique_labels(results: Sequence[Dict], paths: Sequence[str], labels: Optional[Sequence[str]]) -> List[str]:
    if labels:
        if len(labels) != len(results):
            raise CompareError(f"--labels: {len(labels)} labels for {len(results)} files")
        out = list(labels)
    else:
        out = [(r.get("model") or {}).get("label") or Path(p).stem for r, p in zip(results, paths)]
    counts = Counter(out)
    if len(counts) == len(out):
        return out
    # duplicates: name each by its file (parent folder too), then by position if that is not enough
    named = [f"{lab} ({Path(p).parent.name}/{Path(p).stem})" if counts[lab] > 1 else lab
             for lab, p in zip(out, paths)]
    if len(set(named)) != len(named):
        named = [f"{lab} (#{i + 1})" if counts[lab] > 1 else lab for i, lab in enumerate(out)]
    return named


def _bench_of(key: str) -> str:
    return key.split("/", 1)[0]


def metric_keys(results: Sequence[Dict]) -> List[str]:
    keys: List[str] = []
    for r in results:
        keys += [k for k in r["summary"] if k not in keys]
    rank = {b: i for i, b in enumerate(BENCHMARK_ORDER)}
    return sorted(keys, key=lambda k: (rank.get(_bench_of(k), len(rank)), keys.index(k)))


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def markdown_table(results: Sequence[Dict], labels: Sequence[str]) -> str:
    """One table per benchmark: rows = metrics, columns = models (+ difference to the first)."""
    keys = metric_keys(results)
    lines = ["# openclip-ce evaluation (values in %)", ""]
    delta = len(results) > 1
    for bench in dict.fromkeys(_bench_of(k) for k in keys):
        lines += [f"## {bench}", ""]
        head = ["metric", *labels] + ([f"{lab} - {labels[0]}" for lab in labels[1:]] if delta else [])
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for k in (k for k in keys if _bench_of(k) == bench):
            vals = [r["summary"].get(k) for r in results]
            row = [k.split("/", 1)[1], *map(_fmt, vals)]
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


def chart_keys(keys: Sequence[str], which: str) -> List[str]:
    if which == "all":
        return list(keys)
    return [k for k in keys if any(fnmatch.fnmatchcase(k, pat) for pat in HEADLINE)]


def bar_chart(results: Sequence[Dict], labels: Sequence[str], keys: Sequence[str], png: Path) -> None:
    """Grouped bars, one panel per benchmark, written atomically to ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from openclip_ce.fileio import write_atomic

    benches = list(dict.fromkeys(_bench_of(k) for k in keys))
    if not benches:
        raise CompareError("no metric to chart")
    per = {b: [k for k in keys if _bench_of(k) == b] for b in benches}
    width_units = max(len(v) for v in per.values())
    fig, axes = plt.subplots(len(benches), 1, figsize=(max(7.0, 1.1 * width_units * max(1, len(labels)) ** 0.5 + 2),
                                                        2.9 * len(benches)), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    bw = 0.8 / len(labels)
    for ax, bench in zip(axes[:, 0], benches):
        ks = per[bench]
        x = np.arange(len(ks))
        for j, (lab, r) in enumerate(zip(labels, results)):
            vals = np.array([100 * r["summary"][k] if r["summary"].get(k) is not None else np.nan for k in ks])
            bars = ax.bar(x + (j - (len(labels) - 1) / 2) * bw, vals, bw, label=lab, color=colors[j % 10])
            for rect, v in zip(bars, vals):
                if np.isfinite(v):
                    ax.annotate(f"{v:.1f}", (rect.get_x() + rect.get_width() / 2, v), ha="center", va="bottom",
                                fontsize=7, xytext=(0, 1), textcoords="offset points")
        ax.set_xticks(x, [k.split("/", 1)[1] for k in ks], rotation=20 if len(ks) > 4 else 0, ha="right" if len(ks) > 4 else "center", fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.set_title(bench, fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=min(len(labels), 4), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_atomic(png, buf.getvalue())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="results JSON files written by `openclip-ce eval`")
    p.add_argument("--out", required=True, help="output prefix: writes OUT.md, OUT.png and OUT.json")
    p.add_argument("--labels", default=None, help="comma-separated model labels (default: from each file)")
    p.add_argument("--chart", choices=("headline", "all"), default="headline",
                   help="which summary metrics the PNG shows (the table always has all)")


def run(args) -> int:
    from openclip_ce.evaluate.common import json_dumps
    from openclip_ce.fileio import write_atomic

    if not logging.getLogger().handlers:
        logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    try:
        results = [load_results(p) for p in args.results]
        labels = unique_labels(results, args.results, args.labels.split(",") if args.labels else None)
        keys = metric_keys(results)
        if not keys:
            raise CompareError("the results files have empty summaries")
        out = Path(args.out)
        write_atomic(Path(f"{out}.md"), markdown_table(results, labels))
        bar_chart(results, labels, chart_keys(keys, args.chart) or keys, Path(f"{out}.png"))
    except CompareError as e:
        log.error("%s", e)
        return 2
    table = {k: {lab: r["summary"].get(k) for lab, r in zip(labels, results)} for k in keys}
    write_atomic(Path(f"{out}.json"), json_dumps({"models": labels, "files": list(args.results), "summary": table}))
    log.info("wrote %s.md, %s.png and %s.json", out, out, out)
    return 0
