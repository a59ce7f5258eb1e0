"""The CE-CLIP plugin object, announced in the ``open_clip_train.plugins`` entry-point group.

A training plugin is selected with ``--loss NAME`` and supplies, through the methods below, its
extra flags, its loss, its training data stage, a model adapter, extra metrics and resumable
state (the contract: :mod:`openclip_ce.contract`). The same object serves the bootstrap wirings
(:mod:`openclip_ce.integration`) and an open_clip patched with ``patches/`` (which calls these
methods itself). Its metrics also go to ``train_metrics.jsonl`` (:mod:`openclip_ce.metrics_file`),
whichever way it is wired. Nothing here imports open_clip.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import logging
import math
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple

import torch

from ..metrics_file import MetricsWriter
from ..negatives import NEG_TYPES, parse_neg_types
from .adapter import adapt_model
from .data import NegativesCsvDataset, NegativesError, NegativesTokenizer, attach_negatives
from .loss import (DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_THRESHOLD_MAX, ITC_NEGATIVE_MODES, NO_NEGATIVES_STEPS,
                   CeClipLoss)
from .packing import CAPACITY, PackSpec, TextLayoutCollate
from .resume import check_resume_latest
from .schedule import DEFAULT_FRACTION, DEFAULT_PATIENCE, DEFAULT_RAMP, MODES, TermSchedule
from .siglip_loss import SIGLIP_DIST_IMPLS, CeSigLipLoss

log = logging.getLogger(__name__)
COLLAPSE_STEPS = 20  # optimizer steps in a row at the contrastive loss's chance value before the collapse warning


def _neg_types(value: str):
    try:
        return parse_neg_types(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _non_negative(value: str) -> float:
    v = float(value)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return v


def _positive_float(value: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {value}")
    return v


def _positive_int(value: str) -> int:
    v = int(value)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return v


def _positive(value: str) -> float:
    v = float(value)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return v


def _model_with_weights(model: str) -> bool:
    """A ``--model`` that open_clip loads with weights whatever ``--pretrained`` says: ``hf-hub:`` (the hub
    repository's weights) or ``local-dir:`` with a checkpoint file in the directory (as open_clip looks for one)."""
    if model.startswith("hf-hub:"):
        return True
    if model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:"):])
        return any(next(folder.glob(f"*{ext}"), None) for ext in (".safetensors", ".bin", ".pth"))
    return False


DETACH_MODES = ("auto", "on", "off")


def schedule_choice(args: argparse.Namespace) -> Tuple[bool, str]:
    """``(gate on, why)`` for this run's ``--ce-schedule``: ``auto`` gates IMC and CMR in a run from random
    weights (no ``--pretrained``, no checkpoint to ``--resume``: open_clip has resolved ``--resume latest``
    by then, and no ``--model`` that comes with weights) and trains every term from step 0 in a fine-tuning
    run (the paper's setting)."""
    mode = getattr(args, "ce_schedule", "auto")
    if mode != "auto":
        return mode == "gate", f"--ce-schedule {mode}"
    if getattr(args, "resume", None):
        return False, "--ce-schedule auto, resuming a checkpoint (its plugin state, if any, sets the schedule)"
    if getattr(args, "pretrained", None):
        return False, f"--ce-schedule auto, fine-tuning from --pretrained {args.pretrained}"
    if _model_with_weights(str(getattr(args, "model", ""))):
        return False, f"--ce-schedule auto, fine-tuning the weights of --model {args.model}"
    return True, "--ce-schedule auto, training from random weights (no --pretrained, no --resume)"


def _compose(stage: Callable[[Iterable], Iterator], src_fn: Callable, *args, **kwargs) -> Iterator:
    return stage(src_fn(*args, **kwargs))


def _check_open_clip_4_args(args: argparse.Namespace) -> None:
    """Flags of open_clip 4 (main) whose batches the plugin cannot take (absent on 3.3: nothing to refuse)."""
    for flag, why in (
        ("use_naflex", "--use-naflex (NaFlex batches; also implied by GenLIP / GenLAP models)"),
        ("json_text_key", "--json-text-key (captions read from a .json member)"),
        ("fsdp", "--fsdp (FSDP2; untested with the packed text encoding)"),
    ):
        if getattr(args, flag, None):
            raise ValueError(f"{why} is not supported with --loss ce_clip")
    if str(getattr(args, "dataset_type", "")).endswith("-audio"):
        raise ValueError(f"--dataset-type {args.dataset_type} (audio) is not supported with --loss ce_clip")


class CeClipPlugin:
    name = "ce_clip"
    description = "CE-CLIP: ITC with hard negatives + intra-modal contrast + cross-modal rank (CVPR 2024)"

    def __init__(self):
        self._pack_spec: Optional[PackSpec] = None  # this process's run: set by adapt_model, read by train_collate
        self._metrics_file: Optional[MetricsWriter] = None  # this process's run: set by create_loss
        self._detach_mode = "auto"  # this process's run's --ce-imc-detach-positive: set by create_loss

    # ------------------------------------------------------------------ flags
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("CE-CLIP (openclip-ce), active with --loss ce_clip")
        g.add_argument("--ce-alpha", type=_non_negative, default=DEFAULT_ALPHA,
                       help="weight of the intra-modal contrastive (IMC) loss (default %(default)s)")
        g.add_argument("--ce-beta", type=_non_negative, default=DEFAULT_BETA,
                       help="weight of the cross-modal rank (CMR) loss (default %(default)s)")
        g.add_argument("--ce-threshold-max", type=_non_negative, default=DEFAULT_THRESHOLD_MAX,
                       help="upper bound u of the adaptive thresholds (default %(default)s)")
        g.add_argument("--ce-fixed-threshold", type=_non_negative, default=None, metavar="V",
                       help="use a fixed CMR threshold V for every type instead of the adaptive one (paper's baseline)")
        g.add_argument("--ce-neg-types", type=_neg_types, default=NEG_TYPES, metavar="TYPES",
                       help=f"comma-separated negative types to use (default {','.join(NEG_TYPES)})")
        g.add_argument("--ce-itc-negatives", choices=ITC_NEGATIVE_MODES, default="global",
                       help="hard negatives in the image->text softmax: every valid negative of the global batch "
                            "(global, default, as the paper's code) or each image's own (own, Eq. 2 literally)")
        g.add_argument("--ce-no-itc-negatives", action="store_true", help="ablation: plain CLIP ITC (no hard negatives in it)")
        g.add_argument("--ce-no-imc", action="store_true", help="ablation: drop the IMC loss")
        g.add_argument("--ce-no-cmr", action="store_true", help="ablation: drop the CMR loss")
        g.add_argument("--ce-strict", action="store_true",
                       help="a training sample without a valid neg.json is an error (default: all-placeholder, counted in the log)")
        g.add_argument("--ce-dist-timeout", type=_positive_float, default=None, metavar="MINUTES",
                       help="how long the ranks wait in a collective for one that stopped responding before the run "
                            "fails (default: torch's, 30 min for gloo, 10 for NCCL; open_clip has no flag for it)")
        g.add_argument("--ce-no-pack", "--ce-no-trim", dest="ce_no_pack", action="store_true",
                       help="encode every caption and valid negative in a row of its own at the full context length "
                            "(default: packed several to a row, where exact for the text tower; same result, faster)")
        g.add_argument("--ce-text-rows", type=_positive_int, default=None, metavar="N",
                       help="rows of the text batch per step (packed rows, or caption rows with --ce-no-pack); "
                            "default: sized from the first batch with 10%% headroom, raised when a batch needs more")
        g.add_argument("--ce-schedule", choices=MODES, default="auto",
                       help="when IMC and CMR train: 'gate' holds their weights at 0 until the contrastive loss has "
                            "made progress (--ce-gate-*), then ramps them to --ce-alpha / --ce-beta (--ce-ramp-steps), "
                            "which keeps a run from random weights from collapsing; 'off' trains every term from step 0 "
                            "(the paper's fine-tuning); 'auto' (default): 'gate' from random weights (no --pretrained, "
                            "no --resume), 'off' otherwise. Hard negatives in the contrastive loss start at step 0 either way")
        g.add_argument("--ce-gate-fraction", type=_positive, default=DEFAULT_FRACTION, metavar="F",
                       help="the gate opens once a moving average of the contrastive loss over its chance value "
                            "(every pair scored alike) has stayed at or below F for --ce-gate-patience optimizer steps "
                            "(default %(default)s)")
        g.add_argument("--ce-gate-patience", type=_positive_int, default=DEFAULT_PATIENCE, metavar="N",
                       help="optimizer steps in a row at or below --ce-gate-fraction before the gate opens (default %(default)s)")
        g.add_argument("--ce-ramp-steps", type=_positive_int, default=DEFAULT_RAMP, metavar="N",
                       help="optimizer steps over which IMC and CMR rise linearly from 0 to --ce-alpha / --ce-beta once "
                            "the gate is open (1: at once; default %(default)s)")
        g.add_argument("--ce-imc-detach-positive", nargs="?", choices=DETACH_MODES, const="on", default="auto",
                       help="keep S(I,T) out of IMC's gradient, so that IMC only pushes each caption away from its "
                            "negatives ('on', also the flag alone); 'off': the paper's IMC, whose S(I,T) column also "
                            "pulls image and caption together; 'auto' (default): 'on' where --ce-schedule gates (from "
                            "random weights), 'off' otherwise (fine-tuning)")
        g.add_argument("--ce-allow-no-negatives", action="store_true",
                       help=f"keep training when no valid negative reached the loss in the first {NO_NEGATIVES_STEPS} "
                            f"optimizer steps (default: stop with an error, the run would be plain CLIP)")

    def check_args(self, args: argparse.Namespace) -> None:
        for flag, why in (
            ("horovod", "--horovod"),
            ("distill_model", "--distill-model (distillation)"),
        ):
            if getattr(args, flag, None):
                raise ValueError(f"{why} is not supported with --loss ce_clip")
        if "coca" in str(getattr(args, "model", "")).lower():
            raise ValueError(f"CoCa models ({args.model}) are not supported with --loss ce_clip")
        impl = getattr(args, "loss_dist_impl", None)
        if getattr(args, "siglip", False) and impl is not None and impl not in SIGLIP_DIST_IMPLS:
            raise ValueError(f"--loss-dist-impl {impl} is not one of SigLIP's: {', '.join(SIGLIP_DIST_IMPLS)}")
        if getattr(args, "ce_fixed_threshold", None) is not None and args.ce_fixed_threshold > args.ce_threshold_max:
            raise ValueError(
                f"--ce-fixed-threshold {args.ce_fixed_threshold} exceeds --ce-threshold-max {args.ce_threshold_max}")
        _check_open_clip_4_args(args)
        if getattr(args, "ce_dist_timeout", None) and not hasattr(torch.distributed, "set_timeout"):
            raise ValueError(
                f"--ce-dist-timeout needs torch.distributed.set_timeout (torch {torch.__version__} lacks it)")
        check_resume_latest(args)  # a damaged latest checkpoint: one line naming it and the newest whole one

    # ------------------------------------------------------------------ loss
    def create_loss(self, args: argparse.Namespace) -> CeClipLoss:
        loss = self._objective_loss(args)
        # a non-finite loss is looked for where open_clip reads the metrics anyway: its log steps (main: the
        # denser of its console and metric intervals); fp16 AMP (--precision amp) skips non-finite steps
        intervals = (getattr(args, "log_every_n_steps", None), getattr(args, "log_metric_every_n_steps", None))
        every = min([n for n in intervals if n] or [1])
        loss.watch_finite(every, skipped_steps=getattr(args, "precision", None) == "amp")
        minutes = getattr(args, "ce_dist_timeout", None)
        if minutes and torch.distributed.is_available() and torch.distributed.is_initialized():
            # open_clip made the process group with torch's default timeout: every later collective waits this long
            torch.distributed.set_timeout(datetime.timedelta(minutes=minutes))
            log.info("ce_clip: collectives time out after %g min (--ce-dist-timeout)", minutes)
        return loss

    def _objective_loss(self, args: argparse.Namespace) -> CeClipLoss:
        self._metrics_file = MetricsWriter(args)
        gate, why = schedule_choice(args)
        schedule = TermSchedule(enabled=gate, fraction=getattr(args, "ce_gate_fraction", DEFAULT_FRACTION),
                                patience=getattr(args, "ce_gate_patience", DEFAULT_PATIENCE),
                                ramp=getattr(args, "ce_ramp_steps", DEFAULT_RAMP))
        self._detach_mode = getattr(args, "ce_imc_detach_positive", "auto")
        detach = gate if self._detach_mode == "auto" else self._detach_mode == "on"
        log.info("ce_clip schedule (%s): %s; %s. %s", why, schedule.describe(),
                 "IMC with S(I,T) out of its gradient (--ce-imc-detach-positive)" if detach else "the paper's IMC",
                 "--ce-schedule off trains the paper's objective instead (every term from step 0, the paper's IMC)"
                 if gate else
                 "--ce-schedule gate holds IMC and CMR back until the contrastive loss has made progress (for "
                 "training from random weights)")
        objective = dict(  # the CE flags, the same for CE-CLIP and CE-SigLIP
            neg_types=args.ce_neg_types, alpha=args.ce_alpha, beta=args.ce_beta, threshold_max=args.ce_threshold_max,
            fixed_threshold=args.ce_fixed_threshold, itc_negatives=args.ce_itc_negatives,
            use_itc_negatives=not args.ce_no_itc_negatives, use_imc=not args.ce_no_imc, use_cmr=not args.ce_no_cmr,
            rank=args.rank, world_size=args.world_size, accum_freq=args.accum_freq,
            no_negatives_steps=None if args.ce_allow_no_negatives else NO_NEGATIVES_STEPS, schedule=schedule,
            imc_detach_positive=detach,
        )
        if not getattr(args, "siglip", False):
            return CeClipLoss(**objective, local_loss=args.local_loss, gather_with_grad=args.gather_with_grad).to(args.device)
        # CE-SigLIP: the same flags on SigLIP's sigmoid objective
        ignored = [f for f, on in (("--local-loss", args.local_loss), ("--gather-with-grad", args.gather_with_grad)) if on]
        log.info("ce_clip with --siglip: CE-SigLIP (sigmoid ITC with hard negatives + IMC + CMR), --loss-dist-impl %s%s",
                 args.loss_dist_impl or "bidir",
                 f"; {' and '.join(ignored)} do not apply to a sigmoid loss (as for SigLipLoss)" if ignored else "")
        return CeSigLipLoss(**objective, dist_impl=args.loss_dist_impl).to(args.device)

    # ------------------------------------------------------------------ data
    def train_tokenizer(self, args: argparse.Namespace, tokenizer: Callable) -> NegativesTokenizer:
        if getattr(args, "variable_text", False):  # open_clip 4 sets it from the text tower, after the model is built
            raise NegativesError("--loss ce_clip needs fixed-length text batches; this model's text tower takes "
                                 "variable-length ones (variable_text)")
        return NegativesTokenizer(tokenizer, args.ce_neg_types)

    def train_collate(self, args: argparse.Namespace, collate: Callable) -> Callable:
        """Wrap the trainer's collate function (training split): the text column gets its layout
        (:mod:`.packing`) in the data workers, for the packing rule :meth:`adapt_model` decided."""
        CAPACITY.configure(getattr(args, "ce_text_rows", None))
        return TextLayoutCollate(collate, self._pack_spec)

    def train_sample_stage(self, args: argparse.Namespace, tarfile_to_samples: Callable) -> Callable:
        """Wrap the trainer's tar -> samples stage so each sample's ``neg.json`` rides with its caption."""
        stage = functools.partial(attach_negatives, strict=args.ce_strict,
                                  caption_key=getattr(args, "text_key", None) or "txt")  # open_clip 4: --text-key
        return functools.partial(_compose, stage, tarfile_to_samples)

    def csv_dataset(self, args: argparse.Namespace) -> Callable:
        return functools.partial(NegativesCsvDataset, neg_types=args.ce_neg_types)

    # ------------------------------------------------------------------ model
    def adapt_model(self, args: argparse.Namespace, model: torch.nn.Module) -> None:
        """Make ``model`` (unwrapped) take CE-CLIP text batches; idempotent, state_dict unchanged.

        Also decides the text layout the data stage produces (:meth:`train_collate`), so it must be
        called before the training data is built (open_clip's main creates the model first)."""
        self._pack_spec = adapt_model(model, pack=not getattr(args, "ce_no_pack", False))

    # ------------------------------------------------------------------ reporting / state
    def metrics(self, loss: CeClipLoss) -> Dict[str, float]:
        """Called at open_clip's log steps (the reads from the device happen there, not every step); also
        appends the step's record (with the loss terms) to ``train_metrics.jsonl``."""
        self._warn_if_collapsed(loss)
        out = {**loss.metrics(), **loss.schedule_metrics()}
        if self._metrics_file is not None:
            self._metrics_file.write(loss.optimizer_steps(), {**loss.loss_terms(), **out})
        return out

    def _warn_if_collapsed(self, loss: CeClipLoss) -> None:
        steps = loss.steps_at_chance()
        if steps < COLLAPSE_STEPS:
            self._collapse_warned = False
            return
        if not getattr(self, "_collapse_warned", False):
            self._collapse_warned = True
            log.warning(
                "ce_clip: the contrastive loss has sat at its chance value (every logit equal) for the last %d "
                "optimizer steps: the image and text features have collapsed to one point, where every gradient "
                "vanishes, so this run will not recover. Restart it with --ce-schedule gate if it ran without it (IMC "
                "pulls toward this point while the text tower is untrained; the gate holds IMC and CMR back until "
                "the contrastive loss has made progress), a lower --lr or a longer --warmup, or a lower --ce-alpha "
                "(docs/training-from-scratch.md)", steps)

    def state_dict(self, loss: CeClipLoss) -> Dict[str, Any]:
        steps, samples = (self._metrics_file or MetricsWriter(None)).position(loss.optimizer_steps())
        thresholds = {t: v if math.isfinite(v) else None for t, v in loss.threshold_dict().items()}  # strict JSON
        return {"thresholds": thresholds, "steps": steps, "samples": samples, "schedule": loss.schedule.state(),
                "imc_detach_positive": loss.imc_detach_positive}

    def resume_at(self, loss: CeClipLoss, steps: int, samples: int) -> None:
        """``--resume`` without the state file: the metrics file counts on from the trainer's position."""
        loss.step_offset = steps
        if self._metrics_file is not None:
            self._metrics_file.resume(steps, samples)
        loss.schedule.resume_at(steps)

    def load_state_dict(self, loss: CeClipLoss, state: Dict[str, Any]) -> None:
        loss.step_offset = int(state.get("steps", 0))  # the loss's messages name the run's steps
        if self._metrics_file is not None:  # the metrics file counts on from the checkpoint
            self._metrics_file.resume(int(state.get("steps", 0)), int(state.get("samples", 0)))
        if not loss.load_threshold_dict(state.get("thresholds", {})):
            log.info(
                "resume: thresholds of the checkpoint not restored; --ce-fixed-threshold %g is used", loss.fixed_threshold)
        self._load_schedule(loss, state.get("schedule"))
        saved = state.get("imc_detach_positive")
        if isinstance(saved, bool) and self._detach_mode == "auto" and saved != loss.imc_detach_positive:
            loss.imc_detach_positive = saved  # --ce-imc-detach-positive auto: the IMC the run was trained with
            log.info("resume: IMC of the checkpoint restored: %s", "S(I,T) out of its gradient" if saved else "the paper's")

    def _load_schedule(self, loss: CeClipLoss, saved: Optional[Dict[str, Any]]) -> None:
        """The checkpoint's schedule: a run resumes as it was trained (gate on or off, opened or not)."""
        if saved is None:  # a checkpoint written before the schedule existed
            log.info("resume: the checkpoint has no CE schedule state; %s", loss.schedule.describe())
            return
        loss.schedule.load_state(saved)
        opened = saved.get("open_step")
        log.info("resume: CE schedule of the checkpoint restored: %s%s", loss.schedule.describe(),
                 "" if not loss.schedule.enabled else
                 f"; gate opened at step {opened + 1}" if opened is not None else "; gate still closed")


plugin = CeClipPlugin()
