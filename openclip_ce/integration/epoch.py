"""One training epoch of a plugin run, around open_clip's own ``train_one_epoch``: the plugin state
restored once per run (``--resume``), the plugin's metrics in the reporters (:mod:`.reporting`), the
loss's end-of-epoch hook, a plugin's deliberate stop (:class:`~openclip_ce.contract.StopTraining`) as one
line, and the state written next to the checkpoints (``ce_plugin_state_epoch_N.json``, strict JSON).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import types
from typing import Any, Callable, Iterable, Tuple

from ..contract import EpochLoss, ResumesWithoutState, StopTraining
from ..errors import EXIT_USAGE
from ..fileio import write_atomic
from .patching import swapped
from .reporting import TensorBoardProxy, WandbProxy, log_filter

log = logging.getLogger(__name__)

STATE_FILE = "ce_plugin_state_epoch_{epoch}.json"


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
    log line (:data:`.reporting.log_filter`), TensorBoard and the W&B-compatible modules named
    ``wandb_names`` in ``oc_train``; a :class:`StopTraining` from the plugin ends the run with one line
    (every rank raises it at the same step); after the epoch the state is written next to the checkpoints."""
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
