"""A run's training metrics as JSON lines, ``<logs>/<name>/train_metrics.jsonl``: the one route by which
the plots, the demo and the scripts read training metrics back (nothing re-parses open_clip's log line).

In a ``--loss ce_clip`` run the plugin appends one object at every log step of open_clip (where its
metrics are read from the device anyway, for the log line, TensorBoard and W&B)::

    {"step": 120, "samples": 7680, "contrastive_loss": 2.1, "imc_loss": 0.3, "cmr_loss": 0.05, "loss": 2.45,
     "ce_threshold_rel": 1.8, ..., "ce_valid_att": 0.75, ..., "ce_gap_obj": 2.2, ...}

``step``: optimizer steps done (counting those before a ``--resume``); ``samples``: training samples
seen (each step adds the global batch, ``--batch-size`` x ``--accum-freq`` x world size, of the run
that took it); the loss terms are the last step's,
weighted as summed into ``loss``; a value that is not finite (a diverged run's NaN loss) is written as
``null`` (the file is strict JSON) and read back as NaN. Written by the logging rank only (rank 0,
``--logs`` not ``none``), whichever way the plugin is wired (the import hook or a patched open_clip). A run without a plugin
loss (stock open_clip) writes nothing, unless ``OPENCLIP_CE_METRICS=1`` asks the import hook to record
open_clip's own loss scalars there in the same form (the demo's and the GPU check's plain-CLIP
baselines). A leaf module: the plugin and the integration both write it, :func:`read_metrics` reads it.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional, Tuple

FILE = "train_metrics.jsonl"


class MetricsWriter:
    """Appends one record per optimizer step to the run's file; ``args`` is read when writing (open_clip
    completes it, e.g. ``--name``, after the loss is created). Counts from the position of the
    checkpoint a run resumed from (:meth:`resume`), which the plugin keeps in its state."""

    def __init__(self, args: Any):
        self.args = args
        self._last_step: Optional[int] = None
        self.base_steps = self.base_samples = 0

    def resume(self, steps: int, samples: int) -> None:
        self.base_steps, self.base_samples = steps, samples

    def global_batch(self) -> int:
        a = self.args
        return getattr(a, "batch_size", 0) * getattr(a, "accum_freq", 1) * getattr(a, "world_size", 1)

    def position(self, steps_here: int) -> Tuple[int, int]:
        """``(steps, samples)`` of the run after ``steps_here`` optimizer steps of this process's run."""
        return self.base_steps + steps_here, self.base_samples + steps_here * self.global_batch()

    def path(self) -> Optional[str]:
        a = self.args
        logs, name = getattr(a, "logs", None), getattr(a, "name", None)
        if not logs or str(logs).lower() == "none" or not name or getattr(a, "rank", 0) != 0:
            return None
        return os.path.join(str(logs), str(name), FILE)

    def write(self, steps_here: int, values: Dict[str, float]) -> None:
        """The record after ``steps_here`` optimizer steps of this process's run. Once per step: later
        calls for the same step (several sinks read the metrics) add nothing."""
        path = self.path()
        if path is None or steps_here == self._last_step:
            return
        self._last_step = steps_here
        step, samples = self.position(steps_here)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        record = {"step": step, "samples": samples, **{k: _strict(v) for k, v in values.items()}}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")


def _strict(value: Any) -> Any:
    """NaN and infinities -> None (JSON ``null``): the file stays strict JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def metrics_path(run: str | os.PathLike) -> str:
    """The metrics file of a run: ``run`` is the file itself, the run's directory (``<logs>/<name>``) or
    another file in it (open_clip's ``out.log``)."""
    run = os.fspath(run)
    if run.endswith(".jsonl"):
        return run
    return os.path.join(run if os.path.isdir(run) else os.path.dirname(run), FILE)


def read_metrics(run: str | os.PathLike) -> List[Dict[str, float]]:
    """The records of a run in step order. A record whose step is not after the previous one starts a
    resumed run: the earlier records from that step on were trained again, and are dropped. A last
    line cut short (a run killed while writing) is ignored; ``null`` values (not finite) are NaN."""
    path = metrics_path(run)
    records: List[Dict[str, float]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            while records and records[-1]["step"] >= rec["step"]:
                records.pop()
            records.append({k: float("nan") if v is None else v for k, v in rec.items()})
    return records
