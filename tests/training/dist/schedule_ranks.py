"""Run with ``torchrun --nproc_per_node 2``: the CE terms' schedule decides on the global batch, on every rank.

Each rank holds half of one global batch whose halves differ: rank 0's images and captions are aligned
(its own contrastive loss is far below chance), rank 1's are random. The gate's fraction lies between
the whole batch's progress and that of the half farther from it, so a rank that used its own loss
would decide otherwise than the whole batch does. For CE-CLIP (default mode, --local-loss --gather-with-grad, own negatives, --accum-freq 2)
and CE-SigLIP (bidir, own), every rank writes its schedule state after each step and the single-process
reference on the whole batch, to $OUT_DIR/rank<r>.jsonl.
"""

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from loss_equivalence import write_lines  # the script's folder is on sys.path
from openclip_ce.training.loss import CeClipLoss
from openclip_ce.training.schedule import TermSchedule
from openclip_ce.training.siglip_loss import CeSigLipLoss

TYPES = ("rel", "att", "act", "obj")
STEPS = 6


def batch(world, b=6, k=4, d=16):
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(world * b, d, generator=g), dim=-1)
    txt = F.normalize(torch.randn(world * b, d, generator=g), dim=-1)
    txt[:b] = F.normalize(img[:b] + 0.05 * torch.randn(b, d, generator=g), dim=-1)  # rank 0's half: aligned
    neg = F.normalize(torch.randn(world * b, k, d, generator=g), dim=-1)
    mask = torch.rand(world * b, k, generator=g) < 0.7
    return img, txt, neg, mask, b


def make(kind, fraction, rank=0, world=1, **kw):
    schedule = TermSchedule(enabled=True, fraction=fraction, patience=2, ramp=3)
    if kind == "siglip":
        return CeSigLipLoss(TYPES, schedule=schedule, rank=rank, world_size=world, **kw)
    return CeClipLoss(TYPES, schedule=schedule, rank=rank, world_size=world, **kw)


def steps(loss, kind, img, txt, neg, mask, accum=1):
    extra = {"logit_bias": torch.tensor(-2.0)} if kind == "siglip" else {}
    states = []
    for _ in range(STEPS):
        for _ in range(accum):
            loss(img, txt, torch.tensor(10.0), neg, mask, output_dict=True, **extra)
        states.append({**loss.schedule.state(), **loss.schedule_metrics()})
    return states


def own_progress(kind, img, txt, neg, mask, **kw):
    loss = make(kind, 1.0, **kw)
    steps(loss, kind, img, txt, neg, mask)
    return loss.schedule.state()["progress"]


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    img, txt, neg, mask, b = batch(world)
    sl = slice(rank * b, (rank + 1) * b)
    cases = [("clip", {}, 1), ("clip", dict(local_loss=True, gather_with_grad=True), 1),
             ("clip", dict(itc_negatives="own"), 1), ("clip", {}, 2), ("siglip", {}, 1),
             ("siglip", dict(itc_negatives="own"), 1)]
    lines = []
    for kind, kw, accum in cases:
        opts = {**kw, "accum_freq": accum} if accum > 1 else dict(kw)
        mode = {k: v for k, v in kw.items() if k == "itc_negatives"}
        halves = [own_progress(kind, img[s], txt[s], neg[s], mask[s], **mode)
                  for s in (slice(0, b), slice(b, 2 * b))]
        whole = own_progress(kind, img, txt, neg, mask, **mode)
        # between the whole batch's progress and the farther half's: one rank's own loss decides otherwise
        fraction = (whole + max(halves)) / 2
        reference = steps(make(kind, fraction, **mode), kind, img, txt, neg, mask)
        got = steps(make(kind, fraction, rank, world, **opts), kind, img[sl], txt[sl], neg[sl], mask[sl], accum)
        lines.append({"kind": kind, "options": opts, "halves": halves, "whole": whole, "fraction": fraction,
                      "reference": reference, "this_rank": got})
    write_lines(rank, lines)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
