"""The wiring into ``open_clip_train.main`` of open_clip_torch 3.3 (row ``3.3.x`` of :mod:`.versions`).

open_clip_torch 3.3 has no plugin lookup. This module emulates, on an unmodified install, the hook
points that ``patches/open_clip-3.3.0-plugins.patch`` adds to open_clip itself. It works in two
stages so that a run which does not select a plugin stays stock open_clip:

1. :func:`install_parser_hook`, when ``open_clip_train.main`` is imported (the bootstrap) or by
   ``openclip-ce train``: open_clip's parser gains ``--loss`` (default ``clip``) and, only when that
   run selects a plugin (or asks for ``--help``), that plugin's flags (:mod:`.hooks`).
2. :func:`install_training_hooks`, after parsing, only for a run whose ``--loss`` is a plugin; it
   first checks :data:`REQUIRES` (a refusal in one line if open_clip moved):

==============================  ==========================================================
hook                            how it is reached on an unmodified open_clip 3.3
==============================  ==========================================================
``check_args``                  ``open_clip_train.params.parse_args`` wrapped
``adapt_model``                 ``open_clip_train.main.create_model_and_transforms`` wrapped (the
                                run's model, as soon as it is built: before DDP, compile and the data)
``create_loss``                 ``open_clip_train.main.create_loss`` replaced
train data stage, collate       ``open_clip_train.data.get_dataset_fn`` wrapped (train split only):
                                the sample stage, the tokenizer, ``wds.batched``'s and the csv
                                ``DataLoader``'s collate function; batches are ``(images, texts)``
metrics, state for              ``open_clip_train.main.train_one_epoch`` wrapped (log line filter on the
``--resume``, stop              root logger, TensorBoard / W&B proxies, state file next to the checkpoints)
CPU DDP fix                     ``open_clip_train.main.init_distributed_device`` wrapped: installed when
                                the run's device resolves to the CPU (also with ``--device`` left at
                                its default on a machine without CUDA)
==============================  ==========================================================

Independently of plugins, a run with ``--device cpu`` gets the CPU multi-rank DDP fix (stock
open_clip 3.3 passes ``device_ids=[cpu]`` to DDP, which DDP rejects: such a run fails outright
without it); it is installed in that process only, after parsing, and changes nothing elsewhere.
"""

from __future__ import annotations

import functools
import logging
import types

from torch.utils.data import default_collate

from ..errors import UserError
from . import hooks
from .discovery import Discovered
from .hooks import active_plugin, refuse, swapped
from .requires import Needs

parser_hook_installed = hooks.parser_hook_installed

_WHY_DATA = "swaps it while the training split's pipeline is built"
REQUIRES = (
    Needs("open_clip_train.params", "parse_args", "builds open_clip's parser with --loss and the plugin's flags",
          params=("args",), looks_up=("argparse", "ArgumentParser", "parse_args")),
    Needs("open_clip_train.main", "main", "replaces the functions main() calls by name",
          looks_up=("parse_args", "init_distributed_device", "create_model_and_transforms", "create_loss",
                    "get_data", "train_one_epoch")),
    Needs("open_clip_train.distributed", "init_distributed_device", "reads the resolved args.device after it",
          params=("args",)),
    Needs("open_clip_train.data", "get_data", "wraps the dataset factory it looks up", looks_up=("get_dataset_fn",)),
    Needs("open_clip_train.data", "get_dataset_fn", "wraps the factory it returns", params=("data_path", "dataset_type")),
    Needs("open_clip_train.data", "get_wds_dataset", _WHY_DATA + " (sample stage, tokenizer, batched's collate)",
          params=("args", "preprocess_img", "is_train"), keywords=("epoch", "tokenizer"),
          looks_up=("tarfile_to_samples_nothrow", "wds", "batched", "to_tuple")),
    Needs("open_clip_train.data", "get_csv_dataset", _WHY_DATA + " (CsvDataset, the DataLoader's collate_fn)",
          params=("args", "preprocess_fn", "is_train"), looks_up=("CsvDataset", "DataLoader")),
    Needs("open_clip_train.data", "tarfile_to_samples_nothrow", "wraps it with the plugin's sample stage"),
    Needs("webdataset.filters", "default_collation_fn", "wraps it with the plugin's collate function"),
    Needs("open_clip_train.train", "train_one_epoch", "wraps it (metrics, state, stop) and reads its log line",
          params=("model", "data", "loss", "epoch", "optimizer", "scaler", "scheduler", "dist_model", "args",
                  "tb_writer"),
          looks_up=("wandb", "logging", "info", "add_scalar", "num_batches"), constants=("Train Epoch: ",)),
    Needs("open_clip.model", "CLIP", "adapts its forward (text batches with negatives), packs its text tower",
          fields=("forward", "encode_text", "encode_image")),
    Needs("open_clip.model", "CustomTextCLIP", "adapts its forward, packs its text tower",
          fields=("forward", "encode_text", "encode_image")),
    Needs("open_clip.transformer", "Transformer.forward", "runs the text transformer on packed rows",
          params=("self", "x"), keywords=("attn_mask",)),
    Needs("open_clip.transformer", "TextTransformer", "packs open_clip's own text towers", fields=("forward",)),
)


def install_parser_hook(found: Discovered) -> None:
    """Stage 1 (see module docstring). Idempotent."""
    hooks.install_parser_hook(found, lambda args, plugin: install_training_hooks(args), install_record_hook)


# ----------------------------------------------------------------------------- loss
def _wrap_create_loss(original):
    @functools.wraps(original)
    def create_loss(args):
        plugin = active_plugin(args)
        return original(args) if plugin is None else plugin.create_loss(args)

    return create_loss


# ----------------------------------------------------------------------------- data
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
            try:  # the plugin may refuse what it cannot take (a UserError): one line, before any worker starts
                stage = plugin.train_sample_stage(args, oc_data.tarfile_to_samples_nothrow)
                wds = _WebdatasetProxy(oc_data.wds, plugin.train_collate(args, oc_data.wds.filters.default_collation_fn))
                loader = functools.partial(oc_data.DataLoader, collate_fn=plugin.train_collate(args, default_collate))
                with swapped(oc_data, "tarfile_to_samples_nothrow", stage), swapped(oc_data, "wds", wds), \
                        swapped(oc_data, "DataLoader", loader), swapped(oc_data, "CsvDataset", plugin.csv_dataset(args)):
                    tok = tokenizer if fn is oc_data.get_csv_dataset else plugin.train_tokenizer(args, tokenizer)
                    return fn(args, preprocess_fn, is_train=True, epoch=epoch, tokenizer=tok, **kw)
            except UserError as e:
                refuse(e.one_line())

        return build

    return get_dataset_fn


# ----------------------------------------------------------------------------- train loop
def _wrap_train_one_epoch(oc_train, original):
    @functools.wraps(original)
    def train_one_epoch(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, tb_writer=None):
        plugin = active_plugin(args)
        if plugin is None:  # a stock run with OPENCLIP_CE_METRICS=1
            return hooks.run_recorded_epoch(args, tb_writer=tb_writer, run=lambda writer: original(
                model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, tb_writer=writer))
        steps = data["train"].dataloader.num_batches // args.accum_freq * epoch  # as train_one_epoch counts
        samples = steps * args.batch_size * args.accum_freq * args.world_size
        return hooks.run_plugin_epoch(
            plugin, loss, args, epoch, oc_train=oc_train, wandb_names=("wandb",), position=(steps, samples),
            tb_writer=tb_writer,
            run=lambda writer: original(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args,
                                        tb_writer=writer))

    return train_one_epoch


_training_hooked = False


def install_training_hooks(args) -> None:
    """Stage 2 (see module docstring): only for a run that selected a plugin (``args``: its parsed
    flags). Idempotent."""
    global _training_hooked
    if _training_hooked:
        return
    hooks.check_requirements(REQUIRES, "the open_clip 3.3 wiring", args)
    import open_clip_train.data as oc_data
    import open_clip_train.train as oc_train

    for main in hooks.main_modules():  # main() looks these names up in its module when it calls them
        main.init_distributed_device = hooks.wrap_init_distributed_device(main.init_distributed_device)
        main.create_model_and_transforms = hooks.wrap_create_model(main.create_model_and_transforms, args)
        main.create_loss = _wrap_create_loss(main.create_loss)
        main.train_one_epoch = _wrap_train_one_epoch(oc_train, main.train_one_epoch)
    oc_data.get_dataset_fn = _wrap_get_dataset_fn(oc_data, oc_data.get_dataset_fn)
    logging.getLogger().addFilter(hooks.log_filter)  # open_clip 3.3 logs on the root logger
    _training_hooked = True


def install_record_hook(args) -> None:
    """A stock run with ``OPENCLIP_CE_METRICS=1``: only ``train_one_epoch`` is wrapped, to record its loss
    scalars (:class:`.hooks.LossScalarRecorder`)."""
    hooks.wrap_train_one_epoch_once(_wrap_train_one_epoch)
