"""Run with ``torchrun --nproc_per_node W``: CE-CLIP loss on W ranks vs one process, same global batch.

Every rank builds the same global batch and a tiny encoder (so that gradients reach parameters),
computes the single-process reference on its own (world_size=1, no collectives), then the
distributed loss on its slice of the batch, averages gradients as DDP does, and compares.
Writes one JSON line per mode to $OUT_DIR/rank<r>.jsonl.
"""

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from openclip_ce.training.loss import CeClipLoss

TYPES = ("rel", "att", "act", "obj")


def build(seed=0, n=8, k=4, d_in=12, d=6):
    g = torch.Generator().manual_seed(seed)
    x_img = torch.randn(n, d_in, generator=g)
    x_txt = torch.randn(n, d_in, generator=g)
    x_neg = torch.randn(n, k, d_in, generator=g)
    mask = torch.rand(n, k, generator=g) < 0.6
    mask[:, 2] = False  # one type never valid
    mask[0] = False     # one sample without any negative
    torch.manual_seed(seed + 1)
    enc_img = torch.nn.Linear(d_in, d)
    enc_txt = torch.nn.Linear(d_in, d)
    return x_img, x_txt, x_neg, mask, enc_img, enc_txt


def run_loss(loss, enc_img, enc_txt, x_img, x_txt, x_neg, mask, scale):
    """``scale`` is the float logit scale; it enters as exp(a leaf), as open_clip's model passes it,
    so that its gradient is compared too (the last entry of the gradient vector)."""
    log_scale = torch.tensor(float(scale)).log().requires_grad_(True)
    img = F.normalize(enc_img(x_img), dim=-1)
    txt = F.normalize(enc_txt(x_txt), dim=-1)
    neg = F.normalize(enc_txt(x_neg), dim=-1)
    out = loss(img, txt, log_scale.exp(), neg, mask, output_dict=True)
    total = sum(out.values())
    total.backward()
    grads = torch.cat([p.grad.flatten() for p in (*enc_img.parameters(), *enc_txt.parameters())] + [log_scale.grad[None]])
    return {k: float(v) for k, v in out.items()}, float(total), grads


def no_negatives_guard(rank, world, scale):
    """The no-negatives check is global: a valid negative on rank 0 only keeps every rank going;
    none anywhere stops every rank at the same step."""
    from openclip_ce.training.loss import NoNegativesError

    x_img, x_txt, x_neg, mask, enc_img, enc_txt = build()
    b = x_img.shape[0] // world
    sl = slice(rank * b, (rank + 1) * b)
    out = {"mode": "no_negatives_guard"}
    for case, local_mask in (("rank0_only", mask[sl] & (rank == 0)), ("none", torch.zeros_like(mask[sl]))):
        loss = CeClipLoss(TYPES, rank=rank, world_size=world, no_negatives_steps=3)
        stopped_at = None
        for step in range(1, 6):
            try:
                run_loss(loss, enc_img, enc_txt, x_img[sl], x_txt[sl], x_neg[sl], local_mask, scale)
            except NoNegativesError:
                stopped_at = step
                break
        out[case] = stopped_at
    return out


def nonfinite_guard(rank, world, scale):
    """A loss that is NaN on rank 1 only (CE-SigLIP: each rank's texts stay on their rank) at step 2: every
    rank stops at the same check step (steps 1, 4, ... with a check every 3), naming step 2; where the trainer
    skips non-finite steps (fp16 GradScaler) a NaN that did not last until the check stops nobody."""
    from openclip_ce.training.loss import NonFiniteLossError
    from openclip_ce.training.siglip_loss import CeSigLipLoss

    x_img, x_txt, x_neg, mask, enc_img, enc_txt = build()
    b = x_img.shape[0] // world
    sl = slice(rank * b, (rank + 1) * b)
    out = {"mode": "nonfinite_guard"}
    for case, skipped in (("sticky", False), ("skipped", True)):
        loss = CeSigLipLoss(TYPES, rank=rank, world_size=world)
        loss.watch_finite(3, skipped_steps=skipped)
        stopped = None
        for step in range(1, 6):
            txt = x_txt[sl].clone()
            if step == 2 and rank == 1:
                txt[0, 0] = float("nan")
            log_scale = torch.tensor(float(scale)).log()
            img = F.normalize(enc_img(x_img[sl]), dim=-1)
            t = F.normalize(enc_txt(txt), dim=-1)
            neg = F.normalize(enc_txt(x_neg[sl]), dim=-1)
            try:
                loss(img, t, log_scale.exp(), neg, mask[sl], logit_bias=torch.tensor(-5.0), output_dict=True)
            except NonFiniteLossError as e:
                stopped = [step, "since optimizer step 2; stopped at step 4" in str(e), int(loss.nonfinite_step)]
                break
        out[case] = stopped
        out[case + "_thresholds_finite"] = bool(torch.isfinite(loss.thresholds).all())
    return out


def frozen_rank(rank):
    """--ce-dist-timeout (through the plugin's create_loss): rank 1 stops responding (sleeps past the timeout);
    rank 0's next collective fails after the timeout instead of torch's default 30 minutes (gloo)."""
    import argparse
    import time

    from openclip_ce.negatives import NEG_TYPES
    from openclip_ce.training.plugin import plugin

    args = argparse.Namespace(
        ce_neg_types=NEG_TYPES, ce_alpha=0.2, ce_beta=0.4, ce_threshold_max=10.0, ce_fixed_threshold=None,
        ce_itc_negatives="global", ce_no_itc_negatives=False, ce_no_imc=False, ce_no_cmr=False, local_loss=False,
        gather_with_grad=False, rank=rank, world_size=dist.get_world_size(), accum_freq=1,
        ce_allow_no_negatives=False, device="cpu", siglip=False, ce_dist_timeout=0.04)  # 2.4 s
    plugin.create_loss(args)
    t = torch.ones(1)
    dist.all_reduce(t)  # both ranks answer
    out = {"mode": "frozen_rank", "raised": None}
    start = time.monotonic()
    if rank == 1:
        time.sleep(8)  # frozen
    else:
        try:
            dist.all_reduce(t)
        except RuntimeError as e:
            out["raised"] = [round(time.monotonic() - start, 1), "Timed out" in str(e)]
    return out


def write_lines(rank, lines, mode="w"):
    """This rank's results: one JSON line each, in $OUT_DIR/rank<r>.jsonl (read back by the test)."""
    with open(os.path.join(os.environ["OUT_DIR"], f"rank{rank}.jsonl"), mode) as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    scale = torch.tensor(12.0)
    modes = [
        dict(gather_with_grad=False, local_loss=False, itc_negatives="global"),
        dict(gather_with_grad=True, local_loss=False, itc_negatives="global"),
        dict(gather_with_grad=True, local_loss=True, itc_negatives="global"),
        dict(gather_with_grad=True, local_loss=True, itc_negatives="own"),
        dict(gather_with_grad=False, local_loss=False, itc_negatives="own"),
        dict(gather_with_grad=False, local_loss=True, itc_negatives="global"),
    ]
    lines = []
    for mode in modes:
        x_img, x_txt, x_neg, mask, enc_img, enc_txt = build()
        ref_loss = CeClipLoss(TYPES, threshold_max=10.0, **{k: v for k, v in mode.items() if k == "itc_negatives"})
        ref_loss.load_threshold_dict({"rel": 0.3, "obj": 0.1})
        ref_terms, ref_total, ref_grads = run_loss(ref_loss, enc_img, enc_txt, x_img, x_txt, x_neg, mask, scale)

        x_img, x_txt, x_neg, mask, enc_img, enc_txt = build()
        b = x_img.shape[0] // world
        sl = slice(rank * b, (rank + 1) * b)
        loss = CeClipLoss(TYPES, threshold_max=10.0, rank=rank, world_size=world, **mode)
        loss.load_threshold_dict({"rel": 0.3, "obj": 0.1})
        terms, total, grads = run_loss(loss, enc_img, enc_txt, x_img[sl], x_txt[sl], x_neg[sl], mask[sl], scale)
        dist.all_reduce(grads)
        grads /= world  # DDP averages gradients over ranks
        t = torch.tensor([total])
        dist.all_reduce(t)
        gathered_th = [None] * world
        dist.all_gather_object(gathered_th, loss.threshold_dict())
        lines.append(dict(
            mode=mode,
            ref_total=ref_total, total_this_rank=total, total_rank_mean=float(t) / world,
            ref_terms=ref_terms, terms_this_rank=terms,
            grad_max_rel_err=float((grads - ref_grads).abs().max() / ref_grads.abs().max()),
            logit_scale_grad_rel_err=float((grads[-1] - ref_grads[-1]).abs() / ref_grads[-1].abs()),
            ref_thresholds=ref_loss.threshold_dict(), thresholds_all_ranks=gathered_th,
        ))
    lines.append(no_negatives_guard(rank, world, scale))
    lines.append(nonfinite_guard(rank, world, scale))
    write_lines(rank, lines)
    write_lines(rank, [frozen_rank(rank)], "a")  # last: the process group does not survive the timeout
    os._exit(0)  # so leave without tearing it down: gloo's timed-out group can abort the interpreter's exit


if __name__ == "__main__":
    sys.exit(main())
