"""The wiring into open_clip's main branch and 4.x releases (row ``4.x`` of :mod:`.versions`).

There, ``open_clip_train.main`` trains through task objects: ``create_task(args, model=...)`` builds a
``CLIPTask`` / ``SigLIPTask`` that owns the model and the loss, batches are dicts (``{"image": ...,
"text": ...}``) that ``task.prepare_batch`` moves to the device and ``task.training_forward`` feeds
to the model and the loss. ``create_loss`` no longer exists there. A ``--loss ce_clip`` run is wired
by the installer (:mod:`.installer`) in the same two stages as on 3.3 (:mod:`.openclip33`); this module
states what is particular to main (:data:`WIRING`), and the hooks are reached at these places:

==============================  ==========================================================
hook                            how it is reached on open_clip main / 4.x
==============================  ==========================================================
``check_args``                  ``open_clip_train.params.parse_args`` wrapped (the plugin refuses what
                                it cannot take on main: ``--use-naflex`` and the GenLIP / GenLAP
                                models that imply it, ``--json-text-key``, ``--fsdp``, audio data)
``adapt_model``                 ``open_clip_train.main.create_model_and_transforms`` wrapped
the loss, in the task           ``open_clip_train.main.create_task`` wrapped (``loss_entry``): a :class:`CLIPTask` (or
                                ``SigLIPTask`` with ``--siglip``) subclass built with
                                ``loss=plugin.create_loss(args)``; its ``prepare_batch`` also moves
                                a text batch object with its ``.to()`` (main moves only tensors and
                                dicts of them). Main's own ``training_forward``, ``--accum-freq``
                                path and evaluation run unchanged.
train data stage, collate       ``open_clip_train.data.get_dataset_fn`` wrapped (train split only):
                                the sample stage (``tarfile_to_samples_nothrow``), the tokenizer
                                (main's ``TokenizeText`` wraps it), the collate function (main's
                                ``default_collate``, for webdataset, csv and synthetic data) and
                                ``CsvDataset`` (the plugin's, with dict samples); ``data_swaps``:
                                ``default_collate``. A batch is
                                ``{"image": images, "text": the plugin's text batch}``; a text tower
                                of variable-length batches (so ``--length-bucketing``) is refused
metrics, state for              ``open_clip_train.main.train_one_epoch`` wrapped: a filter on the
``--resume``, stop              ``open_clip_train.train`` logger (main's console line), TensorBoard and
                                W&B / trackio proxies, the state file next to the checkpoints; its
                                arguments ``(state, data, args, tb_writer)``, the loss, epoch and
                                position read from ``state``: ``read_epoch``
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

import torch

from ..contract import StepLoss
from .installer import WHY_DATA, Wiring
from .parser_hook import active_plugin, refuse
from .requires import Needs

NEEDS = (  # what the fields of WIRING rely on in open_clip main (the installer adds what it relies on itself)
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
    Needs("open_clip_train.data", "get_wds_dataset", WHY_DATA + " (sample stage, tokenizer, collate)",
          params=("args", "preprocess_img", "is_train"), keywords=("epoch", "tokenizer"),
          looks_up=("tarfile_to_samples_nothrow", "TokenizeText", "default_collate", "rename")),
    Needs("open_clip_train.data", "TokenizeText.__call__", "gives it the plugin's tokenizer", params=("self", "text")),
    Needs("open_clip_train.data", "get_csv_dataset", WHY_DATA + " (CsvDataset, the collate function)",
          params=("args", "preprocess_fn", "is_train"), looks_up=("CsvDataset", "default_collate")),
    Needs("open_clip_train.data", "get_synthetic_dataset", WHY_DATA + " (the collate function)",
          params=("args", "preprocess_fn", "is_train"), looks_up=("default_collate",)),
    Needs("open_clip_train.train", "train_one_epoch", "wraps it (metrics, state, stop) and reads its log line",
          params=("state", "data", "args", "tb_writer"),
          looks_up=("get_wandb_backend", "_logger", "add_scalar"), constants=("Train Epoch: ",)),
    Needs("open_clip_train.train", "get_wandb_backend", "swaps the W&B-compatible modules it returns",
          looks_up=("wandb", "trackio")),
    Needs("open_clip_train.train", "TrainState", "reads the task, the epoch and the run's position from it",
          fields=("task", "epoch", "global_step", "samples_seen")),
)


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


def _read_epoch(a):
    """The loss, the epoch and the position before it, from ``train_one_epoch``'s ``state``."""
    state = a["state"]
    return state.task.loss, state.epoch, (state.global_step, state.samples_seen)


WIRING = Wiring(
    name="the open_clip main / 4.x wiring",
    needs=NEEDS,
    loss_entry="create_task", wrap_loss_entry=_wrap_create_task,
    read_epoch=_read_epoch,
    wandb_names=("wandb", "trackio"),
    train_logger="open_clip_train.train",  # main's console line comes from this logger
    data_swaps=(("default_collate", lambda default_collate, collate: collate(default_collate)),),
)
REQUIRES = WIRING.requires
