"""Plots of a training run's loss terms and CE-CLIP thresholds, read back from open_clip's ``out.log``."""

from __future__ import annotations

import os
import re
from typing import Dict, List, Tuple

from ..plotting import pyplot, save_figure

_LINE = re.compile(r"Train Epoch: (\d+) \[\s*(\d+)/(\d+)")
_PAIR = re.compile(r"([A-Za-z_]+): (-?[0-9][0-9.e+-]*)")


def parse_training_log(path: str | os.PathLike) -> Tuple[List[int], Dict[str, List[float]]]:
    """``(samples seen, {metric: values})`` for every ``Train Epoch`` line of an open_clip log."""
    xs: List[int] = []
    series: Dict[str, List[float]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _LINE.search(line)
            if not m:
                continue
            epoch, seen, per_epoch = (int(g) for g in m.groups())
            xs.append(epoch * per_epoch + seen)
            tail = line[m.end():]
            for key, val in _PAIR.findall(tail):
                if key.endswith("_loss") or key == "Loss" or key.startswith("ce_"):
                    series.setdefault(key.lower(), []).append(float(val))
    n = len(xs)
    return xs, {k: v for k, v in series.items() if len(v) == n}


def plot_training_log(log_path: str | os.PathLike, png_path: str | os.PathLike) -> str:
    plt = pyplot()
    xs, series = parse_training_log(log_path)
    if not xs:
        raise ValueError(f"{log_path}: no 'Train Epoch' lines to plot")
    panels = [
        ("loss terms (weighted, as summed)", [k for k in series if k.endswith("_loss") or k == "loss"]),
        ("CMR thresholds Th_k", [k for k in series if k.startswith("ce_threshold_")]),
        ("mean gap S(I,T) - S(I,T_k)", [k for k in series if k.startswith("ce_gap_")]),
        ("share of valid negatives", [k for k in series if k.startswith("ce_valid_")]),
    ]
    panels = [(t, ks) for t, ks in panels if ks]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for k in keys:
            ax.plot(xs, series[k], marker=".", label=k.replace("ce_threshold_", "").replace("ce_gap_", "")
                    .replace("ce_valid_", ""))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("samples seen")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(str(log_path), fontsize=8)
    fig.tight_layout()
    return save_figure(fig, png_path, dpi=110)
