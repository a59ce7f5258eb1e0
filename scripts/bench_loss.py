#!/usr/bin/env python
"""Cost of the CE-CLIP loss relative to open_clip's ClipLoss, on the same features, in one run.

    python scripts/bench_loss.py --batch 256 --dim 512 --device cpu

Prints forward+backward time per call for ClipLoss, CE-CLIP (each ITC-negatives mode), and the ratio.
"""

import argparse
import time

import torch
import torch.nn.functional as F


def timed(fn, iters, device):
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def main():
    import open_clip

    from openclip_ce.training.loss import CeClipLoss

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--valid", type=float, default=0.8, help="share of valid (non-placeholder) negatives")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    dev = torch.device(a.device)
    g = torch.Generator(device="cpu").manual_seed(0)
    img = F.normalize(torch.randn(a.batch, a.dim, generator=g), dim=-1).to(dev).requires_grad_()
    txt = F.normalize(torch.randn(a.batch, a.dim, generator=g), dim=-1).to(dev).requires_grad_()
    neg = F.normalize(torch.randn(a.batch, 4, a.dim, generator=g), dim=-1).to(dev).requires_grad_()
    mask = (torch.rand(a.batch, 4, generator=g) < a.valid).to(dev)
    scale = torch.tensor(100.0, device=dev)

    clip = open_clip.ClipLoss()
    base = timed(lambda: clip(img, txt, scale).backward(), a.iters, dev)
    print(f"device={dev} batch={a.batch} dim={a.dim} valid={a.valid}")
    print(f"ClipLoss                      {base * 1e3:8.2f} ms / call (forward+backward)")
    for mode in ("global", "own"):
        ce = CeClipLoss(itc_negatives=mode).to(dev)
        t = timed(lambda: ce(img, txt, scale, neg, mask).backward(), a.iters, dev)
        print(f"CeClipLoss itc_negatives={mode:<6} {t * 1e3:8.2f} ms / call   ratio to ClipLoss {t / base:5.2f}x")


if __name__ == "__main__":
    main()
