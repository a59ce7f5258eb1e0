#!/usr/bin/env python
"""Training-step throughput of CE-SigLIP relative to CE-CLIP (and SigLIP to CLIP), same weights and batches.

    python scripts/bench_siglip_step.py --threads 1                  # CPU: the small model, batch 32
    python scripts/bench_siglip_step.py --model ViT-B-32 --batch-size 256 --precision bf16 --device cuda

Built from ``scripts/bench_train_step.py``'s model, synthetic batches and step (forward, loss, backward,
AdamW), with trimming on (the default). The SigLIP models are the same weights plus ``logit_bias``,
as open_clip's main builds them with ``--siglip`` (``init_logit_bias=-10``, ``init_logit_scale=log 10``);
their forward's output dict carries the bias to the loss. Variants take turns step by step; the
goal for CE-SigLIP is a step time within 5% of CE-CLIP's.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train_step as bts  # noqa: E402


def main(argv=None) -> int:
    import open_clip
    from open_clip.loss import SigLipLoss

    from openclip_ce.training.adapter import adapt_model
    from openclip_ce.training.loss import CeClipLoss
    from openclip_ce.training.siglip_loss import CeSigLipLoss

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small", help="as bench_train_step.py's --model (default: its small model)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default: 8 on CPU, 20 on CUDA)")
    p.add_argument("--precision", default=None, help="as open_clip's --precision (default: fp32 on CPU, amp on CUDA)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--valid", type=float, default=0.8, help="probability that a negative is valid")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--ce-only", action="store_true", help="time the two CE variants only")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    cpu = device.type == "cpu"
    if a.threads:
        torch.set_num_threads(a.threads)
    a.precision = a.precision or ("fp32" if cpu else "amp")
    a.steps = a.steps or (8 if cpu else 20)
    clock = time.process_time if cpu else time.perf_counter

    base = bts.build(a, device)
    torch.manual_seed(a.seed)
    sig = copy.deepcopy(base)
    # what create_model(..., init_logit_scale=log(10), init_logit_bias=-10) gives, on the same weights
    sig.logit_bias = torch.nn.Parameter(torch.full_like(base.logit_scale, -10.0))
    with torch.no_grad():
        sig.logit_scale.fill_(math.log(10))
    image_size = base.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    batches = [(i.to(device), t.to(device)) for i, t in bts.make_batches(
        min(a.steps + 1, 8), a.batch_size, base.context_length, base.vocab_size, a.valid, image_size, a.seed)]

    def adapted(m):
        m = copy.deepcopy(m)
        adapt_model(m, trim=True)
        return m

    clip_loss, sig_loss = open_clip.ClipLoss(), SigLipLoss()
    positives = lambda m, i, t: m(i, t[:, 0])  # noqa: E731
    both = lambda m, i, t: m(i, t)  # noqa: E731
    variants = [
        bts.Variant("CE-CLIP trimmed", adapted(base), CeClipLoss().to(device), both, a.precision, device),
        bts.Variant("CE-SigLIP trimmed", adapted(sig), CeSigLipLoss().to(device), both, a.precision, device),
    ]
    if not a.ce_only:
        variants = [
            bts.Variant("plain CLIP", copy.deepcopy(base), lambda **kw: {"c": clip_loss(
                kw["image_features"], kw["text_features"], kw["logit_scale"])}, positives, a.precision, device),
            bts.Variant("plain SigLIP", copy.deepcopy(sig), lambda **kw: {"c": sig_loss(
                kw["image_features"], kw["text_features"], kw["logit_scale"], kw["logit_bias"])}, positives,
                a.precision, device),
        ] + variants
    print(f"device={device} model={a.model} precision={a.precision} batch={a.batch_size} steps={a.steps} (+1 warm-up) "
          f"clock={'process CPU time' if cpu else 'wall'} threads={torch.get_num_threads()}")
    for s in range(a.steps + 1):
        images, tokens = batches[s % len(batches)]
        for v in variants:
            bts.sync(device)
            t0 = clock()
            v.step(images, tokens)
            bts.sync(device)
            if s:
                v.times.append(clock() - t0)
    for v in variants:
        med = statistics.median(v.times)
        print(f"{v.name:<20} {a.batch_size / med:9.2f} images/s {1e3 * med:9.1f} ms/step (median)")
    ce, ces = (statistics.median(v.times) for v in variants[-2:])
    print(f"CE-SigLIP step time / CE-CLIP step time: {ces / ce:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
