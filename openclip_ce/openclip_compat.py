"""The only module that touches open_clip internals: wires training plugins into ``open_clip_train.main``.

open_clip_torch 3.3 has no plugin lookup. :func:`install` emulates, on an unmodified install, the
hook points that ``patches/open_clip-plugins.patch`` adds to open_clip itself:

==============================  ==========================================================
hook                            how it is reached on an unmodified open_clip 3.3
==============================  ==========================================================
``--loss`` + plugin flags       ``open_clip_train.params.argparse`` -> a parser subclass that adds them
``check_args``                  ``open_clip_train.params.parse_args`` wrapped
``create_loss``                 ``open_clip.create_loss`` wrapped
train data stage                ``open_clip_train.data.get_dataset_fn`` wrapped (train split only)
``adapt_model``, metrics,       ``open_clip_train.train.train_one_epoch`` wrapped (log line filter,
state for ``--resume``          TensorBoard / W&B proxies, state file next to the checkpoints)
CPU multi-rank DDP              ``torch.nn.parallel.DistributedDataParallel`` drops ``device_ids`` for CPU
==============================  ==========================================================

Every patched name is resolved by ``open_clip_train.main`` when it executes (``from X import Y``),
so :func:`install` must run before that: the bootstrap calls it when the import system looks up
``open_clip_train.main``. The installed version is checked first and an unsupported one raises
:class:`UnsupportedOpenClipVersion` before anything is patched.
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
from importlib import metadata
from typing import Any, Dict, Optional

from .fileio import write_json_atomic

SUPPORTED_OPENCLIP = ((3, 3),)  # (major, minor) releases whose internals this module was written and tested against
SUPPORTED_TEXT = "3.3.x"
DISABLE_ENV = "OPENCLIP_CE_DISABLE"
PLUGIN_GROUP = "open_clip_train.plugins"
STATE_FILE = "ce_plugin_state_epoch_{epoch}.json"
LOSS_DEFAULT = "clip"

log = logging.getLogger("openclip_ce")

_installed = False
_plugins: Dict[str, Any] = {}


class UnsupportedOpenClipVersion(RuntimeError):
    pass


# ----------------------------------------------------------------------------- discovery
def openclip_version() -> str:
    return metadata.version("open_clip_torch")


def check_openclip_version(version: Optional[str] = None) -> None:
    version = version or openclip_version()
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        major = minor = -1
    if (major, minor) not in SUPPORTED_OPENCLIP:
        ours = metadata.version("openclip-ce") if _dist_installed("openclip-ce") else "(source tree)"
        raise UnsupportedOpenClipVersion(
            f"openclip-ce {ours} supports open_clip_torch {SUPPORTED_TEXT}, but open_clip_torch {version} is installed; "
            f"install a supported release (pip install 'open_clip_torch[training]=={SUPPORTED_TEXT[:-2]}.*') "
            f"or set {DISABLE_ENV}=1 to train without plugins"
        )


def _dist_installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def discover_plugins() -> Dict[str, Any]:
    """Plugins announced in the ``open_clip_train.plugins`` entry-point group, by ``--loss`` name."""
    found: Dict[str, Any] = {}
    for ep in metadata.entry_points(group=PLUGIN_GROUP):
        obj = ep.load()
        name = getattr(obj, "name", ep.name)
        if name == LOSS_DEFAULT or name in found:
            raise RuntimeError(f"entry point {ep.value!r} ({PLUGIN_GROUP}) uses a --loss name already taken: {name!r}")
        found[name] = obj
    if "ce_clip" not in found:  # running from a source tree without `pip install -e .`
        from .plugin import plugin

        found[plugin.name] = plugin
    return found


def upstream_has_plugin_lookup() -> bool:
    """True when open_clip itself looks plugins up (``patches/`` applied): then we stand aside."""
    import importlib.util

    return importlib.util.find_spec("open_clip_train.plugins") is not None


def active_plugin(args) -> Optional[Any]:
    name = getattr(args, "loss", LOSS_DEFAULT)
    return None if name == LOSS_DEFAULT else _plugins[name]


# ----------------------------------------------------------------------------- parser
def add_plugin_arguments(parser: argparse.ArgumentParser, plugins: Dict[str, Any]) -> None:
    parser.add_argument(
        "--loss", default=LOSS_DEFAULT, choices=[LOSS_DEFAULT, *plugins],
        help=f"training objective: '{LOSS_DEFAULT}' = open_clip's own (CLIP / CoCa / SigLIP / distill as selected "
             f"by the other flags); others come from installed plugins ({PLUGIN_GROUP} entry points): "
             + "; ".join(f"{n}: {getattr(p, 'description', '')}" for n, p in plugins.items()),
    )
    for p in plugins.values():
        p.add_arguments(parser)


class PluginArgumentParser(argparse.ArgumentParser):
    """open_clip's parser plus ``--loss`` and every plugin's flags, added just before parsing."""

    def parse_known_args(self, args=None, namespace=None):
        if not getattr(self, "_plugin_args_added", False):
            self._plugin_args_added = True
            add_plugin_arguments(self, _plugins)
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
                raise SystemExit(2) from None
        return parsed

    return parse_args


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


def _wrap_get_dataset_fn(oc_data, original):
    @functools.wraps(original)
    def get_dataset_fn(data_path, dataset_type):
        fn = original(data_path, dataset_type)

        def build(args, preprocess_fn, is_train, epoch=0, tokenizer=None, **kw):
            plugin = active_plugin(args)
            if plugin is None or not is_train:
                return fn(args, preprocess_fn, is_train=is_train, epoch=epoch, tokenizer=tokenizer, **kw)
            stage = plugin.train_sample_stage(args, oc_data.tarfile_to_samples_nothrow)
            with _swapped(oc_data, "tarfile_to_samples_nothrow", stage), \
                    _swapped(oc_data, "CsvDataset", plugin.csv_dataset(args)):
                tok = tokenizer if fn is oc_data.get_csv_dataset else plugin.train_tokenizer(args, tokenizer)
                return fn(args, preprocess_fn, is_train=True, epoch=epoch, tokenizer=tok, **kw)

        return build

    return get_dataset_fn


# ----------------------------------------------------------------------------- train loop
def _unwrap(model):
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "module"):  # DDP
            model = model.module
        else:
            return model


def _fmt_metrics(metrics: Dict[str, float]) -> str:
    return " ".join(f"{k}: {v:.4g}" for k, v in metrics.items())


class _TrainLogFilter(logging.Filter):
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


_log_filter = _TrainLogFilter()


class _TensorBoardProxy:
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


class _WandbProxy(types.ModuleType):
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

        plugin.adapt_model(_unwrap(model))
        if not getattr(args, "_plugin_state_restored", False):  # once per run (args is per run)
            args._plugin_state_restored = True
            _restore_plugin_state(plugin, loss, args, epoch)

        def source():
            return plugin.metrics(loss)

        _log_filter.source = source
        wandb = getattr(oc_train, "wandb", None)
        proxy = _WandbProxy(wandb, source) if wandb is not None and not isinstance(wandb, _WandbProxy) else None
        writer = _TensorBoardProxy(tb_writer, source) if tb_writer is not None else None
        try:
            with (_swapped(oc_train, "wandb", proxy) if proxy is not None else contextlib.nullcontext()):
                result = original(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args,
                                  tb_writer=writer)
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


# ----------------------------------------------------------------------------- DDP on CPU
def _install_cpu_ddp_fix() -> None:
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


# ----------------------------------------------------------------------------- entry
def install(plugins: Optional[Dict[str, Any]] = None) -> bool:
    """Wire plugins into open_clip's training main. Idempotent. Returns False when standing aside.

    Raises :class:`UnsupportedOpenClipVersion` (before patching anything) on an unsupported release.
    """
    global _installed, _plugins
    if _installed:
        return True
    if upstream_has_plugin_lookup():
        log.debug("open_clip has its own plugin lookup (patch applied): bootstrap stands aside")
        return False
    check_openclip_version()

    import open_clip
    import open_clip.factory
    import open_clip_train.data as oc_data
    import open_clip_train.params as oc_params
    import open_clip_train.train as oc_train

    _plugins = dict(plugins if plugins is not None else discover_plugins())
    oc_params.argparse = _argparse_proxy()
    oc_params.parse_args = _wrap_parse_args(oc_params.parse_args)
    open_clip.create_loss = open_clip.factory.create_loss = _wrap_create_loss(open_clip.factory.create_loss)
    oc_data.get_dataset_fn = _wrap_get_dataset_fn(oc_data, oc_data.get_dataset_fn)
    oc_train.train_one_epoch = _wrap_train_one_epoch(oc_train, oc_train.train_one_epoch)
    logging.getLogger().addFilter(_log_filter)
    _install_cpu_ddp_fix()
    _installed = True
    return True


def is_installed() -> bool:
    return _installed
