#!/usr/bin/env python
"""Same batches, several precisions: where a from-scratch CE-CLIP run's features collapse, and why.

    python scripts/benchmarks/probe_collapse.py --out probe/ --steps 130 --batch-size 256 --lr 5e-4 --warmup 10
    python scripts/benchmarks/probe_collapse.py --model ViT-B-32 --device cuda --precisions fp32,amp_bf16 ...

Trains one randomly initialised model per (loss, precision) from the same initial weights on the
same sequence of batches (the toy world of :mod:`openclip_ce.testing.toy_shards`, drawn from a seeded
generator: unlike open_clip's webdataset loader, every run sees identical batches), with open_clip's
own step: autocast per ``--precision``, AdamW with open_clip's parameter groups, a cosine schedule
with warm-up, ``logit_scale`` clamped to ln 100 after each step. Records per step: every loss term,
the contrastive loss's chance value (all logits equal), the gradient norm of each tower and of
``logit_scale``, ``logit_scale`` itself, and how collapsed the features are (mean cosine between
different images' features, and between different captions'; 1 = one point). Writes ``probe.json``
and ``probe.png`` under ``--out``; prints, per run, the first step whose contrastive loss is within
1% of chance after the warm-up, if any.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import torch


def toy_batches(n, batch, tokenizer, preprocess, seed):
    """``n`` batches of the toy world: images, caption bundles' tokens ``[B, 1+K, L]``, drawn from ``seed``."""
    import io

    from PIL import Image

    from openclip_ce.testing.toy_shards import make_sample
    from openclip_ce.training.data import NegativesTokenizer

    tok = NegativesTokenizer(tokenizer)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        samples = [make_sample(rng) for _ in range(batch)]
        images = torch.stack([preprocess(Image.open(io.BytesIO(jpg)).convert("RGB")) for _, jpg, _ in samples])
        tokens = torch.stack([tok.tokenize_one(caption, negs) for caption, _, negs in samples])
        out.append((images, tokens))
    return out


def feature_spread(features):
    """Mean cosine between different rows (1.0: every row the same point)."""
    f = features.float()
    sim = f @ f.T
    n = f.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def grad_norm(params):
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def run(model0, batches, loss_name, precision, args, device):
    import open_clip
    from open_clip_train.precision import get_autocast
    from open_clip_train.scheduler import cosine_lr

    from openclip_ce.training.adapter import adapt_model
    from openclip_ce.training.loss import CeClipLoss
    from openclip_ce.training.packing import CAPACITY, layout_text_batch

    model = copy.deepcopy(model0).to(device)
    spec = adapt_model(model) if loss_name == "ce_clip" else None
    loss = CeClipLoss(alpha=args.ce_alpha, beta=args.ce_beta).to(device) if loss_name == "ce_clip" else open_clip.ClipLoss()
    named = list(model.named_parameters())
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    opt = torch.optim.AdamW([
        {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": args.wd},
    ], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    schedule = cosine_lr(opt, args.lr, args.warmup, len(batches))
    autocast = get_autocast(precision, device_type=device.type)
    visual = [p for n, p in named if n.startswith("visual.")]
    text = [p for n, p in named if not n.startswith("visual.") and n != "logit_scale"]
    CAPACITY.configure(None)
    log = []
    for step, (images, tokens) in enumerate(batches):
        schedule(step)
        images = images.to(device)
        text_in = layout_text_batch(tokens, spec).to(device) if loss_name == "ce_clip" else tokens[:, 0].to(device)
        opt.zero_grad(set_to_none=True)
        with autocast():
            out = model(images, text_in)
            if loss_name == "ce_clip":
                losses = loss(**out, output_dict=True)
            else:
                losses = {"contrastive_loss": loss(out["image_features"], out["text_features"], out["logit_scale"])}
            total = sum(losses.values())
        total.backward()
        row = {"step": step, "loss": float(total), **{k: float(v) for k, v in losses.items()},
               "grad_visual": grad_norm(visual), "grad_text": grad_norm(text),
               "grad_logit_scale": float(model.logit_scale.grad.abs()) if model.logit_scale.grad is not None else 0.0,
               "logit_scale": float(model.logit_scale.exp()),
               "image_spread": feature_spread(out["image_features"].detach()),
               "text_spread": feature_spread(out["text_features"].detach())}
        b = images.shape[0]
        cols = b + (int(out["neg_mask"].sum()) if loss_name == "ce_clip" else 0)
        row["chance"] = 0.5 * (math.log(cols) + math.log(b))
        if args.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        log.append(row)
        if step % args.print_every == 0 or step == len(batches) - 1:
            print(f"  [{loss_name} {precision}] step {step:4d} contrastive {row['contrastive_loss']:.4f} "
                  f"(chance {row['chance']:.4f}) imc {row.get('imc_loss', 0):.3f} grad v/t {row['grad_visual']:.3g}/"
                  f"{row['grad_text']:.3g} scale {row['logit_scale']:.1f} spread i/t {row['image_spread']:.3f}/"
                  f"{row['text_spread']:.3f}", flush=True)
    return log


def first_at_chance(log, warmup):
    for row in log[warmup:]:
        if abs(row["contrastive_loss"] - row["chance"]) <= 0.01 * row["chance"]:
            return row["step"]
    return None


def plot(results, path):
    from openclip_ce.plotting import pyplot, save_figure

    plt = pyplot()
    keys = [("contrastive_loss", "contrastive loss (dashed: chance)"), ("grad_text", "text-tower grad norm"),
            ("grad_visual", "image-tower grad norm"), ("text_spread", "mean cosine between captions")]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6))
    for (key, title), ax in zip(keys, axes):
        for name, log in results.items():
            line, = ax.plot([r["step"] for r in log], [r[key] for r in log], label=name, lw=1)
            if key == "contrastive_loss":
                ax.plot([r["step"] for r in log], [r["chance"] for r in log], ls="--", color=line.get_color(), lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        if key.startswith("grad"):
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv=None):
    import open_clip

    from openclip_ce.testing.tiny_clip import SMALL_VIT_B_32_CFG, write_tiny_model_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="small", help="open_clip model name or local-dir:DIR (default: a small config)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--losses", default="ce_clip,clip")
    p.add_argument("--precisions", default="fp32,amp_bf16")
    p.add_argument("--steps", type=int, default=130)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--wd", type=float, default=0.2)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--grad-clip-norm", type=float, default=None)
    p.add_argument("--ce-alpha", type=float, default=0.2)
    p.add_argument("--ce-beta", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--print-every", type=int, default=10)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = a.model
    if name == "small":
        name = write_tiny_model_dir(tempfile.mkdtemp(prefix="probe-small-"), SMALL_VIT_B_32_CFG)
    torch.manual_seed(a.seed)
    model0, _, preprocess = open_clip.create_model_and_transforms(name, output_dict=True)
    tokenizer = open_clip.get_tokenizer(name)
    t0 = time.time()
    batches = toy_batches(a.steps, a.batch_size, tokenizer, preprocess, a.seed)
    print(f"{a.steps} batches of {a.batch_size} in {time.time() - t0:.0f} s", flush=True)
    results = {}
    for loss_name in a.losses.split(","):
        for precision in a.precisions.split(","):
            results[f"{loss_name} {precision}"] = run(model0, batches, loss_name, precision, a, device)
    summary = {k: {"first_step_at_chance": first_at_chance(v, a.warmup), "final_contrastive": v[-1]["contrastive_loss"],
                   "max_grad_text": max(r["grad_text"] for r in v), "max_grad_visual": max(r["grad_visual"] for r in v)}
               for k, v in results.items()}
    (out / "probe.json").write_text(json.dumps({"settings": vars(a), "summary": summary, "runs": results}, indent=1))
    plot(results, out / "probe.png")
    for k, s in summary.items():
        print(f"{k:<22} at chance from step {s['first_step_at_chance']}  final contrastive {s['final_contrastive']:.3f}  "
              f"max grad norm text {s['max_grad_text']:.3g} image {s['max_grad_visual']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
