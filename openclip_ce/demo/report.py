"""The demo's ``report.md``: what ran, CLIP vs CE-CLIP (or SigLIP vs CE-SigLIP) per held-out split, the
negatives make-shards wrote, training time and curves, and the representation analysis; every number
read from the files the stages wrote (results JSON, ``stats.json``, ``train_metrics.jsonl``, ``analysis.json``)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ..fileio import write_atomic
from ..metrics_file import read_metrics
from ..training.plots import gate_opened, read_training_metrics, plot_training_log

# which CE-CLIP negative type trains for which held-out split (SugarCrepe's names)
SPLIT_NOTES = {
    "swap_obj": "two shapes trade places (CE-CLIP's `rel` negatives: a noun swap)",
    "swap_att": "two colours trade places (binding; no negative type makes exactly this)",
    "replace_att": "a colour not in the picture (`att`: an adjective replaced)",
    "replace_obj": "a shape not in the picture (`obj`: a noun replaced)",
    "replace_rel": "another arrangement: above / touches / covers (`act` covers the two verbs)",
}


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _commands(logs: Path) -> List[str]:
    out = []
    for log in sorted(logs.glob("*.log"), key=lambda p: p.stat().st_mtime):
        first = log.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
        if first and first[0].startswith("$ "):
            out.append(f"- `{first[0][2:]}`  (log: `logs/{log.name}`)")
    return out


def _results_table(out: Path, runs: Sequence[Tuple[str, str]]) -> List[str]:
    (base, base_label), (ce, ce_label) = runs
    res = {name: json.loads((out / "results" / f"{name}.json").read_text()) for name, _ in runs}
    splits = res[base]["benchmarks"]["sugarcrepe"]["splits"]
    compare = json.loads((out / "report" / "compare.json").read_text())
    lines = [f"| held-out split | what the negative caption changes | n | {base_label} | {ce_label} | "
             f"{ce_label} - {base_label} | p |",
             "|---|---|---|---|---|---|---|"]
    for split, info in splits.items():
        a = res[base]["summary"].get(f"sugarcrepe/{split}")
        b = res[ce]["summary"].get(f"sugarcrepe/{split}")
        test = (compare.get("difference_vs_first", {}).get(f"sugarcrepe/{split}") or {}).get(ce_label)
        diff = f"{100 * (b - a):+.1f}" if a is not None and b is not None else "-"
        if test is not None and not test["significant"]:
            diff += " ns"
        p = "-" if test is None else ("<0.001" if test["p"] < 0.001 else f"{test['p']:.3f}")
        lines.append(f"| {split} | {SPLIT_NOTES.get(split, '')} | {info['n']} | {_pct(a)} | {_pct(b)} | {diff} | {p} |")
    means = [res[n]["summary"] for n, _ in runs]
    keys = [f"sugarcrepe/{s}" for s in splits]
    avg = [sum(m[k] for k in keys) / len(keys) for m in means]
    lines.append(f"| mean of the splits | | | {_pct(avg[0])} | {_pct(avg[1])} | {100 * (avg[1] - avg[0]):+.1f} | |")
    return lines


def _negatives_section(out: Path) -> List[str]:
    stats = json.loads((out / "data" / "train-neg" / "stats.json").read_text())
    lines = ["| type | what make-shards does | coverage |", "|---|---|---|"]
    what = {"rel": "swap two different nouns", "att": "replace an adjective", "act": "replace a verb",
            "obj": "replace a noun"}
    lines += [f"| {t} | {what[t]} | {100 * c:.1f}% of {stats['samples']} captions |" for t, c in stats["coverage"].items()]
    cleaned = json.loads((out / "data" / "train-neg" / "decontamination.json").read_text())
    removed = ", ".join(f"{t} {n} of {cleaned['negatives'][t]}" for t, n in cleaned["removed"].items())
    lines += ["", "Then every training negative that names a held-out combination (an `att` or `obj` edit can make one)",
              f"became a placeholder, so that no held-out caption is trained as wrong: {removed}.",
              "(coverage above is before this step)"]
    lines += ["", "Examples from the training shards:", ""]
    for ex in stats.get("examples", [])[:3]:
        lines.append(f"- \"{ex['caption']}\"")
        lines += [f"  - {t}: \"{v}\"" for t, v in ex["neg"].items() if v]
    return lines


def _analysis_section(out: Path) -> List[str]:
    a = json.loads((out / "report" / "analysis.json").read_text())
    labels = [m["label"] for m in a["models"]]
    lines = [f"On the {a['n_samples']} held-out pictures, with make-shards' negatives; {100 * a['ci']:g}% bootstrap "
             f"intervals ({a['bootstrap']} resamples); `*` = the {labels[-1]} - {labels[0]} difference excludes 0.", "",
             "| type | n | cos(T, T_k) " + " | ".join(labels) + " | gap S(I,T) - S(I,T_k) " + " | ".join(labels) + " |",
             "|---|---|" + "---|" * (2 * len(labels))]
    for t, e in a["types"].items():
        cells = []
        for metric in ("intra_similarity", "cross_modal_gap"):
            for j, lab in enumerate(labels):
                v = e["models"][lab][metric]["mean"]
                star = "*" if j and e["difference_vs_first"][lab][metric]["significant"] else ""
                cells.append(f"{v:.3f}{star}")
        lines.append(f"| {t} | {e['n']} | " + " | ".join(cells) + " |")
    return lines


def _schedule_lines(out: Path, ce: str, ce_label: str) -> List[str]:
    """What the CE run trained with: the plugin's start-up line on the CE terms' schedule (the defaults of a run
    from random weights, as a user gets them), the step its gate opened and the weights at the end."""
    log = (out / "runs" / ce / "out.log").read_text(encoding="utf-8", errors="replace")
    chosen = next((line.split("ce_clip schedule ", 1)[1] for line in log.splitlines() if "ce_clip schedule (" in line), None)
    if chosen is None:
        return []
    records = read_metrics(out / "runs" / ce / "out.log")
    opened, last = gate_opened(out / "runs" / ce / "out.log"), records[-1] if records else {}
    lines = [f"{ce_label} trained with the defaults of a run from random weights (no `--pretrained`), as a user gets "
             f"them: {chosen.split('. ', 1)[0]}."]
    if opened is not None:
        lines.append(f"The gate opened at step {opened[0]} of {last.get('step', '?')}; IMC and CMR trained from there, "
                     f"at weights {last.get('ce_imc_weight', float('nan')):.3g} and "
                     f"{last.get('ce_cmr_weight', float('nan')):.3g} at the end.")
    elif "IMC and CMR at weight 0" in chosen:
        lines.append(f"The gate never opened in {last.get('step', '?')} steps: IMC and CMR did not train.")
    return lines


def write_report(out: Path, *, sizes, seed: int, spacy_model: str, eval_counts: Dict[str, int],
                 timings: Dict[str, float], total_seconds: float, quick: bool,
                 runs: Sequence[Tuple[str, str]] = (("clip", "CLIP"), ("ce-clip", "CE-CLIP"))) -> Path:
    """``runs``: (run name, label) of the baseline and of the CE run, as trained by the demo."""
    report = out / "report"
    for name, _ in runs:
        plot_training_log(out / "runs" / name / "out.log", report / f"training_{name.replace('-', '_')}.png")
    final_loss = {}
    for name, _ in runs:
        _, series = read_training_metrics(out / "runs" / name / "out.log")
        final_loss[name] = series.get("loss", [float("nan")])[-1]
    (base, base_label), (ce, ce_label) = runs
    ce_png, base_png = (f"report/training_{n.replace('-', '_')}.png" for n in (ce, base))
    lines = [
        f"# openclip-ce demo: {base_label} vs {ce_label} on held-out compositions",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, seed {seed}, {total_seconds / 60:.1f} minutes in all"
        + (" (--quick: tiny sizes, a smoke test; the numbers mean nothing)" if quick else "") + ".",
        f"{sizes.train_images} training pictures, {sizes.eval_images} held-out pictures, {sizes.epochs} epochs of "
        f"batch {sizes.batch_size}, the same randomly initialised model config for both runs (`model/`).",
        *_schedule_lines(out, ce, ce_label),
        "",
        "## Result: pairwise accuracy on held-out compositions (`openclip-ce eval`, SugarCrepe reader)",
        "",
        "Each held-out picture combines two colours with two shapes in a way no training picture does (in either",
        "binding). An item is right when the model scores the true caption above the negative caption (chance: 50%);",
        "p: exact McNemar test on the same items (report/compare.md), `ns` = not significant at 0.05.",
        "",
        *_results_table(out, runs),
        "",
        "Chart: [report/compare.png](report/compare.png); table with every metric: report/compare.md.",
        "",
        "## Hard negatives written by `openclip-ce make-shards --filler vocab`",
        "",
        *_negatives_section(out),
        "",
        "## Training",
        "",
        "| run | seconds | last logged loss (sum of the terms) |",
        "|---|---|---|",
        *[f"| {lab} | {timings[f'train {lab}']:.0f} | {final_loss[n]:.3f} |" for n, lab in runs],
        "",
        f"{ce_label}'s loss terms, the four adaptive thresholds Th_k, the mean gaps and the share of valid negatives",
        f"over training (the paper's Fig. 5b/5d): [{ce_png}]({ce_png});",
        f"plain {base_label}: [{base_png}]({base_png}). open_clip's own logs: `runs/*/out.log`.",
        "",
        "## Representation analysis (`openclip-ce analyze`, the paper's Fig. 8)",
        "",
        *_analysis_section(out),
        "",
        "Chart: [report/analysis.png](report/analysis.png).",
        "",
        "## What was run",
        "",
        *_commands(out / "logs"),
        "",
        "## What this shows, and what it does not",
        "",
        "It shows every part of openclip-ce working together through its real entry points, and how CE-CLIP's",
        "hard negatives change what a model learns when everything else is equal. It is a toy: rendered shapes, a",
        f"small model trained from scratch for minutes on a CPU, {sizes.eval_images} held-out pictures and one seed",
        "per run. Differences of a few points can be noise (compare the runs of several `--seed` values), and",
        "nothing here predicts the size of CE-CLIP's gain for a CLIP fine-tuned on COCO (see docs/reproduce.md).",
        "",
        f"spaCy model: `{spacy_model}`. Held-out items per split: {eval_counts}.",
    ]
    path = out / "report.md"
    write_atomic(path, "\n".join(lines) + "\n")
    return path
