#!/usr/bin/env python
"""Cost of the CE-CLIP and CE-SigLIP losses relative to open_clip's ClipLoss and SigLipLoss, same features, one run.

    python scripts/benchmarks/bench_loss.py --batch 256 --dim 512 --device cpu

Prints forward+backward time per call for ClipLoss, CE-CLIP (each ITC-negatives mode), SigLipLoss and
CE-SigLIP (each mode), with CE-SigLIP's ratio to CE-CLIP in the same mode (the speed goal: within 5%),
and CE-CLIP / CE-SigLIP ``global`` with the CE terms' schedule on (``--ce-schedule gate``, gate open and
ramping) against the same loss without it.
Variants are timed in alternation (``--rounds``), and each one's best round is kept, so that a
shared machine's load falls on all of them alike.
"""

import argparse
import time

import torch
import torch.nn.functional as F


def timed(fn, iters, device, clock=time.perf_counter):
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = clock()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (clock() - t0) / iters


def main():
    import open_clip
    from open_clip.loss import SigLipLoss

    from openclip_ce.training.loss import CeClipLoss
    from openclip_ce.training.schedule import TermSchedule
    from openclip_ce.training.siglip_loss import CeSigLipLoss

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--valid", type=float, default=0.8, help="share of valid (non-placeholder) negatives")
    p.add_argument("--iters", type=int, default=20, help="calls per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every variant in turn; the best is kept")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--clock", choices=("wall", "cpu"), default=None,
                   help="wall clock or this process's CPU time (default: cpu on CPU, so that a shared machine's "
                        "other work does not count; wall on CUDA)")
    a = p.parse_args()
    dev = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    a.clock = a.clock or ("cpu" if dev.type == "cpu" else "wall")
    if a.clock == "cpu" and dev.type != "cpu":
        p.error("--clock cpu measures CPU work only: use --clock wall with --device cuda")
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    g = torch.Generator(device="cpu").manual_seed(0)
    img = F.normalize(torch.randn(a.batch, a.dim, generator=g), dim=-1).to(dev).requires_grad_()
    txt = F.normalize(torch.randn(a.batch, a.dim, generator=g), dim=-1).to(dev).requires_grad_()
    neg = F.normalize(torch.randn(a.batch, 4, a.dim, generator=g), dim=-1).to(dev).requires_grad_()
    mask = (torch.rand(a.batch, 4, generator=g) < a.valid).to(dev)
    scale = torch.tensor(100.0, device=dev)

    bias = torch.tensor(-10.0, device=dev)
    clip, siglip = open_clip.ClipLoss(), SigLipLoss()
    variants = {
        "ClipLoss": lambda: clip(img, txt, scale).backward(),
        "SigLipLoss": lambda: siglip(img, txt, scale, bias).backward(),
    }
    for mode in ("global", "own"):
        ce, ces = CeClipLoss(itc_negatives=mode).to(dev), CeSigLipLoss(itc_negatives=mode).to(dev)
        variants[f"CeClipLoss {mode}"] = lambda ce=ce: ce(img, txt, scale, neg, mask).backward()
        variants[f"CeSigLipLoss {mode}"] = lambda ces=ces: ces(img, txt, scale, neg, mask, logit_bias=bias).backward()
    for name, cls, extra in (("CeClipLoss", CeClipLoss, {}), ("CeSigLipLoss", CeSigLipLoss, {"logit_bias": bias})):
        # the gate opens after one step and ramps over 10**6 steps: every timed call is a ramping one
        gated = cls(schedule=TermSchedule(enabled=True, fraction=100.0, patience=1, ramp=10 ** 6)).to(dev)
        variants[f"{name} global+gate"] = lambda g=gated, e=extra: g(img, txt, scale, neg, mask, **e).backward()
    best = {name: float("inf") for name in variants}
    for _ in range(a.rounds):
        for name, fn in variants.items():
            best[name] = min(best[name], timed(fn, a.iters, dev, clock))
    print(f"device={dev} batch={a.batch} dim={a.dim} valid={a.valid} threads={torch.get_num_threads()} "
          f"clock={'process CPU time' if a.clock == 'cpu' else 'wall'}")
    for name, t in best.items():
        ref = "ClipLoss" if name.startswith("CeClip") else "SigLipLoss" if name.startswith("CeSig") else None
        line = f"{name:<24} {t * 1e3:8.2f} ms / call (forward+backward)"
        if ref:
            line += f"   ratio to {ref} {t / best[ref]:5.2f}x"
        if name.endswith("+gate"):
            base = name.replace("+gate", "")
            line += f"   ratio to {base} (no schedule) {t / best[base]:5.2f}x"
        elif name.startswith("CeSigLipLoss"):
            line += f"   ratio to CeClipLoss {name.split()[1]} {t / best['CeClipLoss ' + name.split()[1]]:5.2f}x"
        print(line)


if __name__ == "__main__":
    main()
