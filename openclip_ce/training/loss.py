"""The CE-CLIP objective (paper Eq. 2, 3, 6-8), in plain torch.

This module knows nothing of open_clip. It receives, per local batch of ``B`` samples with ``K``
negative types:

* ``image_features`` ``[B, D]`` and ``text_features`` ``[B, D]`` (L2-normalised, as CLIP outputs),
* ``logit_scale`` (scalar tensor, already exponentiated),
* ``neg_text_features`` ``[B, K, D]`` and ``neg_mask`` ``[B, K]`` (bool; False = placeholder).

With ``S = logit_scale * cosine``:

* ITC(hn): text->image is plain CLIP; image->text adds hard negatives to the softmax denominator,
  either every valid negative of the global batch (``itc_negatives="global"``, default, as NegCLIP
  and the authors' code) or each image's own negatives only (``"own"``, Eq. 2 read literally).
* IMC: per sample, cross-entropy over ``[S(I,T), S(T,T_k) for valid k]`` with target the positive;
  mean over samples with at least one valid negative.
* CMR: ``max(0, S(I,T_k) - S(I,T) + Th_k)`` over valid pairs, mean over valid pairs. ``Th_k`` is the
  global-batch mean of ``S(I,T) - S(I,T_k)`` at the previous optimizer step (no gradient), clamped to
  ``[0, threshold_max]``, starting at 0; a type with no valid negative in a step keeps its value.

``L = ITC(hn) + alpha * IMC + beta * CMR``; the returned dict holds the three weighted terms, so that
a trainer summing the dict gets ``L``. With a schedule (:mod:`.schedule`, ``--ce-schedule gate``), alpha
and beta are 0 until the contrastive loss has made progress, then ramp up. Thresholds and per-type statistics are *not* in that dict
(they are not losses): read them with :meth:`CeClipLoss.metrics`.

Distributed behaviour follows open_clip's ``ClipLoss``: features are all-gathered (with gradient
when ``gather_with_grad``), ``local_loss`` computes rows for the local samples only; the default mode
(neither) gives the global loss on every rank, computed as both flags and averaged (see ``sync_values``
in ``__init__``). Sample-level
terms (IMC, CMR) are normalised by global counts so that the average over ranks equals the
single-process value exactly; thresholds come from an all-reduce and are identical on every rank.
After DDP's gradient averaging, N ranks give the single-process loss and gradient of the same
global batch in the default mode and with ``gather_with_grad`` (with or without ``local_loss``).
``local_loss`` without ``gather_with_grad`` drops the cross-rank gradient terms, as ``ClipLoss``
does: use it only as open_clip's memory-saving approximation.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..contract import StopTraining
from .gather import all_reduce_min, all_reduce_sum, gather_tensor
from .schedule import TermSchedule

ITC_NEGATIVE_MODES = ("global", "own")
NO_NEGATIVES_STEPS = 50  # optimizer steps without any valid negative before training stops
CHANCE_TOLERANCE = 1e-3  # a contrastive loss within 0.1% of its all-logits-equal value counts as at chance
# the paper's settings; the plugin's flags take their defaults from here
DEFAULT_ALPHA = 0.2
DEFAULT_BETA = 0.4
DEFAULT_THRESHOLD_MAX = 10.0


LOSS_TERMS = ("contrastive_loss", "imc_loss", "cmr_loss")  # the weighted terms of the returned dict, summed by the trainer


class NoNegativesError(StopTraining):
    """No valid hard negative reached the loss in the first optimizer steps: the run would be plain CLIP."""


class NonFiniteLossError(StopTraining):
    """The training loss became NaN or infinite: the weights diverged (or started non-finite)."""


class CeClipLoss(nn.Module):
    """CE-CLIP loss: ITC with hard negatives + alpha * IMC + beta * CMR (adaptive thresholds).

    No learnable parameters. The thresholds are a buffer (``thresholds``, one per type in
    ``neg_types`` order) updated once every ``accum_freq`` calls in training mode, i.e. once per
    optimizer step when the trainer calls the loss ``accum_freq`` times per step (open_clip does,
    each time with the whole accumulated batch).
    """

    def __init__(
        self,
        neg_types: Sequence[str] = ("rel", "att", "act", "obj"),
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        threshold_max: float = DEFAULT_THRESHOLD_MAX,
        fixed_threshold: Optional[float] = None,
        itc_negatives: str = "global",
        use_itc_negatives: bool = True,
        use_imc: bool = True,
        use_cmr: bool = True,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        rank: int = 0,
        world_size: int = 1,
        accum_freq: int = 1,
        no_negatives_steps: Optional[int] = NO_NEGATIVES_STEPS,
        schedule: Optional[TermSchedule] = None,
        imc_detach_positive: bool = False,
    ):
        super().__init__()
        if itc_negatives not in ITC_NEGATIVE_MODES:
            raise ValueError(f"itc_negatives must be one of {ITC_NEGATIVE_MODES}, got {itc_negatives!r}")
        if threshold_max < 0:
            raise ValueError(f"threshold_max must be >= 0, got {threshold_max}")
        if accum_freq < 1:
            raise ValueError(f"accum_freq must be >= 1, got {accum_freq}")
        self.neg_types: Tuple[str, ...] = tuple(neg_types)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.threshold_max = float(threshold_max)
        self.fixed_threshold = None if fixed_threshold is None else float(fixed_threshold)
        self.itc_negatives = itc_negatives
        self.use_itc_negatives = use_itc_negatives
        self.use_imc = use_imc
        self.use_cmr = use_cmr
        # The default mode (neither flag) on several ranks gives what ClipLoss's default gives, every rank
        # reporting the global loss, but is computed as --local-loss --gather-with-grad: each rank takes its
        # own rows, the gathered features carry their gradient back, and the values are averaged over the
        # ranks (sync_values). Same loss and gradients as every rank computing the whole global objective,
        # whose image-to-text logits are [global batch x ~5 x global batch] in fp32: 1/world_size of that.
        self.sync_values = world_size > 1 and not local_loss and not gather_with_grad
        self.local_loss = local_loss or self.sync_values
        self.gather_with_grad = gather_with_grad or self.sync_values
        self.rank = rank
        self.world_size = world_size
        self.accum_freq = accum_freq
        # stop after this many optimizer steps in which no rank had a valid negative (None: never)
        self.no_negatives_steps = no_negatives_steps
        # when IMC and CMR come in (schedule.py; default: from step 0, the paper's)
        self.schedule = schedule if schedule is not None else TermSchedule(enabled=False)
        self.imc_detach_positive = imc_detach_positive  # IMC's S(I,T) column without gradient: IMC moves T, T_k only

        k = len(self.neg_types)
        init = 0.0 if self.fixed_threshold is None else self.fixed_threshold
        self.register_buffer("thresholds", torch.full((k,), init, dtype=torch.float32), persistent=True)
        # Step state lives on the device, so that a step reads nothing back to the host (and a compiled
        # step sees the same graph every time): the last optimizer step's statistics [gap sum, valid
        # count, sample count] x K, whether any valid negative was seen.
        self.register_buffer("last_stats", torch.zeros((3, k), dtype=torch.float32), persistent=False)
        self.register_buffer("seen_valid", torch.zeros((), dtype=torch.bool), persistent=False)
        # consecutive calls whose contrastive loss sat at its chance value (every logit equal: collapsed features)
        self.register_buffer("calls_at_chance", torch.zeros((), dtype=torch.long), persistent=False)
        # the last training call's weighted loss terms (LOSS_TERMS order), for the metrics record (read at
        # log steps only), and the training calls made (they also tell where an --accum-freq step ends)
        self.register_buffer("last_losses", torch.zeros(len(LOSS_TERMS), dtype=torch.float32), persistent=False)
        self.register_buffer("train_calls", torch.zeros((), dtype=torch.long), persistent=False)
        self._eager_calls = 0  # training calls seen in eager mode, for the no-negatives check (host side)
        self._trainer_steps = 0  # optimizer steps reported by the trainer (end_optimizer_step), likewise
        # the first optimizer step whose loss was not finite (0: none), decided on the device; read on the
        # host every `finite_check_every` steps (0: only at the end of an epoch) once the trainer set it (watch_finite)
        self.register_buffer("nonfinite_step", torch.zeros((), dtype=torch.long), persistent=False)
        self.finite_check_every = 0
        self.nonfinite_skipped = False  # the trainer skips non-finite steps (fp16 GradScaler): only a lasting one stops
        self.step_offset = 0  # optimizer steps before this process's run (--resume), for the messages

    # ------------------------------------------------------------------ state / reporting
    def threshold_dict(self) -> Dict[str, float]:
        return {t: float(v) for t, v in zip(self.neg_types, self.thresholds.tolist())}

    def load_threshold_dict(self, values: Dict[str, float]) -> bool:
        """Restore adaptive thresholds (``--resume``), clamped to this run's ``[0, threshold_max]`` as every
        update is (a run resumed with a smaller ``--ce-threshold-max`` uses it from its first step). A fixed
        threshold (``--ce-fixed-threshold``) is a setting of this run, not state: it is kept, and False is
        returned."""
        if self.fixed_threshold is not None:
            return False
        with torch.no_grad():
            for i, t in enumerate(self.neg_types):
                v = values.get(t)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self.thresholds[i] = min(max(float(v), 0.0), self.threshold_max)
        return True

    def metrics(self) -> Dict[str, float]:
        """Thresholds in use for the next step, and the last optimizer step's per-type statistics.

        Reads the device state back (one synchronisation): call it at log steps, not every step."""
        out = {f"ce_threshold_{t}": v for t, v in self.threshold_dict().items()}
        gap_sum, valid, n = self.last_stats.tolist()
        out.update({f"ce_valid_{t}": valid[i] / n[i] for i, t in enumerate(self.neg_types) if n[i]})
        out.update({f"ce_gap_{t}": gap_sum[i] / valid[i] for i, t in enumerate(self.neg_types) if valid[i]})
        return out

    def schedule_metrics(self) -> Dict[str, float]:
        """The weights IMC and CMR trained with in the last step, progress (contrastive loss / chance) and
        the step the gate opened (:mod:`.schedule`). Reads the device: call it at log steps."""
        return self.schedule.metrics(self.alpha if self.use_imc else 0.0, self.beta if self.use_cmr else 0.0)

    def optimizer_steps(self) -> int:
        """Optimizer steps this loss took part in (in this process). Reads the device."""
        return int(self.train_calls) // self.accum_freq

    def loss_terms(self) -> Dict[str, float]:
        """The weighted loss terms of the last training call (their sum is ``loss``). Reads the device."""
        used = (True, self.use_imc, self.use_cmr)
        terms = {k: v for k, v, on in zip(LOSS_TERMS, self.last_losses.tolist(), used) if on}
        return {**terms, "loss": sum(terms.values())}

    def steps_at_chance(self) -> int:
        """Optimizer steps in a row, up to the last, whose contrastive loss sat at its chance value (every
        logit equal: the features collapsed to one point). Reads the device: call it at log steps."""
        return int(self.calls_at_chance) // self.accum_freq

    # ------------------------------------------------------------------ helpers
    def _gather(self, t: torch.Tensor, differentiable: bool = True) -> torch.Tensor:
        if self.world_size <= 1:
            return t
        if not differentiable:
            return gather_tensor(t, self.rank, self.world_size, gather_with_grad=False, keep_local_grad=False)
        return gather_tensor(
            t, self.rank, self.world_size,
            gather_with_grad=self.gather_with_grad,
            keep_local_grad=not self.local_loss,
        )

    @torch.no_grad()
    def _step_statistics(self, pos: torch.Tensor, ik: torch.Tensor, mask: torch.Tensor,
                         extra: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Global per-type [sum of S(I,T)-S(I,T_k) over valid pairs, valid count, sample count], and the
        sum over ranks of ``extra`` (a few numbers: the schedule's signal), in one all-reduce."""
        gaps = (pos[:, None] - ik).masked_fill(~mask, 0.0)
        stats = torch.stack([
            gaps.sum(0),
            mask.sum(0).to(gaps.dtype),
            torch.full_like(gaps[0], float(mask.shape[0])),
        ])
        return _split_reduced(all_reduce_sum(torch.cat([stats.flatten(), extra.to(stats.dtype)]), self.world_size),
                              stats)

    def _count_eager_call(self) -> None:
        """Count the optimizer steps for the host-side checks (:meth:`_end_of_step`) per eager training call,
        for a trainer that runs the loss eagerly (open_clip 3.3, also under --torchcompile, which compiles the
        model only); a trainer that reports its steps (:meth:`end_optimizer_step`) takes over from this count.

        The no-negatives check raises :class:`NoNegativesError` when ``no_negatives_steps`` optimizer steps
        passed without a valid negative. ``seen_valid`` is accumulated on the device from statistics already
        summed over ranks, so every rank takes the same decision at the same step; the flag is read once,
        at that step, on the host."""
        self._eager_calls += 1
        if self._eager_calls % self.accum_freq == 0:
            self._end_of_step(self._eager_calls // self.accum_freq)

    def end_optimizer_step(self) -> None:
        """Host side, after each optimizer step, for a trainer that may run the loss compiled (open_clip
        main's --torchcompile compiles the task's forward, loss included, where a check inside the loss
        would never run): the host-side checks count these steps instead of the loss's calls."""
        self._trainer_steps += 1
        self._end_of_step(self._trainer_steps)

    def _end_of_step(self, step: int) -> None:
        """The host-side checks after optimizer step ``step`` (this process's count, the same on every rank)."""
        if step == self.no_negatives_steps:
            self._raise_if_no_negative_seen()
        if self.finite_check_every and (step - 1) % self.finite_check_every == 0:
            self._raise_if_not_finite(step)

    # ------------------------------------------------------------------ non-finite loss
    def watch_finite(self, every: int, skipped_steps: bool = False) -> None:
        """Read the non-finite flag every ``every`` optimizer steps (the trainer's log interval: steps 1,
        1 + every, ...) and at the end of each epoch. ``skipped_steps``: the trainer skips the update of a
        step whose gradients are not finite (fp16 AMP's GradScaler), so only a non-finite loss that lasts
        until a check stops the run; otherwise the first one does (its update made the weights NaN)."""
        self.finite_check_every = max(1, int(every))
        self.nonfinite_skipped = bool(skipped_steps)

    def end_epoch(self) -> None:
        """Host side, on every rank, after a training epoch and before its checkpoint is written."""
        self._raise_if_not_finite(None)

    def _raise_if_not_finite(self, step: Optional[int]) -> None:
        """One host read (and, on several ranks, one all-reduce, so that every rank decides alike)."""
        never = torch.iinfo(torch.long).max
        first = torch.where(self.nonfinite_step > 0, self.nonfinite_step, never)
        first = int(all_reduce_min(first, self.world_size))
        if first == never:
            return
        at = "at the end of the epoch" if step is None else f"at step {self.step_offset + step}"
        raise NonFiniteLossError(
            f"--loss ce_clip: the training loss is not finite (NaN or inf) since optimizer step "
            f"{self.step_offset + first}; stopped {at}, before a checkpoint of these weights is written (checked "
            f"every {self.finite_check_every} step(s), the log interval, and at each epoch's end). Likely causes: "
            f"non-finite values in the starting weights (--pretrained, the model's folder, --resume), a learning "
            f"rate too high for this model (lower --lr, longer --warmup, --grad-clip-norm), fp16 overflow "
            f"(--precision amp_bf16 or fp32). Resume from the last checkpoint written before that step.")

    def _raise_if_no_negative_seen(self) -> None:
        if not bool(self.seen_valid):
            raise NoNegativesError(
                f"--loss ce_clip: no valid hard negative reached the loss in the first {self.no_negatives_steps} "
                f"optimizer steps on any rank, so this run would train plain CLIP. Likely causes: the training shards "
                f"have no <key>.neg.json members (run `openclip-ce make-shards` on them first); the data stage is not "
                f"attached (a --dataset-type other than webdataset/csv, or a custom loader); csv files without "
                f"neg_<type> cells; every negative is null (see coverage in make-shards' stats.json) or a type "
                f"filter (--ce-neg-types) that keeps none. Pass --ce-allow-no-negatives to train without them "
                f"on purpose.")

    @torch.no_grad()
    def _end_of_call(self, stats: torch.Tensor, at_chance: torch.Tensor) -> None:
        """After a call in training mode. At the end of an optimizer step (every ``accum_freq`` calls) keep
        its statistics and set the next step's thresholds from them: device ops only, no branch on data."""
        gap_sum, valid = stats[0], stats[1]
        has = valid > 0
        if self.accum_freq > 1:
            step_ends = (self.train_calls + 1) % self.accum_freq == 0  # this call is counted after it (_keep_loss_terms)
            has = has & step_ends
            stats = torch.where(step_ends, stats, self.last_stats)
        self.last_stats.copy_(stats)
        self.seen_valid.logical_or_(has.any())
        self.calls_at_chance.copy_(torch.where(at_chance, self.calls_at_chance + 1, 0))
        if self.fixed_threshold is None:
            new = (gap_sum / valid.clamp_min(1)).clamp(0.0, self.threshold_max)
            self.thresholds.copy_(torch.where(has & torch.isfinite(new), new, self.thresholds))

    def _imc_and_cmr(self, scale, pos, ik, txt, neg, mask, factor, n_has, n_valid) -> Dict[str, torch.Tensor]:
        """The weighted IMC and CMR terms over the rows given (``pos`` = S(I,T) [R], ``ik`` = S(I,T_k)
        [R, K], up to a shared additive bias); sums times ``factor``, divided by the global count of
        samples with a valid negative (IMC) and of valid pairs (CMR). The weights are ``alpha`` and
        ``beta``, times the schedule's share for this step when a schedule is on."""
        out = {}
        share = self.schedule.factor()
        alpha, beta = (self.alpha, self.beta) if share is None else (self.alpha * share, self.beta * share)
        if self.use_imc:
            tt = scale * torch.einsum("rd,rkd->rk", txt, neg)      # S(T, T_k)    [R, K]
            first = pos.detach() if self.imc_detach_positive else pos
            logits = torch.cat([first[:, None], tt.masked_fill(~mask, float("-inf"))], dim=1)
            # a row without a valid negative is [S(I,T), -inf, ...]: its cross-entropy is exactly 0
            target = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
            out["imc_loss"] = alpha * F.cross_entropy(logits, target, reduction="sum") * factor / n_has.clamp_min(1)
        if self.use_cmr:
            hinge = F.relu(ik - pos[:, None] + self.thresholds.to(pos.dtype)[None, :]).masked_fill(~mask, 0.0)
            out["cmr_loss"] = beta * hinge.sum() * factor / n_valid.clamp_min(1)
        return out

    @torch.no_grad()
    def _advance_schedule(self, itc_sum: torch.Tensor, chance_sum: torch.Tensor) -> None:
        """After a training call, with the contrastive loss and its chance value summed over ranks (the
        same numbers on every rank): the schedule's progress, gate and ramp, once per optimizer step."""
        step_ends = (self.train_calls + 1) % self.accum_freq == 0 if self.accum_freq > 1 else None
        self.schedule.advance(itc_sum / chance_sum.clamp_min(1e-12), step_ends, self.schedule.factor())

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        neg_text_features: Optional[torch.Tensor] = None,
        neg_mask: Optional[torch.Tensor] = None,
        logit_bias: Optional[torch.Tensor] = None,
        output_dict: bool = False,
    ):
        k = len(self.neg_types)
        if neg_text_features is None or neg_mask is None:
            # the model ran without negatives (data stage not attached): every slot is a placeholder,
            # the loss is plain CLIP, and the no-negatives check below stops the run after a while
            neg_text_features = text_features.detach().new_zeros((text_features.shape[0], k, text_features.shape[-1]))
            neg_mask = torch.zeros((text_features.shape[0], k), dtype=torch.bool, device=text_features.device)
        if neg_text_features.dim() != 3 or neg_text_features.shape[1] != k:
            raise ValueError(
                f"neg_text_features must be [B, {k}, D] for types {self.neg_types}, got {tuple(neg_text_features.shape)}"
            )
        if self.accum_freq > 1 and logit_scale.requires_grad:
            # A gradient-accumulating trainer (open_clip) calls the loss accum_freq times per step, each
            # time on the whole accumulated batch with a fresh logit_scale: the features of one chunk
            # carry gradient per call, but logit_scale would collect the full-batch gradient every
            # call. Keep the value, divide its gradient so the step gets the full-batch gradient.
            logit_scale = logit_scale.detach() + (logit_scale - logit_scale.detach()) / self.accum_freq
        device_type = image_features.device.type

        def up(t):  # at least fp32 (a float64 model keeps float64)
            return t.to(torch.promote_types(t.dtype, torch.float32))

        with torch.autocast(device_type=device_type, enabled=False):
            losses = self._forward_fp32(
                up(image_features), up(text_features), up(logit_scale), up(neg_text_features), neg_mask.bool(),
                None if logit_bias is None else up(logit_bias),
            )
        if self.training:
            self._keep_loss_terms(losses)
            if not torch.compiler.is_compiling() and self._trainer_steps == 0:  # else end_optimizer_step counts
                self._count_eager_call()
        return losses if output_dict else sum(losses.values())

    @torch.no_grad()
    def _keep_loss_terms(self, losses: Dict[str, torch.Tensor]) -> None:
        """Device ops only (no host read): the record of :meth:`loss_terms` and :meth:`optimizer_steps`."""
        zero = self.last_losses.new_zeros(())
        self.last_losses.copy_(torch.stack([losses.get(k, zero).detach().float() for k in LOSS_TERMS]))
        # the first step of a non-finite loss; where the trainer skips such steps, of the current run of them
        bad = ~torch.isfinite(self.last_losses.sum())
        first = torch.where(self.nonfinite_step > 0, self.nonfinite_step, self.train_calls // self.accum_freq + 1)
        kept = torch.zeros_like(self.nonfinite_step) if self.nonfinite_skipped else self.nonfinite_step
        self.nonfinite_step.copy_(torch.where(bad, first, kept))
        self.train_calls.add_(1)

    def _forward_fp32(self, img, txt, scale, neg, mask, bias) -> Dict[str, torch.Tensor]:
        b = img.shape[0]
        all_img = self._gather(img)
        all_txt = self._gather(txt)
        all_mask = self._gather(mask.to(torch.uint8), differentiable=False).bool()
        need_all_neg = self.use_itc_negatives and self.itc_negatives == "global"
        all_neg = self._gather(neg) if need_all_neg else None

        if self.local_loss or self.world_size <= 1:
            rows_img, rows_txt, rows_neg, rows_mask = img, txt, neg, mask
            offset = b * self.rank if self.world_size > 1 else 0
        else:
            rows_img, rows_txt = all_img, all_txt
            rows_neg = self._gather(neg) if all_neg is None else all_neg
            rows_mask = all_mask
            offset = 0
        # per-rank values are averaged by DDP; scale sample-level sums so the average is the global mean
        rank_factor = float(self.world_size) if (self.local_loss and self.world_size > 1) else 1.0

        # ---- ITC(hn)
        logits_per_image = scale * rows_img @ all_txt.T
        logits_per_text = scale * rows_txt @ all_img.T
        if bias is not None:
            logits_per_image = logits_per_image + bias
            logits_per_text = logits_per_text + bias
        if self.use_itc_negatives:
            if self.itc_negatives == "global":
                # every negative of the global batch is a column; placeholders are masked to -inf
                # (masking instead of boolean indexing keeps shapes static: no host sync per step)
                cols = all_neg.reshape(-1, all_neg.shape[-1])
                extra = (scale * rows_img @ cols.T).masked_fill(~all_mask.reshape(1, -1), float("-inf"))
            else:  # own
                extra = (scale * torch.einsum("rd,rkd->rk", rows_img, rows_neg)).masked_fill(~rows_mask, float("-inf"))
            if bias is not None:
                extra = extra + bias
            logits_per_image = torch.cat([logits_per_image, extra], dim=1)
        labels = torch.arange(rows_img.shape[0], device=img.device) + offset
        itc = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
        losses = {"contrastive_loss": itc}
        with torch.no_grad():  # ITC with every logit equal: the mean log of each row's column count
            chance = (torch.isfinite(logits_per_image).sum(1).float().log().mean() + math.log(all_img.shape[0])) / 2
            at_chance = (itc.detach() - chance).abs() <= CHANCE_TOLERANCE * chance

        # ---- per-sample similarities shared by IMC, CMR and the threshold statistics
        pos = scale * (rows_img * rows_txt).sum(-1)                          # S(I, T)      [R]
        ik = scale * torch.einsum("rd,rkd->rk", rows_img, rows_neg)          # S(I, T_k)    [R, K]

        losses.update(self._imc_and_cmr(scale, pos, ik, rows_txt, rows_neg, rows_mask, rank_factor,
                                        all_mask.any(1).sum(), all_mask.sum()))

        # ---- thresholds for the next optimizer step, from this step's (whole accumulated) batch
        if self.training:
            signal = torch.stack([itc.detach().float(), chance.float()])  # summed over ranks: the schedule's progress
            if self.local_loss or self.world_size <= 1:
                stats, signal = self._step_statistics(pos, ik, rows_mask, signal)
            else:  # rows already hold the global batch: compute local slice, reduce across ranks
                sl = slice(self.rank * b, (self.rank + 1) * b)
                stats, signal = self._step_statistics(pos[sl], ik[sl], rows_mask[sl], signal)
            self._advance_schedule(signal[0], signal[1])
            self._end_of_call(stats, at_chance)

        if self.sync_values:  # every rank reports the global value; the gradient stays its own rows'
            local = torch.stack([v.detach() for v in losses.values()])
            mean = all_reduce_sum(local, self.world_size) / self.world_size
            losses = {k: v + (m - v.detach()) for (k, v), m in zip(losses.items(), mean)}
        return losses


def _split_reduced(flat: torch.Tensor, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``flat`` = reduced ``[like.flatten(), extra]``: ``(the part shaped as like, the extra part)``."""
    return flat[:like.numel()].view_as(like), flat[like.numel():]
