"""The wiring into open_clip's main branch and 4.x releases (row ``4.x`` of :mod:`.versions`).

There, ``open_clip_train.main`` trains through task objects: ``create_task(args, model=...)`` builds a
``CLIPTask`` / ``SigLIPTask`` that owns the model and the loss, batches are dicts (``{"image": ...,
"text": ...}``) that ``task.prepare_batch`` moves to the device and ``task.training_forward`` feeds
to the model and the loss. ``create_loss`` no longer exists there. A ``--loss ce_clip`` run is wired
in the same two stages as on 3.3 (:mod:`.openclip33`), at these places:

==============================  ==========================================================
hook                            how it is reached on open_clip main / 4.x
==============================  ==========================================================
``check_args``                  ``open_clip_train.params.parse_args`` wrapped (the plugin refuses what
                                it cannot take on main: ``--use-naflex`` and the GenLIP / GenLAP
                                models that imply it, ``--json-text-key``, ``--fsdp``, audio data)
``adapt_model``                 ``open_clip_train.main.create_model_and_transforms`` wrapped
the loss, in the task           ``open_clip_train.main.create_task`` wrapped: a :class:`CLIPTask` (or
                                ``SigLIPTask`` with ``--siglip``) subclass built with
                                ``loss=plugin.create_loss(args)``; its ``prepare_batch`` also moves
                                a text batch object with its ``.to()`` (main moves only tensors and
                                dicts of them). Main's own ``training_forward``, ``--accum-freq``
                                path and evaluation run unchanged.
train data stage, collate       ``open_clip_train.data.get_dataset_fn`` wrapped (train split only):
                                the sample stage (``tarfile_to_samples_nothrow``), the tokenizer
                                (main's ``TokenizeText`` wraps it), the collate function (main's
                                ``default_collate``, for webdataset, csv and synthetic data) and
                                ``CsvDataset`` (the plugin's, with dict samples). A batch is
                                ``{"image": images, "text": the plugin's text batch}``; a text tower
                                of variable-length batches (so ``--length-bucketing``) is refused
metrics, state for              ``open_clip_train.main.train_one_epoch`` wrapped: a filter on the
``--resume``, stop              ``open_clip_train.train`` logger (main's console line), TensorBoard and
                                W&B / trackio proxies, the state file next to the checkpoints
CPU DDP fix                     ``open_clip_train.main.init_distributed_device`` wrapped (main passes
                                ``device_ids=[cpu]`` to DDP too)
==============================  ==========================================================

Why the text batch travels under the ``"text"`` key rather than as an extra key: the plugin's text
batch holds the captions *and* their negatives, packed together into rows (one text-tower pass), so
there is no separate negatives tensor; and under ``"text"`` main's ``training_forward`` (which passes
only ``image`` and ``text`` to the model), its ``--accum-freq`` path (``model(**batch)``), its batch
size count and its evaluation all work unchanged. Up to the tokenizer the negatives ride inside the
caption member, as on 3.3, because main's webdataset ``rename(..., keep=False)`` drops every other
member of a sample.
"""

from __future__ import annotations

import functools
import logging

import torch

from ..contract import StepLoss
from ..errors import UserError
from . import hooks
from .discovery import Discovered
from .hooks import active_plugin, refuse, swapped
from .requires import Needs

parser_hook_installed = hooks.parser_hook_installed

TRAIN_LOGGER = "open_clip_train.train"
_WHY_DATA = "swaps it while the training split's pipeline is built"
REQUIRES = (
    Needs("open_clip_train.params", "parse_args", "builds open_clip's parser with --loss and the plugin's flags",
          params=("args",), looks_up=("argparse", "ArgumentParser", "parse_args")),
    Needs("open_clip_train.main", "main", "replaces the functions main() calls by name",
          looks_up=("parse_args", "init_distributed_device", "create_model_and_transforms", "create_task",
                    "get_data", "train_one_epoch")),
    Needs("open_clip_train.distributed", "init_distributed_device", "reads the resolved args.device after it",
          params=("args",)),
    Needs("open_clip.factory", "create_task", "replaces it for a plugin run",
          params=("args", "model"), keywords=("dist_model", "naflex_data_config")),
    Needs("open_clip.task", "CLIPTask", "subclasses it with the plugin's loss",
          params=("model",), keywords=("loss", "rank", "world_size"),
          fields=("prepare_batch", "training_forward", "compute_accum_loss", "batch_size")),
    Needs("open_clip.task", "SigLIPTask", "subclasses it with the plugin's loss (--siglip)",
          params=("model",), keywords=("loss", "rank", "world_size")),
    Needs("open_clip.task", "CLIPTask.training_forward", "lets it feed the text batch to the model and the loss",
          params=("self", "batch"), looks_up=("trainable_module", "loss"), constants=("image", "text", "_loss")),
    Needs("open_clip.task", "CLIPTask.prepare_batch", "extends it to move the text batch",
          params=("self", "batch", "device", "input_dtype")),
    Needs("open_clip_train.data", "get_data", "wraps the dataset factory it looks up", looks_up=("get_dataset_fn",)),
    Needs("open_clip_train.data", "get_dataset_fn", "wraps the factory it returns", params=("data_path", "dataset_type")),
    Needs("open_clip_train.data", "get_wds_dataset", _WHY_DATA + " (sample stage, tokenizer, collate)",
          params=("args", "preprocess_img", "is_train"), keywords=("epoch", "tokenizer"),
          looks_up=("tarfile_to_samples_nothrow", "TokenizeText", "default_collate", "rename")),
    Needs("open_clip_train.data", "TokenizeText.__call__", "gives it the plugin's tokenizer", params=("self", "text")),
    Needs("open_clip_train.data", "get_csv_dataset", _WHY_DATA + " (CsvDataset, the collate function)",
          params=("args", "preprocess_fn", "is_train"), looks_up=("CsvDataset", "default_collate")),
    Needs("open_clip_train.data", "get_synthetic_dataset", _WHY_DATA + " (the collate function)",
          params=("args", "preprocess_fn", "is_train"), looks_up=("default_collate",)),
    Needs("open_clip_train.data", "tarfile_to_samples_nothrow", "wraps it with the plugin's sample stage"),
    Needs("open_clip_train.train", "train_one_epoch", "wraps it (metrics, state, stop) and reads its log line",
          params=("state", "data", "args", "tb_writer"),
          looks_up=("get_wandb_backend", "_logger", "add_scalar"), constants=("Train Epoch: ",)),
    Needs("open_clip_train.train", "get_wandb_backend", "swaps the W&B-compatible modules it returns",
          looks_up=("wandb", "trackio")),
    Needs("open_clip_train.train", "TrainState", "reads the task, the epoch and the run's position from it",
          fields=("task", "epoch", "global_step", "samples_seen")),
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


# ----------------------------------------------------------------------------- task
def _movable(value) -> bool:
    return not isinstance(value, (torch.Tensor, dict)) and callable(getattr(value, "to", None))


@functools.lru_cache(maxsize=None)
def plugin_task_class(base: type) -> type:
    """``base`` (main's ``CLIPTask`` or ``SigLIPTask``) whose ``prepare_batch`` also moves batch entries
    that are neither tensors nor dicts but have ``.to()`` (the plugin's text batch: it pads its rows to
    a fixed capacity as it moves, so every step has the same shapes)."""

    def prepare_batch(self, batch, device, input_dtype=None):
        plain = base.prepare_batch(self, {k: v for k, v in batch.items() if not _movable(v)}, device, input_dtype)
        return {k: v.to(device, non_blocking=True) if _movable(v) else plain[k] for k, v in batch.items()}

    def clamp_logit_scale(self, *args, **kwargs):
        # main's train loop calls this once per optimizer step, eagerly, also when --torchcompile compiled
        # the task's forward (loss included): the loss's host-side step check runs here (contract.StepLoss)
        base.clamp_logit_scale(self, *args, **kwargs)
        if isinstance(self.loss, StepLoss):
            self.loss.end_optimizer_step()

    return type(f"Plugin{base.__name__}", (base,),
                {"prepare_batch": prepare_batch, "clamp_logit_scale": clamp_logit_scale, "__module__": __name__})


def _wrap_create_task(original):
    @functools.wraps(original)
    def create_task(args, model, dist_model=None, naflex_data_config=None):
        plugin = active_plugin(args)
        if plugin is None:
            return original(args, model, dist_model=dist_model, naflex_data_config=naflex_data_config)
        from open_clip.model import CLIP, CustomTextCLIP
        from open_clip.task import CLIPTask, SigLIPTask

        if not isinstance(model, (CLIP, CustomTextCLIP)):
            refuse(f"--loss {args.loss} trains open_clip's CLIP and CustomTextCLIP models, not {type(model).__name__}")
        base = SigLIPTask if getattr(args, "siglip", False) else CLIPTask
        return plugin_task_class(base)(model, loss=plugin.create_loss(args), rank=args.rank, world_size=args.world_size)

    return create_task


# ----------------------------------------------------------------------------- data
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
                collate = plugin.train_collate(args, oc_data.default_collate)
                tok = tokenizer if fn is oc_data.get_csv_dataset else plugin.train_tokenizer(args, tokenizer)
                with swapped(oc_data, "tarfile_to_samples_nothrow", stage), \
                        swapped(oc_data, "default_collate", collate), swapped(oc_data, "CsvDataset", plugin.csv_dataset(args)):
                    return fn(args, preprocess_fn, is_train=True, epoch=epoch, tokenizer=tok, **kw)
            except UserError as e:
                refuse(e.one_line())

        return build

    return get_dataset_fn


# ----------------------------------------------------------------------------- train loop
def _wrap_train_one_epoch(oc_train, original):
    @functools.wraps(original)
    def train_one_epoch(state, data, args, tb_writer=None):
        plugin = active_plugin(args)
        if plugin is None:  # a stock run with OPENCLIP_CE_METRICS=1
            return hooks.run_recorded_epoch(args, tb_writer=tb_writer,
                                            run=lambda writer: original(state, data, args, tb_writer=writer))
        return hooks.run_plugin_epoch(
            plugin, state.task.loss, args, state.epoch, oc_train=oc_train, wandb_names=("wandb", "trackio"),
            position=(state.global_step, state.samples_seen), tb_writer=tb_writer,
            run=lambda writer: original(state, data, args, tb_writer=writer))

    return train_one_epoch


_training_hooked = False


def install_training_hooks(args) -> None:
    """Stage 2 (see module docstring): only for a run that selected a plugin. Idempotent."""
    global _training_hooked
    if _training_hooked:
        return
    hooks.check_requirements(REQUIRES, "the open_clip main / 4.x wiring", args)
    import open_clip_train.data as oc_data
    import open_clip_train.train as oc_train

    for main in hooks.main_modules():  # main() looks these names up in its module when it calls them
        main.init_distributed_device = hooks.wrap_init_distributed_device(main.init_distributed_device)
        main.create_model_and_transforms = hooks.wrap_create_model(main.create_model_and_transforms, args)
        main.create_task = _wrap_create_task(main.create_task)
        main.train_one_epoch = _wrap_train_one_epoch(oc_train, main.train_one_epoch)
    oc_data.get_dataset_fn = _wrap_get_dataset_fn(oc_data, oc_data.get_dataset_fn)
    logging.getLogger(TRAIN_LOGGER).addFilter(hooks.log_filter)  # main's console line comes from this logger
    _training_hooked = True


def install_record_hook(args) -> None:
    """A stock run with ``OPENCLIP_CE_METRICS=1``: only ``train_one_epoch`` is wrapped, to record its loss
    scalars (:class:`.hooks.LossScalarRecorder`)."""
    hooks.wrap_train_one_epoch_once(_wrap_train_one_epoch)
