"""The training-plugin contract: what open_clip's training main calls on a plugin selected with ``--loss NAME``.

A leaf module (it imports nothing of this package but :mod:`.errors`): the plugins
(:mod:`openclip_ce.training`) and the wirings that call them (:mod:`openclip_ce.integration`) both
depend on it, never on each other's insides.

:class:`TrainingPlugin` states the contract as a :class:`typing.Protocol` (for readers and type
checkers); :func:`contract_problems` enforces it when plugins are discovered, in the manner of
pluggy's hook validation: every method present, callable, and callable with the arguments the
trainer passes. Discovery (:mod:`openclip_ce.integration.discovery`) reports a plugin that fails
with its entry point and the methods at fault, and leaves it out. :class:`StopTraining` is how a
plugin ends a run on purpose. The upstream patches (``patches/``) document the same calls in
``open_clip_train/plugins.py``.
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any, Callable, Dict, List, Protocol, runtime_checkable

import torch

from .errors import EXIT_USAGE, UserError

LOSS_DEFAULT = "clip"  # open_clip's own objective; no plugin may take this name
# the pooling of a causal text tower where packed captions give each caption's own feature (exactly): the
# data stage lays out packed rows only for these (training/packing.py), the towers are packed only with
# these (integration/text_packing.py)
PACKABLE_POOLS = ("argmax", "eos", "first")


class StopTraining(UserError):
    """Raised by a plugin (typically from its loss, at the same step on every rank) to end the run on
    purpose: the wiring logs its message as one line and exits with status 2, without a traceback.

    An open_clip patched with ``patches/`` knows nothing of this package: it recognises the stop by the
    class attributes below (an exception whose ``stop_training`` is true) and exits with ``exit_code``."""

    stop_training = True
    exit_code = EXIT_USAGE


@runtime_checkable
class TrainingPlugin(Protocol):
    name: str
    description: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the plugin's flags (an argument group) to open_clip's parser."""

    def check_args(self, args: argparse.Namespace) -> None:
        """Refuse flag combinations the plugin cannot honour: raise ``ValueError`` with one line."""

    def create_loss(self, args: argparse.Namespace) -> torch.nn.Module:
        """The loss module, called as open_clip calls its losses: ``loss(**model_out, output_dict=True)``."""

    def train_tokenizer(self, args: argparse.Namespace, tokenizer: Callable) -> Callable:
        """The tokenizer of the training split (webdataset), wrapping the model's own."""

    def train_collate(self, args: argparse.Namespace, collate: Callable) -> Callable:
        """A replacement for the trainer's collate function (training split only), wrapping ``collate``;
        what it returns for the text column must have ``.to(device, non_blocking=...)``."""

    def train_sample_stage(self, args: argparse.Namespace, tarfile_to_samples: Callable) -> Callable:
        """A replacement for the trainer's tar -> samples stage (training split only)."""

    def csv_dataset(self, args: argparse.Namespace) -> Callable:
        """A factory with ``CsvDataset``'s signature for ``--dataset-type csv`` (training split only)."""

    def adapt_model(self, args: argparse.Namespace, model: torch.nn.Module) -> None:
        """Adapt the unwrapped model in place for this run's options, before DDP; must not change its ``state_dict``."""

    def metrics(self, loss: torch.nn.Module) -> Dict[str, float]:
        """Extra scalars for the train log line, TensorBoard and W&B (not summed into the loss). Called on
        the logging rank at open_clip's log steps only (reads from the device belong there)."""

    def state_dict(self, loss: torch.nn.Module) -> Dict[str, Any]:
        """JSON-serialisable state to keep with checkpoints (restored on ``--resume``)."""

    def load_state_dict(self, loss: torch.nn.Module, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""



@runtime_checkable
class StepLoss(Protocol):
    """Optional, on a plugin's loss: a trainer whose loss may run compiled (open_clip main's
    ``--torchcompile`` compiles the task's forward, loss included) calls :meth:`end_optimizer_step` on
    the host after every optimizer step, for the checks a compiled graph cannot make (a host read)."""

    def end_optimizer_step(self) -> None:
        """One optimizer step has ended (host side, outside any compiled region)."""


@runtime_checkable
class EpochLoss(Protocol):
    """Optional, on a plugin's loss: the trainer calls :meth:`end_epoch` on the host, on every rank, after
    each training epoch and before that epoch's checkpoint is written (a last check, e.g. that the loss
    stayed finite, may raise :class:`StopTraining` so that no checkpoint of broken weights is written)."""

    def end_epoch(self) -> None:
        """One training epoch has ended (host side, every rank)."""


@runtime_checkable
class ResumesWithoutState(Protocol):
    """Optional, on a plugin: ``--resume`` found no plugin state (a checkpoint copied without its state
    file); the trainer says where the run stands, so that what the plugin counts goes on from there."""

    def resume_at(self, loss: torch.nn.Module, steps: int, samples: int) -> None:
        """The run resumes after ``steps`` optimizer steps and ``samples`` samples (the trainer's counts)."""


# method -> the positional arguments the trainer passes (after self)
CALLS: Dict[str, int] = {
    "add_arguments": 1, "check_args": 1, "create_loss": 1, "train_tokenizer": 2, "train_collate": 2,
    "train_sample_stage": 2, "csv_dataset": 1, "adapt_model": 2, "metrics": 1, "state_dict": 1, "load_state_dict": 2,
}


def contract_problems(obj: Any) -> List[str]:
    """What ``obj`` lacks to be a training plugin (empty list: it conforms)."""
    problems = []
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        problems.append(f"'name' must be an identifier string usable as --loss NAME, got {name!r}")
    elif name == LOSS_DEFAULT:
        problems.append(f"'name' {name!r} is open_clip's own objective")
    for method, n_args in CALLS.items():
        fn = getattr(obj, method, None)
        if not callable(fn):
            problems.append(f"no method {method}()")
            continue
        try:
            inspect.signature(fn).bind(*([None] * n_args))
        except TypeError as e:
            problems.append(f"{method}() cannot be called with {n_args} argument(s) ({e})")
        except ValueError:  # builtins without a signature: accept
            pass
    return problems
