"""Plots of a training run's loss terms, CE term weights and CE-CLIP thresholds, from its ``train_metrics.jsonl``
(:mod:`openclip_ce.metrics_file`)."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from ..plotting import pyplot, save_figure
from ..metrics_file import metrics_path, read_metrics


def read_training_metrics(run: str | os.PathLike) -> Tuple[List[int], Dict[str, List[float]]]:
    """``(samples seen, {metric: values})`` of a run: the loss terms (``loss``, ``*_loss``) and the ``ce_*``
    metrics of every logged step. ``run``: the run's directory, its metrics file or another file in the
    run's directory (e.g. open_clip's ``out.log``): the metrics are read from ``train_metrics.jsonl``."""
    records = read_metrics(run)
    keys = [k for k in dict.fromkeys(k for r in records for k in r)
            if k == "loss" or k.endswith("_loss") or k.startswith("ce_")]
    xs = [int(r["samples"]) for r in records]
    return xs, {k: [float(r.get(k, float("nan"))) for r in records] for k in keys}


def gate_opened(run: str | os.PathLike) -> Optional[Tuple[int, int]]:
    """``(step, samples seen before it)`` of the first step whose IMC and CMR trained under the schedule
    (``ce_gate_open_step`` of the metrics file), or None: the gate never opened, or no schedule ran."""
    for r in read_metrics(run):
        if "ce_gate_open_step" in r:
            step = int(r["ce_gate_open_step"])
            per_step = int(r["samples"]) // max(1, int(r["step"]))  # the run's global batch
            return step, (step - 1) * per_step
    return None


def plot_training_log(run: str | os.PathLike, png_path: str | os.PathLike) -> str:
    """Draw a run's loss terms, IMC / CMR weights, thresholds, gaps and valid shares, with the step at which the
    schedule's gate opened (``run`` as for :func:`read_training_metrics`)."""
    plt = pyplot()
    xs, series = read_training_metrics(run)
    if not xs:
        raise ValueError(f"{metrics_path(run)}: no training records to plot")
    panels = [
        ("loss terms (weighted, as summed)", [k for k in series if k.endswith("_loss") or k == "loss"]),
        ("schedule: IMC / CMR weights in use, progress", [k for k in ("ce_imc_weight", "ce_cmr_weight", "ce_progress")
                                                           if k in series]),
        ("CMR thresholds Th_k", [k for k in series if k.startswith("ce_threshold_")]),
        ("mean gap S(I,T) - S(I,T_k)", [k for k in series if k.startswith("ce_gap_")]),
        ("share of valid negatives", [k for k in series if k.startswith("ce_valid_")]),
    ]
    panels = [(t, ks) for t, ks in panels if ks]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    opened = gate_opened(run)
    for ax, (title, keys) in zip(axes[0], panels):
        for k in keys:
            ax.plot(xs, series[k], marker=".", label=k.replace("ce_threshold_", "").replace("ce_gap_", "")
                    .replace("ce_valid_", "").replace("ce_", "").replace("_weight", ""))
        if opened is not None:
            ax.axvline(opened[1], color="grey", ls="--", lw=0.8, label=f"gate open (step {opened[0]})")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("samples seen")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(str(metrics_path(run)), fontsize=8)
    fig.tight_layout()
    return save_figure(fig, png_path, dpi=110)
