#!/usr/bin/env python
"""Same batches, several precisions: where a from-scratch CE-CLIP run's features collapse, and why.

    python scripts/benchmarks/probe_collapse.py --model tiny --out probe/ --steps 130 --batch-size 256 --lr 5e-4 --warmup 10
    python scripts/benchmarks/probe_collapse.py --model ViT-B-32 --device cuda --precisions fp32,amp_bf16 ...

Trains one randomly initialised model per (loss, precision) from the same initial weights on the
same sequence of batches (the toy world of :mod:`openclip_ce.testing.toy_shards`, drawn from a seeded
generator: unlike open_clip's webdataset loader, every run sees identical batches), with open_clip's
own step: autocast per ``--precision``, AdamW with open_clip's parameter groups, a cosine schedule
with warm-up, ``logit_scale`` clamped to ln 100 after each step. Records per step: every loss term,
the contrastive loss's chance value (all logits equal), the gradient norm of each tower and of
``logit_scale``, ``logit_scale`` itself, and how collapsed the features are (mean cosine between
different images' features, and between different captions'; 1 = one point). Writes ``probe.json``
and ``probe.png`` under ``--out``; prints, per run, the steps whose contrastive loss is within 1% of
chance, the largest mean cosine between captions after step 10, and the final plain-CLIP contrastive
loss (the CE runs' features scored without hard negatives, mean of the last 10 steps) against the
baseline's on the same batches: the collapse goals of docs/training-from-scratch.md.

CE runs use the plugin's own loss, built from its flags as open_clip's main builds it for a run from
random weights (``--variant NAME=FLAGS``, repeatable; default: the from-scratch defaults)::

    python scripts/benchmarks/probe_collapse.py --model tiny --precisions fp32 --out probe/ \\
        --variant 'default=' --variant 'paper=--ce-schedule off' --variant 'detach=--ce-imc-detach-positive'
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


def ce_loss(flags, args, device):
    """The plugin's loss for ``flags`` (``--ce-*`` flags, as a user passes them to open_clip's main), with the
    run's other settings as open_clip's main has them for a one-process run from random weights."""
    from openclip_ce.training.plugin import CeClipPlugin

    plugin = CeClipPlugin()
    parser = argparse.ArgumentParser()
    plugin.add_arguments(parser)
    ns = parser.parse_args(flags.split())
    for k, v in dict(rank=0, world_size=1, accum_freq=1, local_loss=False, gather_with_grad=False, device=device,
                     siglip=args.siglip, loss_dist_impl=None, logs=None, name=None, pretrained="",
                     resume=None, model="probe").items():
        setattr(ns, k, v)
    return plugin.create_loss(ns)


def plain_itc(out):
    """Plain CLIP's contrastive loss (no hard negatives) on the features of ``out``: one measure for every run."""
    import torch.nn.functional as F

    img, txt = out["image_features"].detach().float(), out["text_features"].detach().float()
    logits = out["logit_scale"].detach().float() * img @ txt.T
    labels = torch.arange(img.shape[0])
    return float((F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2)


def run(model0, batches, name, flags, precision, args, device):
    """Train ``model0`` on ``batches``: plain CLIP (SigLIP with --siglip) when ``flags`` is None, else the
    plugin's CE loss with those ``--ce-*`` flags."""
    import open_clip
    from open_clip.loss import SigLipLoss
    from open_clip_train.precision import get_autocast
    from open_clip_train.scheduler import cosine_lr

    from openclip_ce.training.adapter import adapt_model
    from openclip_ce.training.packing import CAPACITY, layout_text_batch

    ce = flags is not None
    model = copy.deepcopy(model0).to(device)
    spec = adapt_model(model) if ce else None
    if ce:
        loss = ce_loss(flags, args, device)
    else:
        loss = SigLipLoss() if args.siglip else open_clip.ClipLoss()
    named = list(model.named_parameters())
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    opt = torch.optim.AdamW([
        {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": args.wd},
    ], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    schedule = cosine_lr(opt, args.lr, args.warmup, len(batches))
    autocast = get_autocast(precision, device_type=device.type)
    visual = [p for n, p in named if n.startswith("visual.")]
    text = [p for n, p in named if not n.startswith("visual.") and n not in ("logit_scale", "logit_bias")]
    CAPACITY.configure(None)
    log = []
    for step, (images, tokens) in enumerate(batches):
        schedule(step)
        images = images.to(device)
        text_in = layout_text_batch(tokens, spec).to(device) if ce else tokens[:, 0].to(device)
        opt.zero_grad(set_to_none=True)
        with autocast():
            out = model(images, text_in)
            if ce:
                losses = loss(**out, output_dict=True)
            else:
                extra = (out["logit_bias"],) if args.siglip else ()
                losses = {"contrastive_loss": loss(out["image_features"], out["text_features"], out["logit_scale"],
                                                   *extra)}
            total = sum(losses.values())
        total.backward()
        row = {"step": step, "loss": float(total), **{k: float(v) for k, v in losses.items()},
               "plain_itc": plain_itc(out),
               "grad_visual": grad_norm(visual), "grad_text": grad_norm(text),
               "grad_logit_scale": float(model.logit_scale.grad.abs()) if model.logit_scale.grad is not None else 0.0,
               "logit_scale": float(model.logit_scale.exp()),
               "image_spread": feature_spread(out["image_features"].detach()),
               "text_spread": feature_spread(out["text_features"].detach())}
        if ce:
            row.update(loss.schedule_metrics())
        b = images.shape[0]
        cols = b + (int(out["neg_mask"].sum()) if ce and not loss_flag(flags, "--ce-no-itc-negatives") else 0)
        if args.siglip:  # a constant score at sigmoid 1/n over each image's n columns (schedule.sigmoid_chance)
            row["chance"] = math.log(cols) + (cols - 1) * math.log(cols / (cols - 1))
        else:
            row["chance"] = 0.5 * (math.log(cols) + math.log(b))
        if args.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        log.append(row)
        if step % args.print_every == 0 or step == len(batches) - 1:
            weights = f" w_imc {row['ce_imc_weight']:.3f}" if ce else ""
            print(f"  [{name} {precision}] step {step:4d} contrastive {row['contrastive_loss']:.4f} "
                  f"(chance {row['chance']:.4f}) plain {row['plain_itc']:.4f} imc {row.get('imc_loss', 0):.3f}{weights} "
                  f"grad v/t {row['grad_visual']:.3g}/{row['grad_text']:.3g} scale {row['logit_scale']:.1f} "
                  f"spread i/t {row['image_spread']:.3f}/{row['text_spread']:.3f}", flush=True)
    return log


def loss_flag(flags, flag):
    return flag in (flags or "").split()


def steps_at_chance(log, warmup=0):
    """Steps after the LR warm-up whose contrastive loss is within 1% of its chance value (during the warm-up
    every run, plain CLIP's too, passes through its chance value on the way down from its first loss)."""
    return [row["step"] for row in log
            if row["step"] >= warmup and abs(row["contrastive_loss"] - row["chance"]) <= 0.01 * row["chance"]]


def summarise(log, baseline=None, last=10, warmup=0):
    """The collapse goals of a run: no step at chance, captions' mean cosine after step 10, the final
    plain-CLIP contrastive loss (mean of the last ``last`` steps) against the baseline's on the same batches."""
    at = steps_at_chance(log, warmup)
    tail = sum(r["plain_itc"] for r in log[-last:]) / len(log[-last:])
    out = {"steps_at_chance": at, "first_step_at_chance": at[0] if at else None,
           "max_text_spread_after_10": max((r["text_spread"] for r in log[11:]), default=float("nan")),
           "final_contrastive": log[-1]["contrastive_loss"], "final_plain_itc": log[-1]["plain_itc"],
           "plain_itc_last": tail, "gate_open_step": next((r["ce_gate_open_step"] for r in log if "ce_gate_open_step" in r), None),
           "max_grad_text": max(r["grad_text"] for r in log), "max_grad_visual": max(r["grad_visual"] for r in log)}
    if baseline is not None:
        base = sum(r["plain_itc"] for r in baseline[-last:]) / len(baseline[-last:])
        out["plain_itc_vs_baseline"] = tail / base
        out["goals_met"] = not at and out["max_text_spread_after_10"] <= 0.9 and tail <= 1.1 * base
    return out


def plot(results, path):
    from openclip_ce.plotting import pyplot, save_figure

    plt = pyplot()
    keys = [("contrastive_loss", "contrastive loss (dashed: chance)"), ("plain_itc", "plain CLIP contrastive loss"),
            ("grad_text", "text-tower grad norm"), ("text_spread", "mean cosine between captions"),
            ("ce_imc_weight", "IMC weight in use (schedule)")]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6))
    for (key, title), ax in zip(keys, axes):
        for name, log in results.items():
            line, = ax.plot([r["step"] for r in log], [r.get(key, float("nan")) for r in log], label=name, lw=1)
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

    from openclip_ce.testing.tiny_clip import SMALL_VIT_B_32_CFG, TINY_VIT_B_32_CFG, write_tiny_model_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="small",
                   help="open_clip model name, local-dir:DIR, 'small' (a small ViT-B-32-shaped config, default) or "
                        "'tiny' (ViT-B-32's structure at the tests' tiny widths, on 64-pixel images in 8-pixel patches: "
                        "the model of the from-scratch measurements in docs/training-from-scratch.md)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--variant", action="append", default=None, metavar="NAME=FLAGS",
                   help="a CE run: its name and the plugin's --ce-* flags, e.g. 'paper=--ce-schedule off' (repeatable; "
                        "default: one run 'ce' with the defaults of a run from random weights)")
    p.add_argument("--no-baseline", action="store_true", help="skip the plain CLIP (SigLIP) run")
    p.add_argument("--baseline-from", default=None, metavar="PROBE_JSON",
                   help="take the baseline run from an earlier probe.json of the same settings instead of training it")
    p.add_argument("--siglip", action="store_true",
                   help="SigLIP and CE-SigLIP (the model gets open_clip's --siglip init: logit scale 10, bias -10)")
    p.add_argument("--precisions", default="fp32,amp_bf16")
    p.add_argument("--steps", type=int, default=130)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--wd", type=float, default=0.2)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--grad-clip-norm", type=float, default=None)
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
    if name in ("small", "tiny"):
        tiny = copy.deepcopy(TINY_VIT_B_32_CFG)
        tiny["vision_cfg"].update(image_size=64, patch_size=8)  # the toy world's pictures are 64 pixels
        name = write_tiny_model_dir(tempfile.mkdtemp(prefix=f"probe-{name}-"), SMALL_VIT_B_32_CFG if name == "small" else tiny)
    torch.manual_seed(a.seed)
    init = dict(init_logit_scale=math.log(10), init_logit_bias=-10) if a.siglip else {}
    model0, _, preprocess = open_clip.create_model_and_transforms(name, output_dict=True, **init)
    tokenizer = open_clip.get_tokenizer(name)
    t0 = time.time()
    batches = toy_batches(a.steps, a.batch_size, tokenizer, preprocess, a.seed)
    print(f"{a.steps} batches of {a.batch_size} in {time.time() - t0:.0f} s", flush=True)
    variants = dict(v.split("=", 1) if "=" in v else (v, "") for v in (a.variant or ["ce"]))
    base_name = "siglip" if a.siglip else "clip"
    results, baselines = {}, {}
    for precision in a.precisions.split(","):
        if a.baseline_from:
            baselines[precision] = json.loads(Path(a.baseline_from).read_text())["runs"][f"{base_name} {precision}"]
        elif not a.no_baseline:
            baselines[precision] = results[f"{base_name} {precision}"] = run(model0, batches, base_name, None,
                                                                             precision, a, device)
        for vname, flags in variants.items():
            results[f"{vname} {precision}"] = run(model0, batches, vname, flags, precision, a, device)
    summary = {k: summarise(v, baselines.get(k.rsplit(" ", 1)[1]), warmup=a.warmup) for k, v in results.items()}
    settings = {**vars(a), "variants": variants}
    (out / "probe.json").write_text(json.dumps({"settings": settings, "summary": summary, "runs": results}, indent=1))
    plot(results, out / "probe.png")
    for k, s in summary.items():
        vs = f" = {s['plain_itc_vs_baseline']:.3f} x baseline" if "plain_itc_vs_baseline" in s else ""
        print(f"{k:<22} steps at chance {s['steps_at_chance'][:5]}{'...' if len(s['steps_at_chance']) > 5 else ''}  "
              f"max caption cosine after step 10 {s['max_text_spread_after_10']:.3f}  final contrastive "
              f"{s['final_contrastive']:.3f}  plain ITC (last 10) {s['plain_itc_last']:.3f}{vs}  gate open "
              f"{s['gate_open_step']}" + (f"  goals {'met' if s['goals_met'] else 'NOT met'}" if "goals_met" in s else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
