"""The one installer of the wirings: what every open_clip version gets alike, done here once; each
version's module (:mod:`.openclip33`, :mod:`.openclip4`) states only what differs, as a :class:`Wiring`.

Two stages, so that a run which does not select a plugin stays stock open_clip:

1. :func:`install_parser_hook` (:mod:`.activate`, when ``open_clip_train.main`` is imported or by
   ``openclip-ce train``): ``--loss`` and the plugin's flags in open_clip's parser (:mod:`.parser_hook`).
2. :func:`install_training_hooks`, after parsing, only for a run whose ``--loss`` is a plugin: it first
   checks the wiring's :attr:`Wiring.requires` (a refusal in one line if open_clip moved), then
   replaces in ``open_clip_train.main`` (``main()`` looks these names up when it calls them):

   ================================  =================================================================
   main's name                       wrapped by
   ================================  =================================================================
   ``init_distributed_device``       :func:`.cpu_ddp.wrap_init_distributed_device` (CPU DDP fix)
   ``create_model_and_transforms``   :func:`wrap_create_model` (the plugin's ``adapt_model``)
   :attr:`Wiring.loss_entry`         :attr:`Wiring.wrap_loss_entry` (the plugin's ``create_loss``)
   ``train_one_epoch``               :func:`wrap_train_one_epoch`: :func:`.epoch.run_plugin_epoch` with
                                     what :attr:`Wiring.read_epoch` reads from its arguments
   ================================  =================================================================

   and wraps ``open_clip_train.data.get_dataset_fn`` (:func:`wrap_get_dataset_fn`: the training split
   is built with the plugin's sample stage, ``CsvDataset``, tokenizer and the stand-ins of
   :attr:`Wiring.data_swaps`), and filters the logger of :attr:`Wiring.train_logger`.

A stock run with ``OPENCLIP_CE_METRICS=1`` gets only ``train_one_epoch`` wrapped
(:func:`install_record_hook`), to record its loss scalars. A new open_clip version is one new module
with a ``WIRING`` (and ``REQUIRES = WIRING.requires``) and a row in :data:`.versions.WIRINGS`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, Tuple

from ..errors import UserError
from .cpu_ddp import wrap_init_distributed_device
from .discovery import Discovered
from .epoch import run_plugin_epoch
from .parser_hook import active_plugin, install_parser_hook as _install_parser_hook, refuse
from .patching import main_modules, swapped
from .reporting import log_filter, run_recorded_epoch
from .requires import Needs

WHY_DATA = "swaps it while the training split's pipeline is built"


@dataclass(frozen=True)
class Wiring:
    """What one open_clip version's wiring states: only what differs between versions."""

    name: str  # for the refusal when open_clip moved: "the open_clip 3.3 wiring"
    needs: Tuple[Needs, ...]  # what this version's fields rely on in open_clip (the installer adds its own)
    loss_entry: str  # main's function through which the loss comes in: "create_loss", "create_task"
    wrap_loss_entry: Callable[[Callable], Callable]  # its wrapper: the plugin's loss for a plugin run
    # train_one_epoch's arguments by name -> (loss, epoch, (optimizer steps, samples) before this epoch)
    read_epoch: Callable[[Mapping[str, Any]], Tuple[Any, int, Tuple[int, int]]]
    wandb_names: Tuple[str, ...]  # the W&B-compatible modules open_clip_train.train looks up
    train_logger: str  # the logger of open_clip's "Train Epoch:" line ("": the root logger)
    # open_clip_train.data names swapped while the training split is built, besides the sample stage
    # (tarfile_to_samples_nothrow) and CsvDataset: (name, make) with make(original, collate) -> stand-in,
    # collate(fn) being the plugin's collate function around fn
    data_swaps: Tuple[Tuple[str, Callable[[Any, Callable[[Callable], Callable]], Any]], ...]

    @property
    def requires(self) -> Tuple[Needs, ...]:
        """Everything checked before a plugin run is wired: the installer's needs, then this version's."""
        return (*_installer_needs(self.loss_entry), *self.needs, *MODEL_NEEDS)


def _installer_needs(loss_entry: str) -> Tuple[Needs, ...]:
    """What the installer itself relies on in open_clip, whatever the version (main's names: those it replaces)."""
    main_names = ("parse_args", "init_distributed_device", "create_model_and_transforms", loss_entry, "get_data",
                  "train_one_epoch")
    return (
        Needs("open_clip_train.params", "parse_args", "builds open_clip's parser with --loss and the plugin's flags",
              params=("args",), looks_up=("argparse", "ArgumentParser", "parse_args")),
        Needs("open_clip_train.main", "main", "replaces the functions main() calls by name", looks_up=main_names),
        Needs("open_clip_train.distributed", "init_distributed_device", "reads the resolved args.device after it",
              params=("args",)),
        Needs("open_clip_train.data", "get_data", "wraps the dataset factory it looks up",
              looks_up=("get_dataset_fn",)),
        Needs("open_clip_train.data", "get_dataset_fn", "wraps the factory it returns",
              params=("data_path", "dataset_type")),
        Needs("open_clip_train.data", "tarfile_to_samples_nothrow", "wraps it with the plugin's sample stage"),
    )


MODEL_NEEDS = (  # what the plugin's model adaptation and text_packing rely on
    Needs("open_clip.model", "CLIP", "adapts its forward (text batches with negatives), packs its text tower",
          fields=("forward", "encode_text", "encode_image")),
    Needs("open_clip.model", "CustomTextCLIP", "adapts its forward, packs its text tower",
          fields=("forward", "encode_text", "encode_image")),
    Needs("open_clip.transformer", "Transformer.forward", "runs the text transformer on packed rows",
          params=("self", "x"), keywords=("attn_mask",)),
    Needs("open_clip.transformer", "TextTransformer", "packs open_clip's own text towers", fields=("forward",)),
)


# ----------------------------------------------------------------------------- the shared wrappers
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


def wrap_train_one_epoch(wiring: Wiring, oc_train, original):
    """Main's ``train_one_epoch``, whatever its signature (it takes ``args`` and ``tb_writer``): a plugin
    run's epoch goes through :func:`.epoch.run_plugin_epoch`, a recorded stock run's through
    :func:`.reporting.run_recorded_epoch`; open_clip gets the stand-in writer as ``tb_writer``."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    def train_one_epoch(*a, **kw):
        call = signature.bind(*a, **kw)
        args, tb_writer = call.arguments["args"], call.arguments.get("tb_writer")

        def run(writer):
            call.arguments["tb_writer"] = writer
            return original(*call.args, **call.kwargs)

        plugin = active_plugin(args)
        if plugin is None:  # a stock run with OPENCLIP_CE_METRICS=1
            return run_recorded_epoch(args, run, tb_writer=tb_writer)
        loss, epoch, position = wiring.read_epoch(call.arguments)
        return run_plugin_epoch(plugin, loss, args, epoch, run=run, oc_train=oc_train,
                                wandb_names=wiring.wandb_names, position=position, tb_writer=tb_writer)

    return train_one_epoch


def _train_data_stand_ins(wiring: Wiring, oc_data, plugin, args):
    """``(name in open_clip_train.data, stand-in)`` for building the training split."""
    collate = functools.partial(plugin.train_collate, args)
    return [("tarfile_to_samples_nothrow", plugin.train_sample_stage(args, oc_data.tarfile_to_samples_nothrow)),
            *((name, make(getattr(oc_data, name), collate)) for name, make in wiring.data_swaps),
            ("CsvDataset", plugin.csv_dataset(args))]


def wrap_get_dataset_fn(wiring: Wiring, oc_data, original):
    """The dataset factories of a plugin run's training split build it with the plugin's stand-ins (and,
    except csv, its tokenizer); the other splits and stock runs are built as open_clip builds them."""

    @functools.wraps(original)
    def get_dataset_fn(data_path, dataset_type):
        fn = original(data_path, dataset_type)

        def build(args, preprocess_fn, is_train, epoch=0, tokenizer=None, **kw):
            plugin = active_plugin(args)
            if plugin is None or not is_train:
                return fn(args, preprocess_fn, is_train=is_train, epoch=epoch, tokenizer=tokenizer, **kw)
            try:  # the plugin may refuse what it cannot take (a UserError): one line, before any worker starts
                stand_ins = _train_data_stand_ins(wiring, oc_data, plugin, args)
                tok = tokenizer if fn is oc_data.get_csv_dataset else plugin.train_tokenizer(args, tokenizer)
                with contextlib.ExitStack() as stack:
                    for name, value in stand_ins:
                        stack.enter_context(swapped(oc_data, name, value))
                    return fn(args, preprocess_fn, is_train=True, epoch=epoch, tokenizer=tok, **kw)
            except UserError as e:
                refuse(e.one_line())

        return build

    return get_dataset_fn


def check_requirements(requirements: Sequence[Needs], what: str, args) -> None:
    """Refuse a plugin run, in one line, when open_clip no longer has what the wiring hooks into."""
    from .requires import problems
    from .versions import openclip_version

    found = problems(requirements)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        refuse(f"--loss {args.loss}: open_clip {openclip_version()} is not what {what} was written for: "
               f"{found[0]}{more}; run tests/integration/test_wiring_requirements.py for the full list")


# ----------------------------------------------------------------------------- the stages
def install_parser_hook(wiring: Wiring, found: Discovered) -> None:
    """Stage 1 (see module docstring). Idempotent."""
    _install_parser_hook(found, lambda args, plugin: install_training_hooks(wiring, args),
                         lambda args: install_record_hook(wiring, args))


_training_hooked = False


def install_training_hooks(wiring: Wiring, args) -> None:
    """Stage 2 (see module docstring): only for a run that selected a plugin (``args``: its parsed
    flags). Idempotent."""
    global _training_hooked
    if _training_hooked:
        return
    check_requirements(wiring.requires, wiring.name, args)
    import open_clip_train.data as oc_data
    import open_clip_train.train as oc_train

    for main in main_modules():  # main() looks these names up in its module when it calls them
        main.init_distributed_device = wrap_init_distributed_device(main.init_distributed_device)
        main.create_model_and_transforms = wrap_create_model(main.create_model_and_transforms, args)
        setattr(main, wiring.loss_entry, wiring.wrap_loss_entry(getattr(main, wiring.loss_entry)))
        main.train_one_epoch = wrap_train_one_epoch(wiring, oc_train, main.train_one_epoch)
    oc_data.get_dataset_fn = wrap_get_dataset_fn(wiring, oc_data, oc_data.get_dataset_fn)
    logging.getLogger(wiring.train_logger).addFilter(log_filter)
    _training_hooked = True


def install_record_hook(wiring: Wiring, args) -> None:
    """A stock run with ``OPENCLIP_CE_METRICS=1``: only ``train_one_epoch`` is wrapped (unless it is), to
    record its loss scalars (:class:`.reporting.LossScalarRecorder`)."""
    import open_clip_train.train as oc_train

    for main in main_modules():
        if not hasattr(main.train_one_epoch, "__wrapped__"):
            main.train_one_epoch = wrap_train_one_epoch(wiring, oc_train, main.train_one_epoch)
