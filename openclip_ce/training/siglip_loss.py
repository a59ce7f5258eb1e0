"""CE-SigLIP: the CE-CLIP objective for sigmoid training (``--loss ce_clip --siglip``).

Same inputs as :class:`~openclip_ce.training.loss.CeClipLoss` plus the model's ``logit_bias``, with
SigLIP's scores ``S = logit_scale * cosine + logit_bias``:

* ITC(hn): SigLIP's pairwise sigmoid loss, ``-log sigmoid(z * S(I, T))`` with ``z = +1`` for the
  matching pair and ``-1`` for every other image-text pair of the global batch, plus every valid hard
  negative as one more negative pair (``z = -1``): for every image of the global batch
  (``itc_negatives="global"``) or for its own image only (``"own"``). Placeholders take no part. The sum
  over all pairs is divided by the number of images, as open_clip's ``SigLipLoss`` normalises.
* IMC: per sample, softmax cross-entropy over ``[S(I,T), S(T,T_k) for valid k]``, target the positive,
  as in CE-CLIP. ``logit_bias`` is added to every entry, so it cancels: IMC is CE-CLIP's IMC at the
  model's logit scale, a relative constraint that leaves SigLIP's calibration (the bias) to ITC. (The
  sigmoid analogue, ``-log sigmoid(S(I,T)) - sum_k log sigmoid(-S(T,T_k))``, would ask text-text
  similarities to fall below the cut that the bias learns for image-text pairs, a different scale,
  and would no longer compare the positive with its negatives.)
* CMR and the adaptive thresholds: as in CE-CLIP, on these scores (the bias cancels in every
  difference ``S(I,T_k) - S(I,T)``).

``L = ITC(hn) + alpha * IMC + beta * CMR``, returned as the same three weighted terms as CE-CLIP.

Distributed, as ``SigLipLoss`` with its four ``--loss-dist-impl`` patterns (``bidir``, default;
``shift``; ``reduce``; ``gather``), with one change: the *image* features travel, not the texts.
Every pair (image, text or negative) is computed once, on the rank that holds the text and its
negatives, after the images of every other rank reached it. The sum over pairs is the same as
SigLIP's (its pairs are symmetric in the two modalities), the hard negatives never leave their rank,
and each hop carries ``[B, D]``, as SigLIP's does, instead of ``[B, 1 + K, D]`` texts with their
negatives and masks. Each rank divides its pairs by its local number of images (as ``SigLipLoss``);
IMC and CMR are divided by global counts (one all-reduce of a few numbers, shared with the
thresholds' statistics) and multiplied by the world size. After DDP's gradient averaging, N ranks
give the single-process loss (averaged over ranks) and gradients of the same global batch, for the
features, ``logit_scale`` and ``logit_bias`` alike. ``--local-loss`` and ``--gather-with-grad`` do not
apply, as for ``SigLipLoss``.
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .gather import (AllGatherWithGrad, AllReduceSumWithGrad, NeighbourExchangeBidirWithGrad,
                     NeighbourExchangeWithGrad, all_reduce_sum)
from .loss import (CHANCE_TOLERANCE, DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_THRESHOLD_MAX, NO_NEGATIVES_STEPS, CeClipLoss,
                   _split_reduced)
from .schedule import TermSchedule, sigmoid_chance

SIGLIP_DIST_IMPLS = ("bidir", "shift", "reduce", "gather")


class CeSigLipLoss(CeClipLoss):
    """CE-SigLIP loss: sigmoid ITC with hard negatives + alpha * IMC + beta * CMR (adaptive thresholds).

    State, metrics, ``--accum-freq`` handling and the no-negatives check are CE-CLIP's
    (:class:`CeClipLoss`); only the objective's computation and its distribution differ.
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
        rank: int = 0,
        world_size: int = 1,
        accum_freq: int = 1,
        no_negatives_steps: Optional[int] = NO_NEGATIVES_STEPS,
        schedule: Optional[TermSchedule] = None,
        imc_detach_positive: bool = False,
        dist_impl: Optional[str] = None,
    ):
        super().__init__(
            neg_types=neg_types, alpha=alpha, beta=beta, threshold_max=threshold_max,
            fixed_threshold=fixed_threshold, itc_negatives=itc_negatives, use_itc_negatives=use_itc_negatives,
            use_imc=use_imc, use_cmr=use_cmr, rank=rank, world_size=world_size, accum_freq=accum_freq,
            no_negatives_steps=no_negatives_steps, schedule=schedule, imc_detach_positive=imc_detach_positive,
        )
        self.dist_impl = dist_impl or "bidir"  # open_clip's SigLipLoss default
        if self.dist_impl not in SIGLIP_DIST_IMPLS:
            raise ValueError(f"dist_impl must be one of {SIGLIP_DIST_IMPLS}, got {dist_impl!r}")

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
        if logit_bias is None:
            raise ValueError("CE-SigLIP needs the model's logit_bias (open_clip adds it with --siglip)")
        if self.accum_freq > 1 and logit_bias.requires_grad:
            # as CeClipLoss does for logit_scale: each of the accum_freq calls of a step sees the whole
            # accumulated batch, so the bias would collect the full-batch gradient accum_freq times
            logit_bias = logit_bias.detach() + (logit_bias - logit_bias.detach()) / self.accum_freq
        return super().forward(image_features, text_features, logit_scale, neg_text_features, neg_mask,
                               logit_bias, output_dict)

    # ------------------------------------------------------------------ distribution
    def _other_images(self, img: torch.Tensor) -> Iterator[torch.Tensor]:
        """The image features of every other rank, in blocks, with gradient back to their rank.

        Every rank yields blocks from the same sequence of collectives, so that the backward runs
        them in the same order everywhere."""
        w, r = self.world_size, self.rank
        if w <= 1:
            return
        left, right = (r - 1) % w, (r + 1) % w
        if self.dist_impl == "bidir":
            to_left = to_right = img
            n_bidir, remainder = divmod(w - 1, 2)
            for _ in range(n_bidir):
                from_right, from_left = NeighbourExchangeBidirWithGrad.apply(left, right, to_left, to_right)
                yield from_right
                yield from_left
                to_left, to_right = from_right, from_left
            if remainder:
                yield NeighbourExchangeWithGrad.apply(left, right, to_right)
        elif self.dist_impl == "shift":
            block = img
            for _ in range(w - 1):
                block = NeighbourExchangeWithGrad.apply(left, right, block)
                yield block
        elif self.dist_impl == "reduce":
            for i in range(w):
                block = AllReduceSumWithGrad.apply(img * float(i == r))
                # this rank's own block still enters the graph, so that every rank runs every
                # backward all-reduce (as SigLipLoss multiplies its loss by 0)
                yield block if i != r else block[:0]
        else:  # gather
            b = img.shape[0]
            every = AllGatherWithGrad.apply(img, r, w)
            yield torch.cat([every[:r * b], every[(r + 1) * b:]])

    @torch.no_grad()
    def _global_counts(self, pos: torch.Tensor, ik: torch.Tensor, mask: torch.Tensor,
                       extra: Optional[torch.Tensor] = None) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """``[4, K]``, summed over ranks: the threshold statistics ``[gap sum, valid count, sample count]``
        of :meth:`CeClipLoss._step_statistics` and, in the last row, the samples with a valid negative.
        With ``extra`` (a few numbers: the schedule's signal), ``(counts, extra summed over ranks)``,
        from the same all-reduce."""
        gaps = (pos[:, None] - ik).masked_fill(~mask, 0.0)
        stats = torch.stack([
            gaps.sum(0),
            mask.sum(0).to(gaps.dtype),
            torch.full_like(gaps[0], float(mask.shape[0])),
            mask.any(1).sum().to(gaps.dtype).expand_as(gaps[0]),
        ])
        if extra is None:
            return all_reduce_sum(stats, self.world_size)
        return _split_reduced(all_reduce_sum(torch.cat([stats.flatten(), extra.to(stats.dtype)]), self.world_size),
                              stats)

    def _chance_signal(self, itc: torch.Tensor, mask: torch.Tensor, global_negs: bool) -> torch.Tensor:
        """This rank's ``[ITC, chance]`` share for the schedule (:func:`.schedule.sigmoid_chance`: the
        sigmoid loss of an image whose every score is the same, over its text columns): with ``own``
        negatives each image has its own count; otherwise the chance is set from global counts afterwards."""
        own = self.use_itc_negatives and not global_negs
        texts = float(mask.shape[0] * self.world_size)  # every rank holds as many samples
        chance = sigmoid_chance(texts + mask.sum(1).float()).mean() if own else itc.new_zeros((), dtype=torch.float32)
        return torch.stack([itc.detach().float(), chance.float()])

    # ------------------------------------------------------------------ objective
    def _forward_fp32(self, img, txt, scale, neg, mask, bias) -> Dict[str, torch.Tensor]:
        b, d = img.shape
        global_negs = self.use_itc_negatives and self.itc_negatives == "global"
        if global_negs:  # this rank's texts and hard negatives: the columns every image is paired with
            cols = torch.cat([txt, neg.reshape(-1, d)])
            col_weight = torch.cat([mask.new_ones(b), mask.reshape(-1)]).to(img.dtype)
        else:
            cols, col_weight = txt, None

        def pair_sum(images: torch.Tensor, local: bool) -> torch.Tensor:
            """sum of -log sigmoid(z * S) over (images x columns); z = +1 on the local diagonal only."""
            logits = scale * images @ cols.T + bias
            if local:  # -log sigmoid(S) = softplus(-S) for the positives, softplus(S) for the rest
                logits.diagonal().neg_()  # in place: O(B), where a sign matrix would cost O(B x columns)
            per_col = F.softplus(logits).sum(0)
            return per_col.sum() if col_weight is None else per_col @ col_weight

        # ---- per-sample similarities shared by ITC (own), IMC, CMR and the threshold statistics
        pos = scale * (img * txt).sum(-1)                                # S(I, T) - bias      [B]
        ik = scale * torch.einsum("bd,bkd->bk", img, neg)                # S(I, T_k) - bias    [B, K]

        # ---- ITC(hn): pairs of this rank's texts (and negatives) with the global batch's images
        itc = pair_sum(img, local=True)
        if self.use_itc_negatives and not global_negs:  # own: each image with its own valid negatives
            itc = itc + F.softplus(ik + bias).masked_fill(~mask, 0.0).sum()
        for block in self._other_images(img):
            itc = itc + (pair_sum(block, local=False) if block.shape[0] else block.sum() * 0.0)
        losses = {"contrastive_loss": itc / b}

        # ---- IMC and CMR: local samples, normalised by global counts (x world_size: DDP averages ranks)
        if self.training:  # the schedule's signal rides on the same all-reduce
            counts, signal = self._global_counts(pos, ik, mask, self._chance_signal(losses["contrastive_loss"], mask,
                                                                                   global_negs))
        else:
            counts = self._global_counts(pos, ik, mask)
        losses.update(self._imc_and_cmr(scale, pos, ik, txt, neg, mask, float(self.world_size), counts[3, 0],
                                        counts[1].sum()))

        if self.training:
            with torch.no_grad():  # collapse: every image-text score of the local block the same
                local = scale * img @ txt.T
                at_chance = local.max() - local.min() <= CHANCE_TOLERANCE * scale.abs()
                if self.use_itc_negatives and global_negs:  # n = every text and valid negative of the global batch
                    chance = sigmoid_chance(counts[2, 0].float() + counts[1].sum().float()) * self.world_size
                elif not self.use_itc_negatives:
                    chance = sigmoid_chance(counts[2, 0].float()) * self.world_size
                else:
                    chance = signal[1]
            self._advance_schedule(signal[0], chance)
            self._end_of_call(counts[:3], at_chance)
        return losses
