"""The only module that touches open_clip internals: wires training plugins into ``open_clip_train.main`` 3.3.

open_clip_torch 3.3 has no plugin lookup. This module emulates, on an unmodified install, the hook
points that ``patches/open_clip-3.3.0-plugins.patch`` adds to open_clip itself. It works in two
stages so that a run which does not select a plugin stays stock open_clip:

1. :func:`install_parser_hook`, when ``open_clip_train.main`` is imported (the bootstrap) or by
   ``openclip-ce train``: open_clip's parser gains ``--loss`` (default ``clip``) and, only when that
   run selects a plugin (or asks for ``--help``), that plugin's flags. Nothing else changes.
2. :func:`install_training_hooks`, after parsing, only for a run whose ``--loss`` is a plugin:

==============================  ==========================================================
hook                            how it is reached on an unmodified open_clip 3.3
==============================  ==========================================================
``check_args``                  ``open_clip_train.params.parse_args`` wrapped
``adapt_model``                 ``open_clip_train.main.create_model_and_transforms`` wrapped (the
                                run's model, as soon as it is built: before DDP, compile and the data)
``create_loss``                 ``open_clip_train.main.create_loss`` replaced
train data stage, collate       ``open_clip_train.data.get_dataset_fn`` wrapped (train split only)
metrics, state for              ``open_clip_train.main.train_one_epoch`` wrapped (log line filter,
``--resume``                    TensorBoard / W&B proxies, state file next to the checkpoints)
==============================  ==========================================================

Independently of plugins, a run with ``--device cpu`` gets the CPU multi-rank DDP fix (stock
open_clip 3.3 passes ``device_ids=[cpu]`` to DDP, which DDP rejects: such a run fails outright
without it); it is installed in that process only, after parsing, and changes nothing elsewhere.
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
from typing import Any, Dict, Optional

from torch.utils.data import default_collate

from ..errors import EXIT_USAGE
from ..fileio import write_json_atomic
from ..training.contract import LOSS_DEFAULT
from ..training.loss import NoNegativesError
from .discovery import PLUGIN_GROUP, Discovered, wants_help

STATE_FILE = "ce_plugin_state_epoch_{epoch}.json"

_found = Discovered()
_parser_hooked = False
_training_hooked = False


def active_plugin(args) -> Optional[Any]:
    name = getattr(args, "loss", LOSS_DEFAULT)
    return None if name == LOSS_DEFAULT else _found.plugins[name]


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


def _wrap_parse_args(original):
    @functools.wraps(original)
    def parse_args(args):
        parsed = original(args)
        plugin = active_plugin(parsed)
        if plugin is not None:
            try:
                plugin.check_args(parsed)
            except ValueError as e:
                print(f"open_clip_train: error: {e}", file=sys.stderr)
                raise SystemExit(EXIT_USAGE) from None
            install_training_hooks(parsed)
        if str(getattr(parsed, "device", "")).startswith("cpu"):
            install_cpu_ddp_fix()
        return parsed

    return parse_args


def install_parser_hook(found: Discovered) -> None:
    """Stage 1 (see module docstring). Idempotent; call before ``open_clip_train.main`` runs ``main``."""
    global _parser_hooked, _found
    _found = found
    if _parser_hooked:
        return
    import open_clip_train.params as oc_params

    oc_params.argparse = _argparse_proxy()
    oc_params.parse_args = _wrap_parse_args(oc_params.parse_args)
    for main in _main_modules():  # main imported before the hook
        main.parse_args = oc_params.parse_args
    _parser_hooked = True


def _main_modules():
    """The loaded ``open_clip_train.main`` module(s): imported by name, or running as ``__main__`` (``python -m``)."""
    seen = []
    for mod in (sys.modules.get("__main__"), sys.modules.get("open_clip_train.main")):
        spec = getattr(mod, "__spec__", None)
        if mod is not None and getattr(spec, "name", None) == "open_clip_train.main" and mod not in seen:
            seen.append(mod)
    return seen


# ----------------------------------------------------------------------------- model
def _wrap_create_model(original, args):
    """The first model built in the run is the one trained (a distillation teacher comes second)."""
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


# ----------------------------------------------------------------------------- loss
def _wrap_create_loss(original):
    @functools.wraps(original)
    def create_loss(args):
        plugin = active_plugin(args)
        return original(args) if plugin is None else plugin.create_loss(args)

    return create_loss


# ----------------------------------------------------------------------------- data
@contextlib.contextmanager
def _swapped(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


class _WebdatasetProxy(types.ModuleType):
    """Stands in for the ``webdataset`` module while open_clip builds a training pipeline: its
    ``batched`` stage collates with the plugin's collate function; everything else is webdataset's."""

    def __init__(self, wds, collate):
        super().__init__("webdataset")
        self._wds, self._collate = wds, collate

    def batched(self, *a, **kw):
        return self._wds.batched(*a, collation_fn=self._collate, **kw)

    def __getattr__(self, item):
        return getattr(self._wds, item)


def _wrap_get_dataset_fn(oc_data, original):
    @functools.wraps(original)
    def get_dataset_fn(data_path, dataset_type):
        fn = original(data_path, dataset_type)

        def build(args, preprocess_fn, is_train, epoch=0, tokenizer=None, **kw):
            plugin = active_plugin(args)
            if plugin is None or not is_train:
                return fn(args, preprocess_fn, is_train=is_train, epoch=epoch, tokenizer=tokenizer, **kw)
            stage = plugin.train_sample_stage(args, oc_data.tarfile_to_samples_nothrow)
            wds = _WebdatasetProxy(oc_data.wds, plugin.train_collate(args, oc_data.wds.filters.default_collation_fn))
            loader = functools.partial(oc_data.DataLoader, collate_fn=plugin.train_collate(args, default_collate))
            with _swapped(oc_data, "tarfile_to_samples_nothrow", stage), _swapped(oc_data, "wds", wds), \
                    _swapped(oc_data, "DataLoader", loader), _swapped(oc_data, "CsvDataset", plugin.csv_dataset(args)):
                tok = tokenizer if fn is oc_data.get_csv_dataset else plugin.train_tokenizer(args, tokenizer)
                return fn(args, preprocess_fn, is_train=True, epoch=epoch, tokenizer=tok, **kw)

        return build

    return get_dataset_fn


# ----------------------------------------------------------------------------- train loop
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


_log_filter = TrainLogFilter()


class TensorBoardProxy:
    """Forwards to a SummaryWriter; writes the plugin metrics once for every new step it sees."""

    def __init__(self, writer, source):
        self._writer, self._source, self._step = writer, source, None

    def add_scalar(self, name, value, step=None, *a, **kw):
        self._writer.add_scalar(name, value, step, *a, **kw)
        if name.startswith("train/") and step != self._step:
            self._step = step
            for k, v in self._source().items():
                self._writer.add_scalar(f"train/{k}", v, step)

    def __getattr__(self, item):
        return getattr(self._writer, item)


class WandbProxy(types.ModuleType):
    """Stands in for the ``wandb`` module inside open_clip_train.train: ``log`` gains the plugin metrics."""

    def __init__(self, wandb, source):
        super().__init__("wandb")
        self._wandb, self._source = wandb, source

    def log(self, data, *a, **kw):
        if any(str(k).startswith("train/") for k in data):
            data = {**data, **{f"train/{k}": v for k, v in self._source().items()}}
        return self._wandb.log(data, *a, **kw)

    def __getattr__(self, item):
        return getattr(self._wandb, item)


def state_path(checkpoint_dir: str, epoch: int) -> str:
    return os.path.join(checkpoint_dir, STATE_FILE.format(epoch=epoch))


def _wrap_train_one_epoch(oc_train, original):
    @functools.wraps(original)
    def train_one_epoch(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, tb_writer=None):
        plugin = active_plugin(args)
        if plugin is None:
            return original(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, tb_writer=tb_writer)

        if not getattr(args, "_plugin_state_restored", False):  # once per run (args is per run)
            args._plugin_state_restored = True
            _restore_plugin_state(plugin, loss, args, epoch)

        def source():
            return plugin.metrics(loss)

        _log_filter.source = source
        wandb = getattr(oc_train, "wandb", None)
        proxy = WandbProxy(wandb, source) if wandb is not None and not isinstance(wandb, WandbProxy) else None
        writer = TensorBoardProxy(tb_writer, source) if tb_writer is not None else None
        try:
            with (_swapped(oc_train, "wandb", proxy) if proxy is not None else contextlib.nullcontext()):
                result = original(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args,
                                  tb_writer=writer)
        except NoNegativesError as e:  # same step on every rank: all stop together, with one line
            logging.error("%s", e.one_line())
            raise SystemExit(EXIT_USAGE) from None
        finally:
            _log_filter.source = None
        if getattr(args, "save_logs", False) and getattr(args, "checkpoint_path", None):
            write_json_atomic(
                state_path(args.checkpoint_path, epoch + 1),
                {"epoch": epoch + 1, "loss": args.loss, "state": plugin.state_dict(loss)}, indent=2,
            )
        return result

    return train_one_epoch


def _restore_plugin_state(plugin, loss, args, start_epoch: int) -> None:
    resume = getattr(args, "resume", None)
    if not resume or start_epoch == 0:
        return
    path = state_path(os.path.dirname(str(resume)), start_epoch)
    if not os.path.exists(path):
        logging.warning(
            f"{plugin.name}: no plugin state at {path}; starting its state (e.g. CE-CLIP thresholds) afresh")
        return
    with open(path) as f:
        saved = json.load(f)
    plugin.load_state_dict(loss, saved["state"])
    logging.info(f"{plugin.name}: restored plugin state from {path}: {saved['state']}")


def install_training_hooks(args) -> None:
    """Stage 2 (see module docstring): only for a run that selected a plugin (``args``: its parsed
    flags). Idempotent."""
    global _training_hooked
    if _training_hooked:
        return
    import open_clip_train.data as oc_data
    import open_clip_train.train as oc_train

    for main in _main_modules():  # main() looks these names up in its module when it calls them
        main.create_model_and_transforms = _wrap_create_model(main.create_model_and_transforms, args)
        main.create_loss = _wrap_create_loss(main.create_loss)
        main.train_one_epoch = _wrap_train_one_epoch(oc_train, main.train_one_epoch)
    oc_data.get_dataset_fn = _wrap_get_dataset_fn(oc_data, oc_data.get_dataset_fn)
    logging.getLogger().addFilter(_log_filter)
    _training_hooked = True


# ----------------------------------------------------------------------------- DDP on CPU
def install_cpu_ddp_fix() -> None:
    """DDP with ``device_ids=None`` for CPU modules; installed only in a ``--device cpu`` training main."""
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


def training_hooks_installed() -> bool:
    return _training_hooked


def parser_hook_installed() -> bool:
    return _parser_hooked
