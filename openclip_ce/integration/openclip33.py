"""The wiring into ``open_clip_train.main`` of open_clip_torch 3.3 (row ``3.3.x`` of :mod:`.versions`).

open_clip_torch 3.3 has no plugin lookup. The installer (:mod:`.installer`) emulates, on an unmodified
install, the hook points that ``patches/open_clip-3.3.0-plugins.patch`` adds to open_clip itself, in
two stages so that a run which does not select a plugin stays stock open_clip: the parser hook, then,
only for a run whose ``--loss`` is a plugin and after checking :data:`REQUIRES` (a refusal in one line
if open_clip moved), the training hooks. This module states what is particular to 3.3 (:data:`WIRING`):

==============================  ==========================================================
hook                            how it is reached on an unmodified open_clip 3.3
==============================  ==========================================================
``check_args``                  ``open_clip_train.params.parse_args`` wrapped
``adapt_model``                 ``open_clip_train.main.create_model_and_transforms`` wrapped (the
                                run's model, as soon as it is built: before DDP, compile and the data)
``create_loss``                 ``open_clip_train.main.create_loss`` replaced (``loss_entry``)
train data stage, collate       ``open_clip_train.data.get_dataset_fn`` wrapped (train split only):
                                the sample stage, the tokenizer, ``wds.batched``'s and the csv
                                ``DataLoader``'s collate function (``data_swaps``: ``wds``,
                                ``DataLoader``); batches are ``(images, texts)``
metrics, state for              ``open_clip_train.main.train_one_epoch`` wrapped (log line filter on the
``--resume``, stop              root logger, TensorBoard / W&B proxies, state file next to the checkpoints;
                                its arguments ``(model, data, loss, epoch, ..., args, tb_writer)``, the
                                position counted as it counts: ``read_epoch``)
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
import types

from torch.utils.data import default_collate

from .installer import WHY_DATA, Wiring
from .parser_hook import active_plugin
from .requires import Needs

NEEDS = (  # what the fields of WIRING rely on in open_clip 3.3 (the installer adds what it relies on itself)
    Needs("open_clip_train.data", "get_wds_dataset", WHY_DATA + " (sample stage, tokenizer, batched's collate)",
          params=("args", "preprocess_img", "is_train"), keywords=("epoch", "tokenizer"),
          looks_up=("tarfile_to_samples_nothrow", "wds", "batched", "to_tuple")),
    Needs("open_clip_train.data", "get_csv_dataset", WHY_DATA + " (CsvDataset, the DataLoader's collate_fn)",
          params=("args", "preprocess_fn", "is_train"), looks_up=("CsvDataset", "DataLoader")),
    Needs("webdataset.filters", "default_collation_fn", "wraps it with the plugin's collate function"),
    Needs("open_clip_train.train", "train_one_epoch", "wraps it (metrics, state, stop) and reads its log line",
          params=("model", "data", "loss", "epoch", "optimizer", "scaler", "scheduler", "dist_model", "args",
                  "tb_writer"),
          looks_up=("wandb", "logging", "info", "add_scalar", "num_batches"), constants=("Train Epoch: ",)),
)


def _wrap_create_loss(original):
    @functools.wraps(original)
    def create_loss(args):
        plugin = active_plugin(args)
        return original(args) if plugin is None else plugin.create_loss(args)

    return create_loss


def _read_epoch(a):
    """The loss, the epoch and the position before it, from ``train_one_epoch``'s arguments."""
    args = a["args"]
    steps = a["data"]["train"].dataloader.num_batches // args.accum_freq * a["epoch"]  # as train_one_epoch counts
    return a["loss"], a["epoch"], (steps, steps * args.batch_size * args.accum_freq * args.world_size)


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


WIRING = Wiring(
    name="the open_clip 3.3 wiring",
    needs=NEEDS,
    loss_entry="create_loss", wrap_loss_entry=_wrap_create_loss,
    read_epoch=_read_epoch,
    wandb_names=("wandb",),
    train_logger="",  # open_clip 3.3 logs on the root logger
    data_swaps=(
        ("wds", lambda wds, collate: _WebdatasetProxy(wds, collate(wds.filters.default_collation_fn))),
        ("DataLoader", lambda loader, collate: functools.partial(loader, collate_fn=collate(default_collate))),
    ),
)
REQUIRES = WIRING.requires
