"""When IMC and CMR come in: the CE terms' schedule (``--ce-schedule``), for training from random weights.

From random weights, IMC pulls every feature onto one point before the contrastive loss has taught
the towers anything (the collapse trap of docs/training-from-scratch.md). The schedule holds the
weights of IMC and CMR at 0 while the model learns from the contrastive loss alone (with its hard
negatives, from step 0), opens a gate once training has made progress, and then ramps the weights
linearly to ``alpha`` and ``beta``:

* **progress** is the contrastive loss over its *chance value*, the lowest loss a model that scores
  every pair alike can reach: for CE-CLIP's softmax, the mean log of each row's column count (as
  the collapse check uses); for CE-SigLIP's sigmoid, ``log n + (n - 1) log(n / (n - 1))`` per image
  over its ``n`` text columns (a constant score at ``sigmoid = 1/n``). 1 = nothing learnt, 0 = perfect;
  both are values of the global batch, summed over ranks in an all-reduce the loss makes anyway.
* the **gate** opens once a moving average of progress (:data:`EMA`, per optimizer step) has stayed
  at or below ``fraction`` for ``patience`` optimizer steps in a row; it stays open.
* the **ramp**: the first step after the gate opened trains IMC and CMR at ``1/ramp`` of their
  weights, the ``ramp``-th at their full weights.

Everything is device state, updated with device ops once per optimizer step (every ``accum_freq``
calls): a step reads nothing back to the host, a compiled step keeps one graph, and every rank
takes the same decision at the same step, because its input is a sum over ranks. ``state()`` /
``load_state()`` carry it across ``--resume`` (the plugin state).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

MODES = ("auto", "gate", "off")
EMA = 0.9  # moving average of progress per optimizer step: a window of about ten steps
# defaults of the gate (chosen by measurement: docs/training-from-scratch.md)
DEFAULT_FRACTION = 0.5
DEFAULT_PATIENCE = 10
DEFAULT_RAMP = 100


def sigmoid_chance(n: torch.Tensor) -> torch.Tensor:
    """The lowest sum over one image's ``n`` text columns of SigLIP's ``-log sigmoid(z S)`` when every
    score is the same: ``-log(1/n) - (n-1) log(1 - 1/n)``."""
    n = n.clamp_min(1.0)
    return n.log() + (n - 1) * (n.log() - (n - 1).clamp_min(1e-12).log())


class TermSchedule(nn.Module):
    """The gate and ramp of IMC and CMR (see the module docstring). ``enabled=False`` is the paper's
    behaviour (every term at full weight from step 0): :meth:`factor` is then None and the loss uses
    its weights as plain numbers, exactly as without a schedule; progress is still tracked (shown)."""

    def __init__(self, enabled: bool = False, fraction: float = DEFAULT_FRACTION, patience: int = DEFAULT_PATIENCE,
                 ramp: int = DEFAULT_RAMP):
        super().__init__()
        if fraction <= 0:
            raise ValueError(f"fraction must be > 0, got {fraction}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.enabled = bool(enabled)
        self.fraction = float(fraction)
        self.patience = int(patience)
        self.ramp = max(1, int(ramp))
        # optimizer steps done; the step from which IMC and CMR train (-1: gate closed); steps in a row
        # with the moving average at or below the fraction; the moving average; the last call's factor
        self.register_buffer("step", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("open_step", torch.full((), -1, dtype=torch.long), persistent=False)
        self.register_buffer("below", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("progress", torch.ones((), dtype=torch.float32), persistent=False)
        self.register_buffer("last_factor", torch.full((), float(not enabled)), persistent=False)

    # ------------------------------------------------------------------ in the step (device ops only)
    def factor(self) -> Optional[torch.Tensor]:
        """The share of ``alpha`` / ``beta`` that IMC / CMR train with in this step (None: schedule off)."""
        if not self.enabled:
            return None
        opened = self.open_step >= 0
        ramp = ((self.step - self.open_step + 1).float() / self.ramp).clamp(0.0, 1.0)
        return torch.where(opened, ramp, torch.zeros_like(ramp))

    @torch.no_grad()
    def advance(self, ratio: torch.Tensor, step_ends: Optional[torch.Tensor], factor: Optional[torch.Tensor]) -> None:
        """After a training call: ``ratio`` = this call's global contrastive loss over its chance value;
        ``step_ends`` (a device bool, None when every call is a step) says whether the optimizer step ends."""
        ratio = ratio.float()
        first = self.step == 0
        progress = torch.where(first, ratio, EMA * self.progress + (1 - EMA) * ratio)
        below = torch.where(progress <= self.fraction, self.below + 1, torch.zeros_like(self.below))
        open_now = (self.open_step < 0) & (below >= self.patience)
        open_step = torch.where(open_now, self.step + 1, self.open_step)
        new = (self.step + 1, open_step, below, progress)
        olds = (self.step, self.open_step, self.below, self.progress)
        for buf, value in zip(olds, new):
            buf.copy_(value if step_ends is None else torch.where(step_ends, value, buf))
        if factor is not None:
            self.last_factor.copy_(factor)

    # ------------------------------------------------------------------ reporting, state (host reads)
    def metrics(self, alpha: float, beta: float) -> Dict[str, float]:
        """The last step's effective weights, progress and, once the gate is open, the first step (counted
        as the metrics file counts: 1 = the run's first) whose IMC and CMR trained. One read from the device."""
        factor, progress, open_step = torch.stack(
            [self.last_factor.float(), self.progress.float(), self.open_step.float()]).tolist()
        out = {"ce_imc_weight": alpha * factor, "ce_cmr_weight": beta * factor, "ce_progress": progress}
        if self.enabled and open_step >= 0:
            out["ce_gate_open_step"] = int(open_step) + 1
        return out

    def state(self) -> Dict[str, Any]:
        """JSON-serialisable state (``--resume``); steps count the run's optimizer steps."""
        step, open_step, below, progress = torch.stack(
            [self.step.double(), self.open_step.double(), self.below.double(), self.progress.double()]).tolist()
        return {"mode": "gate" if self.enabled else "off", "step": int(step),
                "open_step": None if open_step < 0 else int(open_step), "below": int(below), "progress": progress}

    @torch.no_grad()
    def load_state(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state`. The mode is the checkpoint's: a run resumes as it was trained."""
        self.enabled = state.get("mode", "off") == "gate"
        open_step = state.get("open_step")
        self.step.fill_(int(state.get("step", 0)))
        self.open_step.fill_(-1 if open_step is None else int(open_step))
        self.below.fill_(int(state.get("below", 0)))
        progress = state.get("progress")
        self.progress.fill_(1.0 if progress is None or not math.isfinite(progress) else float(progress))
        factor = self.factor()
        self.last_factor.fill_(1.0 if factor is None else float(factor))

    @torch.no_grad()
    def resume_at(self, steps: int) -> None:
        """``--resume`` without state: the run's step count goes on from the trainer's (a gate starts closed)."""
        self.step.fill_(int(steps))

    def describe(self) -> str:
        if not self.enabled:
            return "every CE term at full weight from step 0 (--ce-schedule off, the paper's)"
        return (f"IMC and CMR at weight 0 until the contrastive loss's moving average has stayed at or below "
                f"{self.fraction:g} x its chance value for {self.patience} optimizer steps, then ramped to "
                f"--ce-alpha / --ce-beta over {self.ramp} steps (--ce-schedule gate)")
