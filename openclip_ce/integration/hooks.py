"""What every wiring does the same way, whatever the open_clip version: the parser hook, the model
adapter call, the CPU DDP fix, the plugin's metrics in the log line / TensorBoard / W&B, the state
kept for ``--resume``, a plugin's deliberate stop, and the loss record of a stock run on request.

A wiring (:mod:`.openclip33`, :mod:`.openclip4`) calls :func:`install_parser_hook` when
``open_clip_train.main`` is imported, with its own ``on_plugin_run(args, plugin)`` that installs the
training hooks only for a run whose ``--loss`` selects a plugin (and ``on_recorded_run(args)`` for a
stock run with ``OPENCLIP_CE_METRICS=1``). Everything here talks to the plugin through the contract
(:mod:`openclip_ce.contract`) only.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import sys
import types
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

from ..contract import LOSS_DEFAULT, EpochLoss, ResumesWithoutState, StopTraining
from ..errors import EXIT_USAGE
from ..fileio import write_atomic
from ..metrics_file import MetricsWriter
from .discovery import PLUGIN_GROUP, Discovered, wants_help
from .switch import metrics_requested

log = logging.getLogger(__name__)

STATE_FILE = "ce_plugin_state_epoch_{epoch}.json"

_found = Discovered()
_parser_hooked = False


def active_plugin(args) -> Optional[Any]:
    name = getattr(args, "loss", LOSS_DEFAULT)
    return None if name == LOSS_DEFAULT else _found.plugins[name]


def refuse(message: str) -> None:
    """End the run before training with one line, as open_clip's parser does (all ranks decide alike)."""
    print(f"open_clip_train: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


@contextlib.contextmanager
def swapped(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def main_modules():
    """The loaded ``open_clip_train.main`` module(s): imported by name, or running as ``__main__`` (``python -m``)."""
    seen = []
    for mod in (sys.modules.get("__main__"), sys.modules.get("open_clip_train.main")):
        spec = getattr(mod, "__spec__", None)
        if mod is not None and getattr(spec, "name", None) == "open_clip_train.main" and mod not in seen:
            seen.append(mod)
    return seen


def wrap_train_one_epoch_once(wrap: Callable[[Any, Callable], Callable]) -> None:
    """Replaces main's ``train_one_epoch`` by ``wrap(open_clip_train.train, original)``, unless it is wrapped."""
    import open_clip_train.train as oc_train

    for main in main_modules():
        if not hasattr(main.train_one_epoch, "__wrapped__"):
            main.train_one_epoch = wrap(oc_train, main.train_one_epoch)


# ----------------------------------------------------------------------------- parser
def _loss_value(value: str) -> str:
    if value in _found.left_out:
        raise argparse.ArgumentTypeError(f"training plugin {value!r} is not available: {_found.left_out[value]}")
    return value


def add_loss_argument(parser: argparse.ArgumentParser) -> None:
    plugins = _found.plugins
    parser.add_argument(
        "--loss", default=LOSS_DEFAULT, type=_loss_value, choices=[LOSS_DEFAULT, *plugins],
        help=f"training objective: '{LOSS_DEFAULT}' = open_clip's own (CLIP / CoCa / SigLIP / distill as selected "
             f"by the other flags); others come from installed plugins ({PLUGIN_GROUP} entry points): "
             + "; ".join(f"{n}: {getattr(p, 'description', '')}" for n, p in plugins.items()),
    )


class PluginArgumentParser(argparse.ArgumentParser):
    """open_clip's parser plus ``--loss`` and the selected plugin's flags, added just before parsing.

    A run that selects no plugin gets ``--loss`` only, so its namespace (and ``params.txt``) is
    stock open_clip's plus ``loss: clip``. ``--help`` lists every plugin's flags."""

    def parse_known_args(self, args=None, namespace=None):
        if not getattr(self, "_plugin_args_added", False):
            self._plugin_args_added = True
            add_loss_argument(self)
            argv = list(sys.argv[1:] if args is None else args)
            probe = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
            add_loss_argument(probe)
            selected, _ = probe.parse_known_args(argv)
            for name, plugin in _found.plugins.items():
                if name == selected.loss or wants_help(argv):
                    plugin.add_arguments(self)
        return super().parse_known_args(args, namespace)


def _argparse_proxy() -> types.ModuleType:
    proxy = types.ModuleType("argparse")
    proxy.__dict__.update({k: v for k, v in vars(argparse).items() if not k.startswith("__")})
    proxy.ArgumentParser = PluginArgumentParser
    return proxy


def _wrap_parse_args(original, on_plugin_run: Callable[[Any, Any], None], on_recorded_run: Callable[[Any], None]):
    @functools.wraps(original)
    def parse_args(args):
        parsed = original(args)
        plugin = active_plugin(parsed)
        if plugin is not None:
            try:
                plugin.check_args(parsed)
            except ValueError as e:
                refuse(str(e))
            on_plugin_run(parsed, plugin)
        elif metrics_requested():
            on_recorded_run(parsed)
        if str(getattr(parsed, "device", "")).startswith("cpu"):
            install_cpu_ddp_fix()
        return parsed

    return parse_args


def install_parser_hook(found: Discovered, on_plugin_run: Callable[[Any, Any], None],
                        on_recorded_run: Callable[[Any], None]) -> None:
    """Stage 1: ``open_clip_train.params`` builds :class:`PluginArgumentParser`; after parsing, a run
    that selects a plugin is checked and handed to ``on_plugin_run(args, plugin)`` (the wiring's stage 2),
    a stock run with ``OPENCLIP_CE_METRICS=1`` to ``on_recorded_run(args)``. Idempotent; call before
    ``open_clip_train.main`` runs ``main``."""
    global _parser_hooked, _found
    _found = found
    if _parser_hooked:
        return
    import open_clip_train.params as oc_params

    oc_params.argparse = _argparse_proxy()
    oc_params.parse_args = _wrap_parse_args(oc_params.parse_args, on_plugin_run, on_recorded_run)
    for main in main_modules():  # main imported before the hook
        main.parse_args = oc_params.parse_args
    _parser_hooked = True


def parser_hook_installed() -> bool:
    return _parser_hooked


# ----------------------------------------------------------------------------- model, device
def wrap_create_model(original, args):
    """The first model built in the run is the one trained (a distillation teacher comes second): the
    plugin adapts it as soon as it exists, before DDP, compile and the training data."""
    adapted = []

    @functools.wraps(original)
    def create_model_and_transforms(*a, **kw):
        result = original(*a, **kw)
        plugin = active_plugin(args)
        if plugin is not None and not adapted:
            adapted.append(True)
            plugin.adapt_model(args, result[0])
        return result

    return create_model_and_transforms


def wrap_init_distributed_device(original):
    """open_clip resolves the device here (``--device`` left at ``cuda`` falls back to the CPU on a
    machine without CUDA): a plugin run whose device is the CPU gets the CPU DDP fix."""

    @functools.wraps(original)
    def init_distributed_device(args):
        device = original(args)
        if str(getattr(args, "device", "")).startswith("cpu"):
            install_cpu_ddp_fix()
        return device

    return init_distributed_device


def install_cpu_ddp_fix() -> None:
    """DDP with ``device_ids=None`` for CPU modules (open_clip passes ``device_ids=[device]`` even for a
    CPU device, which DDP rejects: a multi-rank CPU run fails outright without this)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if getattr(DistributedDataParallel, "_openclip_ce_cpu_safe", False):
        return

    class CpuSafeDistributedDataParallel(DistributedDataParallel):
        """open_clip passes ``device_ids=[device]`` even for CPU devices, which DDP rejects; drop them there."""

        _openclip_ce_cpu_safe = True

        def __init__(self, module, device_ids=None, *args, **kwargs):
            if device_ids and all(torch.device(d).type == "cpu" for d in device_ids):
                device_ids = None
            super().__init__(module, device_ids, *args, **kwargs)

    CpuSafeDistributedDataParallel.__name__ = "DistributedDataParallel"
    CpuSafeDistributedDataParallel.__qualname__ = "DistributedDataParallel"
    torch.nn.parallel.DistributedDataParallel = CpuSafeDistributedDataParallel


# ----------------------------------------------------------------------------- metrics
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


# ----------------------------------------------------------------------------- state, one epoch
def state_path(checkpoint_dir: str, epoch: int) -> str:
    return os.path.join(checkpoint_dir, STATE_FILE.format(epoch=epoch))


def restore_plugin_state(plugin, loss, args, start_epoch: int, position: Tuple[int, int]) -> None:
    """``position``: the trainer's ``(optimizer steps, samples)`` before ``start_epoch``."""
    resume = getattr(args, "resume", None)
    if not resume or start_epoch == 0:
        return
    path = state_path(os.path.dirname(os.path.normpath(str(resume))), start_epoch)
    problem = None if os.path.exists(path) else "no plugin state at"
    if problem is None:
        try:
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
            state = saved["state"]
        except (OSError, ValueError, KeyError, TypeError) as e:  # ValueError: JSON (UnicodeDecodeError too)
            problem = f"plugin state unreadable ({type(e).__name__}: {' '.join(str(e).split())[:200]}) at"
    if problem is not None:
        log.warning(f"{plugin.name}: {problem} {path}; starting its state (e.g. CE-CLIP thresholds) afresh")
        if isinstance(plugin, ResumesWithoutState):  # its counts (the metrics file's steps) go on from the trainer's
            plugin.resume_at(loss, *position)
        return
    plugin.load_state_dict(loss, state)
    log.info(f"{plugin.name}: restored plugin state from {path}: {state}")


def run_plugin_epoch(plugin, loss, args, epoch: int, run: Callable[[Any], Any], oc_train: types.ModuleType,
                     wandb_names: Iterable[str], position: Tuple[int, int], tb_writer=None):
    """One training epoch of a plugin run: ``run(tb_writer)`` calls open_clip's ``train_one_epoch``;
    ``position`` is the trainer's ``(optimizer steps, samples)`` before it.

    Around it: the plugin state is restored once per run (``--resume``), the plugin's metrics reach the
    log line (:data:`log_filter`), TensorBoard and the W&B-compatible modules named ``wandb_names`` in
    ``oc_train``; a :class:`StopTraining` from the plugin ends the run with one line (every rank
    raises it at the same step); after the epoch the state is written next to the checkpoints."""
    if not getattr(args, "_plugin_state_restored", False):  # once per run (args is per run)
        args._plugin_state_restored = True
        restore_plugin_state(plugin, loss, args, epoch, position)

    def source():
        return plugin.metrics(loss)

    log_filter.source = source
    writer = TensorBoardProxy(tb_writer, source)
    with contextlib.ExitStack() as stack:
        for name in wandb_names:
            module = getattr(oc_train, name, None)
            if module is not None and not isinstance(module, WandbProxy):
                stack.enter_context(swapped(oc_train, name, WandbProxy(module, source)))
        try:
            result = run(writer)
            if isinstance(loss, EpochLoss):  # every rank, before main writes this epoch's checkpoint
                loss.end_epoch()
        except StopTraining as e:  # same step on every rank: all stop together, with one line
            log.error("%s", e.one_line())
            raise SystemExit(EXIT_USAGE) from None
        finally:
            log_filter.source = None
    if getattr(args, "save_logs", False) and getattr(args, "checkpoint_path", None):
        state = {"epoch": epoch + 1, "loss": args.loss, "state": plugin.state_dict(loss)}
        # strict JSON: a NaN or inf in the state is a bug of the plugin, refused here rather than written
        write_atomic(state_path(args.checkpoint_path, epoch + 1), json.dumps(state, indent=2, allow_nan=False) + "\n")
    return result


def check_requirements(requirements: Sequence, what: str, args) -> None:
    """Refuse a plugin run, in one line, when open_clip no longer has what the wiring hooks into."""
    from .requires import problems
    from .versions import openclip_version

    found = problems(requirements)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        refuse(f"--loss {args.loss}: open_clip {openclip_version()} is not what {what} was written for: "
               f"{found[0]}{more}; run tests/test_wiring_requirements.py for the full list")
