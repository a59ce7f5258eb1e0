"""``openclip-ce compare``: a Markdown table, a PNG bar chart and a JSON from several ``eval`` results.

The ``summary`` of each results file is compared (``"<benchmark>/<metric>": value``); every
metric present in at least one file gets a row (``-`` where a model lacks it). Values are shown in
percent, with the number of items n behind each metric and its chance level. Each model after the
first is compared with the first on the same items: the exact McNemar test (two-sided) on the
per-item outcomes the results files keep (:mod:`.outcomes`); a difference with p >= ``--alpha``
is marked ``ns`` (not significant: it may be noise). The chart shows the headline metrics of each
benchmark (``--chart all`` for every one) with the chance level drawn as a dashed line, and bars
that do not differ significantly from the first model hatched.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError
from ..fileio import check_prefix, write_atomic
from ..plotting import pyplot, save_figure
from . import registry
from .common import json_dumps
from .outcomes import TEST_NAME
from .reference import available, chart_series, load_reference, pair_models, reference_section
from .report import (ALPHA, bench_of, load_results, markdown_table, metric_keys, metric_stats,
                     protocol_differences)

log = logging.getLogger(__name__)

REF_EDGES = ("black", "dimgray", "darkgoldenrod", "firebrick", "navy")  # outlines of published-number bars


def unique_labels(results: Sequence[Dict], paths: Sequence[str], labels: Optional[Sequence[str]]) -> List[str]:
    if labels:
        if len(labels) != len(results):
            raise UserError(f"--labels: {len(labels)} labels for {len(results)} files")
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


def chart_keys(keys: Sequence[str], which: str) -> List[str]:
    """Every key, or the headline metrics each benchmark's registry record names."""
    if which == "all":
        return list(keys)
    out = []
    for k in keys:
        bench = registry.find(bench_of(k))
        if bench is not None and bench.is_headline(k.split("/", 1)[1]):
            out.append(k)
    return out


def bar_chart(results: Sequence[Dict], labels: Sequence[str], keys: Sequence[str], png: Path,
              alpha: float = ALPHA, references: Sequence[Tuple[str, Dict[str, Optional[float]]]] = ()) -> Dict:
    """Grouped bars, one panel per benchmark, written atomically to ``png``.

    Dashed black line over each metric: its chance level. Hatched bar: the difference to the first
    model is not significant (McNemar p >= alpha) on the items both were scored on. Outlined bars:
    ``references`` (published numbers, ``(label, {key: value})``). Returns what was drawn:
    ``{"chance": {key: level}, "not_significant": [(label, key)]}``."""
    plt = pyplot()
    benches = list(dict.fromkeys(bench_of(k) for k in keys))
    if not benches:
        raise UserError("no metric to chart")
    stats = metric_stats(results, keys)
    per = {b: [k for k in keys if bench_of(k) == b] for b in benches}
    width_units = max(len(v) for v in per.values())
    fig, axes = plt.subplots(len(benches), 1, figsize=(max(7.0, 1.1 * width_units * max(1, len(labels)) ** 0.5 + 2),
                                                        2.9 * len(benches)), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    n_series = len(labels) + len(references)
    bw = 0.8 / n_series
    drew = {"chance": False, "ns": False}
    drawn: Dict = {"chance": {}, "not_significant": []}
    for ax, bench in zip(axes[:, 0], benches):
        ks = per[bench]
        x = np.arange(len(ks))
        for j, (lab, r) in enumerate(zip(labels, results)):
            vals = np.array([100 * r["summary"][k] if r["summary"].get(k) is not None else np.nan for k in ks])
            bars = ax.bar(x + (j - (n_series - 1) / 2) * bw, vals, bw, label=lab, color=colors[j % 10])
            for rect, v, k in zip(bars, vals, ks):
                test = stats[k]["tests"][j]
                if j and test is not None and test["p"] >= alpha and np.isfinite(v):
                    rect.set_hatch("///")
                    rect.set_edgecolor("white")
                    drew["ns"] = True
                    drawn["not_significant"].append((lab, k))
                if np.isfinite(v):
                    ax.annotate(f"{v:.1f}", (rect.get_x() + rect.get_width() / 2, v), ha="center", va="bottom",
                                fontsize=7, xytext=(0, 1), textcoords="offset points")
        for r, (lab, values) in enumerate(references):
            vals = np.array([100 * values[k] if values.get(k) is not None else np.nan for k in ks])
            ax.bar(x + (len(labels) + r - (n_series - 1) / 2) * bw, vals, bw, facecolor="none",
                   edgecolor=REF_EDGES[r % len(REF_EDGES)], linewidth=1.2)
        for xi, k in zip(x, ks):
            c = stats[k]["chance"]
            if c is not None:
                ax.hlines(100 * c, xi - 0.45, xi + 0.45, colors="black", linestyles="--", lw=1.1, zorder=3)
                drew["chance"] = True
                drawn["chance"][k] = c
        ticks = []
        for k in ks:
            ns = [n for n in stats[k]["n"] if n is not None]
            n_text = "" if not ns else f"\n(n={ns[0]})" if len(set(ns)) == 1 else f"\n(n={min(ns)}-{max(ns)})"
            ticks.append(k.split("/", 1)[1] + n_text)
        ax.set_xticks(x, ticks, rotation=20 if len(ks) > 4 else 0, ha="right" if len(ks) > 4 else "center", fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.set_title(bench, fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    # plain swatches: a model's first bar may be hatched, and the legend would copy that
    handles = [Patch(facecolor=colors[j % 10]) for j in range(len(labels))]
    handles += [Patch(facecolor="none", edgecolor=REF_EDGES[r % len(REF_EDGES)]) for r in range(len(references))]
    names = list(labels) + [lab for lab, _ in references]
    if drew["chance"]:
        handles.append(Line2D([], [], color="black", linestyle="--", lw=1.1))
        names.append("chance level")
    if drew["ns"]:
        handles.append(Patch(facecolor="white", hatch="///", edgecolor="dimgray"))
        names.append(f"not significantly different from {labels[0]} (McNemar p >= {alpha:g})")
    fig.legend(handles, names, loc="upper center", ncol=min(len(names), 3), fontsize=8, frameon=False)
    rows = -(-len(names) // min(len(names), 3))
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.25 + 0.2 * rows) / fig.get_figheight()))
    save_figure(fig, png)
    return drawn


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="results JSON files written by `openclip-ce eval`")
    p.add_argument("--out", required=True, help="output prefix: writes OUT.md, OUT.png and OUT.json")
    p.add_argument("--labels", default=None, help="comma-separated model labels (default: from each file)")
    p.add_argument("--chart", choices=("headline", "all"), default="headline",
                   help="which summary metrics the PNG shows (the table always has all)")
    p.add_argument("--alpha", type=float, default=ALPHA,
                   help="significance level: a difference to the first model with McNemar p >= alpha is marked ns")
    p.add_argument("--reference", default=None, metavar="NAME|FILE",
                   help=f"published numbers beside yours ({', '.join(available())}: the CE-CLIP paper's tables), "
                        f"with the difference to the paper and protocol differences marked")
    p.add_argument("--reference-pair", action="append", default=[], metavar="LABEL=MODEL",
                   help="which paper model one of your models reproduces (default: the same name, e.g. CE-CLIP)")


def run(args) -> int:
    results = [load_results(p) for p in args.results]
    labels = unique_labels(results, args.results, args.labels.split(",") if args.labels else None)
    keys = metric_keys(results)
    if not keys:
        raise UserError("the results files have empty summaries")
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha must be in (0, 1), got {args.alpha}")
    for i, (path, r) in enumerate(zip(args.results, results)):
        others = [o for j, o in enumerate(results) if j != i]
        if others and not any(set(r["summary"]) & set(o["summary"]) for o in others):
            theirs = sorted({b for o in others for b in o.get("benchmarks", {})})
            raise UserError(f"{path} shares no metric with the other results files (benchmarks "
                            f"{', '.join(sorted(r.get('benchmarks', {}))) or 'none'} against "
                            f"{', '.join(theirs) or 'none'}): nothing to compare")
    out = check_prefix(args.out, ".md")
    md, ref_json, ref_series = markdown_table(results, labels, args.alpha), None, ()
    if args.reference:
        ref = load_reference(args.reference)
        section, ref_json = reference_section(results, labels, ref, pair_models(labels, ref, args.reference_pair))
        md += "\n" + section
        if ref_json["not_in_results"]:
            log.warning("%d metric(s) of %s are not in these results: %s", len(ref_json["not_in_results"]),
                        ref.title, ", ".join(ref_json["not_in_results"]))
        ref_series = chart_series(ref, keys)
    write_atomic(Path(f"{out}.md"), md)
    bar_chart(results, labels, chart_keys(keys, args.chart) or keys, Path(f"{out}.png"), args.alpha, ref_series)
    stats = metric_stats(results, keys)
    for d in protocol_differences(results, labels):
        log.warning("protocol settings differ between the results files: %s", d)
    table = {k: {lab: r["summary"].get(k) for lab, r in zip(labels, results)} for k in keys}
    n = {k: dict(zip(labels, stats[k]["n"])) for k in keys}
    tests = {k: {lab: (dict(t, significant=t["p"] < args.alpha) if t is not None else None)
                 for lab, t in zip(labels[1:], stats[k]["tests"][1:])} for k in keys}
    write_atomic(Path(f"{out}.json"), json_dumps({
        "models": labels, "files": list(args.results), "summary": table, "n": n,
        "chance": {k: stats[k]["chance"] for k in keys},
        "test": f"{TEST_NAME}, each model against {labels[0]}; alpha {args.alpha:g}",
        "difference_vs_first": tests, "reference": ref_json}))
    log.info("wrote %s.md, %s.png and %s.json", out, out, out)
    return 0
