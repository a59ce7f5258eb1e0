"""Run with ``torchrun --nproc_per_node W``: CE-SigLIP on W ranks vs one process, same global batch.

For every ``--loss-dist-impl`` (bidir, shift, reduce, gather) and every ITC-negatives mode, each rank
builds the same global batch and a tiny encoder, computes the single-process reference itself
(world_size=1, no collectives), then the distributed loss on its slice, averages gradients as DDP
does, and compares loss, terms, gradients (encoder, logit_scale, logit_bias) and next thresholds.
Writes one JSON line per mode to $OUT_DIR/rank<r>.jsonl.
"""

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from loss_equivalence import build as build_batch, write_lines  # the script's folder is on sys.path
from openclip_ce.training.siglip_loss import SIGLIP_DIST_IMPLS, CeSigLipLoss

TYPES = ("rel", "att", "act", "obj")
START_THRESHOLDS = {"rel": 0.3, "obj": 0.1}


def build():
    """loss_equivalence's batch at 12 samples, with the last rank's slice (3 or 4 samples) nearly without
    negatives, so that the counts differ per rank."""
    x_img, x_txt, x_neg, mask, enc_img, enc_txt = build_batch(n=12)
    mask[-3:] = False
    mask[-1, 0] = True
    return x_img, x_txt, x_neg, mask, enc_img, enc_txt


def run_loss(loss, enc_img, enc_txt, x_img, x_txt, x_neg, mask):
    """logit_scale enters as exp(a leaf), the bias as a leaf, as open_clip's model passes them."""
    log_scale = torch.tensor(10.0).log().requires_grad_(True)
    bias = torch.tensor(-3.0, requires_grad=True)
    img = F.normalize(enc_img(x_img), dim=-1)
    txt = F.normalize(enc_txt(x_txt), dim=-1)
    neg = F.normalize(enc_txt(x_neg), dim=-1)
    out = loss(img, txt, log_scale.exp(), neg, mask, logit_bias=bias, output_dict=True)
    total = sum(out.values())
    total.backward()
    grads = torch.cat([p.grad.flatten() for p in (*enc_img.parameters(), *enc_txt.parameters())]
                      + [log_scale.grad[None], bias.grad[None]])
    return {k: float(v.detach()) for k, v in out.items()}, float(total.detach()), grads


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    lines = []
    for impl in SIGLIP_DIST_IMPLS:
        for itc in ("global", "own", "none"):
            kw = dict(itc_negatives="global" if itc == "none" else itc, use_itc_negatives=itc != "none")
            x_img, x_txt, x_neg, mask, enc_img, enc_txt = build()
            ref_loss = CeSigLipLoss(TYPES, **kw)
            ref_loss.load_threshold_dict(START_THRESHOLDS)
            ref_terms, ref_total, ref_grads = run_loss(ref_loss, enc_img, enc_txt, x_img, x_txt, x_neg, mask)

            x_img, x_txt, x_neg, mask, enc_img, enc_txt = build()
            b = x_img.shape[0] // world
            sl = slice(rank * b, (rank + 1) * b)
            loss = CeSigLipLoss(TYPES, rank=rank, world_size=world, dist_impl=impl, **kw)
            loss.load_threshold_dict(START_THRESHOLDS)
            terms, total, grads = run_loss(loss, enc_img, enc_txt, x_img[sl], x_txt[sl], x_neg[sl], mask[sl])
            dist.all_reduce(grads)
            grads /= world  # DDP averages gradients over ranks
            rank_mean = torch.tensor([total] + [terms[k] for k in sorted(terms)])
            dist.all_reduce(rank_mean)
            rank_mean /= world
            thresholds = [None] * world
            dist.all_gather_object(thresholds, loss.threshold_dict())
            rel = (grads - ref_grads).abs() / ref_grads.abs().max()
            lines.append(dict(
                impl=impl, itc=itc, world=world,
                ref_total=ref_total, total_rank_mean=float(rank_mean[0]),
                ref_terms=ref_terms, terms_rank_mean=dict(zip(sorted(terms), rank_mean[1:].tolist())),
                total_this_rank=total,
                grad_max_rel_err=float(rel.max()),
                logit_scale_grad=[float(grads[-2]), float(ref_grads[-2])],
                logit_bias_grad=[float(grads[-1]), float(ref_grads[-1])],
                ref_thresholds=ref_loss.threshold_dict(), thresholds_all_ranks=thresholds,
            ))
    write_lines(rank, lines)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
