"""The CE-CLIP plugin object, announced in the ``open_clip_train.plugins`` entry-point group.

A training plugin is selected with ``--loss NAME`` and supplies, through the methods below, its
extra flags, its loss, its training data stage, a model adapter, extra metrics and resumable
state (the contract: :mod:`openclip_ce.training.contract`). The same object serves the bootstrap
wiring (:mod:`openclip_ce.integration`) and an open_clip patched with ``patches/`` (which calls
these methods itself). Nothing here imports open_clip.
"""

from __future__ import annotations

import argparse
import functools
import logging
from typing import Any, Callable, Dict, Iterable, Iterator

import torch

from ..negatives import NEG_TYPES, parse_neg_types
from .adapter import adapt_model
from .data import NegativesCsvDataset, NegativesTokenizer, attach_negatives
from .loss import ITC_NEGATIVE_MODES, NO_NEGATIVES_STEPS, CeClipLoss
from .siglip_loss import SIGLIP_DIST_IMPLS, create_siglip_loss

log = logging.getLogger("openclip_ce.training")


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


def _compose(stage: Callable[[Iterable], Iterator], src_fn: Callable, *args, **kwargs) -> Iterator:
    return stage(src_fn(*args, **kwargs))


class CeClipPlugin:
    name = "ce_clip"
    description = "CE-CLIP: ITC with hard negatives + intra-modal contrast + cross-modal rank (CVPR 2024)"

    # ------------------------------------------------------------------ flags
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("CE-CLIP (openclip-ce), active with --loss ce_clip")
        g.add_argument("--ce-alpha", type=_non_negative, default=0.2, help="weight of the intra-modal contrastive (IMC) loss (default 0.2)")
        g.add_argument("--ce-beta", type=_non_negative, default=0.4, help="weight of the cross-modal rank (CMR) loss (default 0.4)")
        g.add_argument("--ce-threshold-max", type=_non_negative, default=10.0, help="upper bound u of the adaptive thresholds (default 10)")
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
        g.add_argument("--ce-no-trim", action="store_true",
                       help="encode every caption and negative at the full context length (default: in a few length "
                            "groups cut to the lengths present, where exact for the text tower; same result, faster)")
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

    # ------------------------------------------------------------------ loss
    def create_loss(self, args: argparse.Namespace) -> CeClipLoss:
        if getattr(args, "siglip", False):  # CE-SigLIP: the same flags on SigLIP's sigmoid objective
            return create_siglip_loss(args)
        return CeClipLoss(
            neg_types=args.ce_neg_types,
            alpha=args.ce_alpha,
            beta=args.ce_beta,
            threshold_max=args.ce_threshold_max,
            fixed_threshold=args.ce_fixed_threshold,
            itc_negatives=args.ce_itc_negatives,
            use_itc_negatives=not args.ce_no_itc_negatives,
            use_imc=not args.ce_no_imc,
            use_cmr=not args.ce_no_cmr,
            local_loss=args.local_loss,
            gather_with_grad=args.gather_with_grad,
            rank=args.rank,
            world_size=args.world_size,
            accum_freq=args.accum_freq,
            no_negatives_steps=None if args.ce_allow_no_negatives else NO_NEGATIVES_STEPS,
        ).to(args.device)

    # ------------------------------------------------------------------ data
    def train_tokenizer(self, args: argparse.Namespace, tokenizer: Callable) -> NegativesTokenizer:
        return NegativesTokenizer(tokenizer, args.ce_neg_types)

    def train_sample_stage(self, args: argparse.Namespace, tarfile_to_samples: Callable) -> Callable:
        """Wrap the trainer's tar -> samples stage so each sample's ``neg.json`` rides with its caption."""
        stage = functools.partial(attach_negatives, strict=args.ce_strict)
        return functools.partial(_compose, stage, tarfile_to_samples)

    def csv_dataset(self, args: argparse.Namespace) -> Callable:
        return functools.partial(NegativesCsvDataset, neg_types=args.ce_neg_types)

    # ------------------------------------------------------------------ model
    def adapt_model(self, args: argparse.Namespace, model: torch.nn.Module) -> None:
        """Make ``model`` (unwrapped) encode ``[B, 1 + K, L]`` text batches; idempotent, state_dict unchanged."""
        adapt_model(model, trim=not getattr(args, "ce_no_trim", False))

    # ------------------------------------------------------------------ reporting / state
    def metrics(self, loss: CeClipLoss) -> Dict[str, float]:
        return loss.metrics()

    def state_dict(self, loss: CeClipLoss) -> Dict[str, Any]:
        return {"thresholds": loss.threshold_dict()}

    def load_state_dict(self, loss: CeClipLoss, state: Dict[str, Any]) -> None:
        if not loss.load_threshold_dict(state.get("thresholds", {})):
            log.info(
                "resume: thresholds of the checkpoint not restored; --ce-fixed-threshold %g is used", loss.fixed_threshold)


plugin = CeClipPlugin()
