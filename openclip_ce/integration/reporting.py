"""Where the plugin's metrics reach the reporters open_clip already has, by standing in for them:

* :data:`log_filter` (:class:`TrainLogFilter`) appends them to open_clip's ``Train Epoch: ...`` line;
* :class:`TensorBoardProxy` stands in for the TensorBoard writer and reads them at every logged step;
* :class:`WandbProxy` stands in for the ``wandb`` module (or a W&B-compatible one such as trackio);
* :class:`LossScalarRecorder` (:func:`run_recorded_epoch`): a stock run with ``OPENCLIP_CE_METRICS=1``
  gets open_clip's own loss scalars in ``train_metrics.jsonl``.

Each wiring says which logger carries the line and which W&B-compatible modules there are
(:class:`.installer.Wiring`); :mod:`.epoch` puts the stand-ins in place for one epoch.
"""

from __future__ import annotations

import logging
import types
from typing import Any, Callable, Dict

from ..metrics_file import MetricsWriter


def _fmt_metrics(metrics: Dict[str, float]) -> str:
    return " ".join(f"{k}: {v:.4g}" for k, v in metrics.items())


class TrainLogFilter(logging.Filter):
    """Appends the active plugin's metrics to open_clip's ``Train Epoch: ...`` log line."""

    def __init__(self):
        super().__init__()
        self.source = None  # () -> metrics dict

    def filter(self, record: logging.LogRecord) -> bool:
        if self.source is not None and isinstance(record.msg, str) and record.msg.startswith("Train Epoch:"):
            metrics = self.source()
            if metrics:
                record.msg = f"{record.msg} {_fmt_metrics(metrics)}"
        return True


log_filter = TrainLogFilter()


class TensorBoardProxy:
    """Stands in for open_clip's TensorBoard writer in a plugin run: forwards to the real one (if the run
    has one) and reads the plugin metrics once for every new train step it sees, writing them there too.
    Given to open_clip even without TensorBoard, so that the metrics (and the plugin's metrics file)
    are read at every step open_clip logs scalars, whichever reporters are on."""

    def __init__(self, writer, source):
        self._writer, self._source, self._step = writer, source, None

    def add_scalar(self, name, value, step=None, *a, **kw):
        if self._writer is not None:
            self._writer.add_scalar(name, value, step, *a, **kw)
        if name.startswith("train/") and not name.endswith("_epoch_avg") and step != self._step:
            self._step = step
            metrics = self._source()
            if self._writer is not None:
                for k, v in metrics.items():
                    self._writer.add_scalar(f"train/{k}", v, step)

    def __getattr__(self, item):
        if self._writer is None:
            return lambda *a, **kw: None
        return getattr(self._writer, item)


class WandbProxy(types.ModuleType):
    """Stands in for the ``wandb`` module (or a W&B-compatible one) inside ``open_clip_train.train``:
    ``log`` gains the plugin metrics on train steps."""

    def __init__(self, wandb, source):
        super().__init__(getattr(wandb, "__name__", "wandb"))
        self._wandb, self._source = wandb, source

    def log(self, data, *a, **kw):
        if any(str(k).startswith("train/") and not str(k).endswith("_epoch_avg") for k in data):
            data = {**data, **{f"train/{k}": v for k, v in self._source().items()}}
        return self._wandb.log(data, *a, **kw)

    def __getattr__(self, item):
        return getattr(self._wandb, item)


class LossScalarRecorder:
    """Stands in for open_clip's TensorBoard writer in a stock run with ``OPENCLIP_CE_METRICS=1``: open_clip
    hands it its train scalars with their step at every log step; the loss scalars (``train/loss``,
    ``train/*_loss``) become one ``train_metrics.jsonl`` record per step. Everything is forwarded to the
    run's real writer, if it has one."""

    def __init__(self, writer, record: MetricsWriter):
        self._writer, self._record = writer, record
        self._step, self._values = None, {}

    def add_scalar(self, name, value, step=None, *a, **kw):
        if self._writer is not None:
            self._writer.add_scalar(name, value, step, *a, **kw)
        key = name[len("train/"):] if name.startswith("train/") else None
        if key is not None and (key == "loss" or key.endswith("_loss")):
            if step != self._step:
                self.flush()
                self._step = step
            self._values[key] = float(value)

    def flush(self) -> None:
        if self._step is not None and self._values:
            self._record.write(int(self._step) + 1, self._values)  # open_clip's step index -> steps done
        self._values = {}

    def __getattr__(self, item):
        if self._writer is None:
            return lambda *a, **kw: None
        return getattr(self._writer, item)


def run_recorded_epoch(args, run: Callable[[Any], Any], tb_writer=None):
    """One epoch of a stock run whose loss scalars are recorded (:class:`LossScalarRecorder`)."""
    recorder = LossScalarRecorder(tb_writer, MetricsWriter(args))
    try:
        return run(recorder)
    finally:
        recorder.flush()
