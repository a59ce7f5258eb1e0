"""The zero-shot / compositional trade-off of a sweep: two numbers per alpha, the chosen alpha, table, chart.

Definitions (written into every sweep JSON as ``definitions``; docs/wise-ft.md says the same):

* **zero-shot** = the mean top-1 accuracy over the zero-shot datasets evaluated (the summary
  metrics ``zeroshot/<dataset>/acc1``, e.g. ImageNet-1k, CIFAR-10, CIFAR-100).
* **compositional average** = the unweighted mean, over the compositional benchmarks evaluated
  (every benchmark but ``zeroshot``), of one score per benchmark: its summary metric ``avg`` when it
  reports one (SugarCrepe: mean of its 7 splits; VALSE: mean of its 11 pieces; VL-CheckList: mean of
  Object, Attribute, Relation), otherwise the mean of its headline metrics from the registry (ARO:
  VG-Relation macro, VG-Attribution macro, COCO-Order, Flickr30k-Order; Winoground: text, image,
  group). Each benchmark weighs the same however many metrics it has, and a new benchmark module
  takes part through its registry record.
* **chosen alpha** = among the alphas whose zero-shot is at least ``keep_zeroshot`` times the base's
  (alpha 0), the one with the highest compositional average (ties: higher zero-shot, then smaller
  alpha). The base always qualifies, so there is always a choice.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import UserError
from ..plotting import pyplot, save_figure
from ..evaluate import registry
from ..evaluate.report import fmt_percent

ZEROSHOT = "zeroshot"
EPS = 1e-12  # accuracies are ratios of counts: an alpha exactly at the threshold qualifies

DEFINITIONS = {
    "zeroshot": "mean top-1 accuracy over the zero-shot datasets evaluated (summary metrics zeroshot/<dataset>/acc1)",
    "compositional_average": (
        "unweighted mean over the compositional benchmarks evaluated (all but zeroshot) of one score per "
        "benchmark: its summary metric 'avg' when it has one (sugarcrepe: mean of 7 splits, valse: mean of 11 "
        "pieces, vl-checklist: mean of object/attribute/relation), else the mean of its headline metrics "
        "(aro: vg_relation_macro, vg_attribution_macro, coco_order, flickr30k_order; winoground: text, image, "
        "group); metrics_used lists the exact summary keys"),
    "chosen_alpha": (
        "among the alphas with zero-shot >= keep_zeroshot * zero-shot at alpha 0 (the base), the highest "
        "compositional average; ties: higher zero-shot, then smaller alpha"),
    "alpha": "weights = (1 - alpha) * base + alpha * fine-tuned: alpha 0 is the base, alpha 1 the fine-tuned model",
}


def _finite_mean(values: Iterable[Optional[float]]) -> Optional[float]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None


def score_metrics(bench: str, metrics: Sequence[str]) -> List[str]:
    """The summary metrics (without the ``bench/`` prefix) whose mean is the benchmark's one score."""
    if bench != ZEROSHOT and "avg" in metrics:
        return ["avg"]
    record = registry.find(bench)
    headline = [m for m in metrics if record is not None and record.is_headline(m)]
    return headline or list(metrics)


def metrics_used(summaries: Sequence[Dict[str, float]]) -> Dict[str, List[str]]:
    """``{benchmark: [summary keys]}`` for every benchmark present in any of ``summaries``."""
    per: Dict[str, List[str]] = {}
    for summary in summaries:
        for key in summary:
            bench, _, metric = key.partition("/")
            if metric and metric not in per.setdefault(bench, []):
                per[bench].append(metric)
    order = {b: i for i, b in enumerate(registry.names())}
    return {b: [f"{b}/{m}" for m in score_metrics(b, ms)]
            for b, ms in sorted(per.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))}


def tradeoff(points: Sequence[Tuple[float, Dict[str, float]]], keep: float) -> Dict:
    """Zero-shot, benchmark scores and compositional average per alpha, and the chosen alpha.

    ``points``: ``(alpha, summary)`` with ``summary`` as in an eval results file; alpha 0 and 1 must be there."""
    points = sorted(points, key=lambda p: p[0])
    alphas = [a for a, _ in points]
    if 0.0 not in alphas or 1.0 not in alphas:
        raise ValueError("the sweep needs alpha 0 (base) and 1 (fine-tuned)")
    if not 0.0 < keep <= 1.0:
        raise UserError(f"--keep-zeroshot must be in (0, 1], got {keep}")
    used = metrics_used([s for _, s in points])
    if ZEROSHOT not in used:
        raise UserError("no zero-shot result: the trade-off needs the zeroshot benchmark (--zeroshot-datasets)")
    compositional = [b for b in used if b != ZEROSHOT]
    if not compositional:
        raise UserError("no compositional benchmark result: the trade-off needs at least one besides zeroshot")
    rows = []
    for alpha, summary in points:
        scores = {b: _finite_mean(summary.get(k) for k in used[b]) for b in compositional}
        rows.append({
            "alpha": alpha, "role": "base" if alpha == 0.0 else "fine-tuned" if alpha == 1.0 else "interpolated",
            "zeroshot": _finite_mean(summary.get(k) for k in used[ZEROSHOT]),
            "compositional_average": _finite_mean(scores.values()),
            "benchmark_scores": scores,
            "zeroshot_datasets": {k.split("/", 1)[1]: summary.get(k) for k in used[ZEROSHOT]},
        })
    base_zs = rows[0]["zeroshot"]
    if base_zs is None:
        raise UserError("the base model (alpha 0) has no finite zero-shot accuracy")
    threshold = keep * base_zs
    for r in rows:
        zs = r["zeroshot"]
        r["zeroshot_share_of_base"] = zs / base_zs if zs is not None and base_zs > 0 else None
        r["keeps_zeroshot"] = zs is not None and zs >= threshold - EPS
    eligible = [r for r in rows if r["keeps_zeroshot"] and r["compositional_average"] is not None]
    if not eligible:
        raise UserError("no alpha has both a zero-shot accuracy and a compositional average")
    best = max(eligible, key=lambda r: (r["compositional_average"], r["zeroshot"], -r["alpha"]))
    for r in rows:
        r["chosen"] = r is best
    return {"keep_zeroshot": keep, "base_zeroshot": base_zs, "zeroshot_threshold": threshold,
            "definitions": DEFINITIONS, "metrics_used": used, "compositional_benchmarks": compositional,
            "points": rows, "chosen_alpha": best["alpha"]}


def _alpha(a: float) -> str:
    return f"{a:g}"


def markdown(trade: Dict, title: str, command: Optional[str] = None) -> str:
    """One row per alpha: zero-shot, its share of the base's, the compositional average, each benchmark."""
    benches = trade["compositional_benchmarks"]
    datasets = list(trade["points"][0]["zeroshot_datasets"])
    head = ["alpha", "model", "zero-shot", "share of base zero-shot", "compositional avg", *benches,
            *(f"zeroshot/{d}" for d in datasets)]
    lines = [f"# {title} (values in %)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in trade["points"]:
        role = r["role"] + (" **(chosen)**" if r["chosen"] else "")
        alpha = f"**{_alpha(r['alpha'])}**" if r["chosen"] else _alpha(r["alpha"])
        cells = [alpha, role, fmt_percent(r["zeroshot"]), fmt_percent(r["zeroshot_share_of_base"]),
                 fmt_percent(r["compositional_average"]), *(fmt_percent(r["benchmark_scores"][b]) for b in benches),
                 *(fmt_percent(r["zeroshot_datasets"][d]) for d in datasets)]
        lines.append("| " + " | ".join(cells) + " |")
    best = next(r for r in trade["points"] if r["chosen"])
    lines += ["", f"**Chosen: alpha = {_alpha(best['alpha'])}**: the best compositional average "
                  f"({fmt_percent(best['compositional_average'])}) among the alphas that keep at least "
                  f"{100 * trade['keep_zeroshot']:g}% of the base's zero-shot accuracy "
                  f"(zero-shot >= {fmt_percent(trade['zeroshot_threshold'])}).", ""]
    if command:
        lines += ["Write that checkpoint:", "", "```bash", command, "```", ""]
    lines += ["Definitions:", ""] + [f"- {k}: {v}" for k, v in trade["definitions"].items()] + [""]
    lines += ["Metrics averaged:", ""] + [f"- {b}: {', '.join(ks)}" for b, ks in trade["metrics_used"].items()] + [""]
    return "\n".join(lines)


def figure(trade: Dict, title: str):
    """Zero-shot (x) against compositional average (y), one point per alpha joined in alpha order;
    base, fine-tuned and the chosen alpha marked; the zero-shot the choice must keep as a dashed line,
    the region below it shaded."""
    plt = pyplot()
    pts = [r for r in trade["points"] if r["zeroshot"] is not None and r["compositional_average"] is not None]
    xs = [100 * r["zeroshot"] for r in pts]
    ys = [100 * r["compositional_average"] for r in pts]
    thr = 100 * trade["zeroshot_threshold"]
    fig, ax = plt.subplots(figsize=(8, 6))
    lo, hi = min(xs + [thr]), max(xs + [thr])
    pad = max(0.5, 0.08 * (hi - lo))
    ax.set_xlim(lo - pad, hi + pad)
    ylo, yhi = min(ys), max(ys)
    ypad = max(0.5, 0.12 * (yhi - ylo))
    ax.set_ylim(ylo - ypad, yhi + ypad)
    keep = f"{100 * trade['keep_zeroshot']:g}%"
    ax.axvspan(lo - pad, thr, color="0.92", zorder=0, label=f"keeps < {keep} of base zero-shot")
    ax.axvline(thr, color="tab:green", linestyle="--", linewidth=1, zorder=1, label=f"{keep} of base zero-shot")
    ax.plot(xs, ys, "-o", color="tab:gray", markersize=5, zorder=2, label="interpolation, one point per alpha")
    for r, x, y in zip(pts, xs, ys):
        ax.annotate(f"α={_alpha(r['alpha'])}", (x, y), xytext=(13 if r["chosen"] else 8, -4), textcoords="offset points",
                    fontsize=8)
    marks = {"base": ("s", "tab:blue", 10, "base (α=0)"), "fine-tuned": ("*", "tab:red", 15, "fine-tuned (α=1)")}
    for r, x, y in zip(pts, xs, ys):
        if r["role"] in marks:
            m, c, size, lab = marks[r["role"]]
            ax.plot([x], [y], m, color=c, markersize=size, zorder=3, label=lab)
        if r["chosen"]:
            ax.plot([x], [y], "o", markersize=18, markerfacecolor="none", markeredgecolor="tab:green",
                    markeredgewidth=2.5, zorder=4, label=f"chosen: α={_alpha(r['alpha'])}")
    datasets = ", ".join(d.removesuffix("/acc1") for d in pts[0]["zeroshot_datasets"])
    ax.set_xlabel(f"zero-shot accuracy (%): mean top-1 over {datasets}")
    ax.set_ylabel("compositional average (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", markerscale=0.7)
    fig.text(0.01, 0.01, "compositional average: mean of one score per benchmark ("
             + ", ".join(trade["compositional_benchmarks"]) + "); definitions in the JSON / docs/wise-ft.md",
             fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def write_chart(trade: Dict, title: str, png: Path) -> None:
    save_figure(figure(trade, title), png)
