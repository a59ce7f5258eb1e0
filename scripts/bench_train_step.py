#!/usr/bin/env python
"""Training-step throughput of CE-CLIP relative to plain CLIP, in one run, same model and data.

    python scripts/bench_train_step.py --precision fp32 --threads 1          # CPU: a small model, a few minutes
    python scripts/bench_train_step.py --model ViT-B-32 --batch-size 256 --precision bf16 --device cuda

Variants, each a full training step (forward, loss, backward, AdamW step) on its own copy of the
same randomly initialised model (built from its config, nothing downloaded):

* ``plain CLIP``: open_clip's forward and ``ClipLoss`` on the positives, padded to the context length
  (what ``--loss clip`` does);
* ``CE-CLIP untrimmed``: the adapted forward (positives + valid negatives in one text-tower call,
  full context length; ``--ce-no-trim``) and ``CeClipLoss``;
* ``CE-CLIP trimmed``: the same with the text batch encoded in length groups (the default);
* with ``--compare-padding``, both CE-CLIP variants again with the negatives padded to a fixed
  ``B * K`` rows (placeholder rows encoded, their features discarded) instead of gathered with
  the validity mask: the comparison behind the choice documented in ``training/adapter.py``.

The variants take turns step by step (so a shared or throttling machine slows them alike) on the
same synthetic batches; images/s is the batch size over the median step time. ``--clock cpu`` (the
default on CPU) times steps in this process's CPU time rather than wall-clock time, so that other
work on a shared machine does not count; with ``--threads 1`` it is also free of thread-pool
spinning while a thread waits for a descheduled one. Data: random images, caption lengths drawn
from COCO-like statistics (:data:`CAPTION_LENGTHS`: mean ~14 tokens with start/end tokens, p99 24,
max 52), four negatives per caption of similar length, each valid with probability ``--valid``. Prints images/s, the ratio to
plain CLIP, the step's peak memory (CUDA: peak allocated during the step above what was allocated
before it; CPU: bytes of tensors saved for backward, parameters excluded) and the mean length the
text rows were encoded at.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

# Caption lengths in tokens (start and end tokens included), as (length, count per 1000 captions):
# COCO-like (COCO captions with open_clip's tokenizer: mean 13.9, p99 24, max 52).
CAPTION_LENGTHS = (
    (8, 5), (9, 30), (10, 60), (11, 100), (12, 140), (13, 155), (14, 135), (15, 110), (16, 80), (17, 55),
    (18, 40), (19, 25), (20, 20), (21, 12), (22, 9), (23, 7), (24, 7),
    (25, 3), (26, 2), (27, 2), (28, 1), (30, 1), (52, 1),
)
# A small model for the CPU with ViT-B-32's proportions (50 image tokens, 77 text tokens, vision : text
# width 3 : 2, so that a caption costs 2/3 of an image as in ViT-B-32) at 4 layers and 3/8 of its widths.
SMALL_CFG = {
    "embed_dim": 192,
    "vision_cfg": {"image_size": 224, "layers": 4, "width": 288, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 192, "heads": 3, "layers": 4},
}
NUM_NEG = 4


def length_table():
    return [n for n, c in CAPTION_LENGTHS for _ in range(c)]


def make_batches(n, batch, context, vocab, valid, image_size, seed):
    """``n`` batches ``(images [B,3,S,S], tokens [B, 1+K, L])``; end-of-text is the largest id (argmax pooling)."""
    from openclip_ce.training.data import PLACEHOLDER_TOKEN

    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    table = length_table()
    sot, eot = vocab - 2, vocab - 1

    def row(length):
        length = max(3, min(length, context))
        t = torch.zeros(context, dtype=torch.long)
        t[0], t[length - 1] = sot, eot
        t[1:length - 1] = torch.randint(1, vocab - 2, (length - 2,), generator=g)
        return t

    out = []
    for _ in range(n):
        tokens = torch.full((batch, 1 + NUM_NEG, context), PLACEHOLDER_TOKEN, dtype=torch.long)
        for i in range(batch):
            length = rng.choice(table)
            tokens[i, 0] = row(length)
            for k in range(NUM_NEG):
                if rng.random() < valid:
                    tokens[i, 1 + k] = row(length + rng.choice((-1, 0, 0, 1)))
        out.append((torch.randn(batch, 3, image_size, image_size, generator=g), tokens))
    return out


def padded_ce_forward(model, image, text):
    """The adapted forward with negatives padded to ``B * K`` rows instead of gathered (for the comparison)."""
    from openclip_ce.training.adapter import PLAN_ATTR, text_trim_of
    from openclip_ce.training.data import split_text_batch
    from openclip_ce.training.trim import encode_in_length_groups

    pos, neg_tokens, mask = split_text_batch(text)
    b, k = mask.shape
    filled = torch.where(mask[..., None], neg_tokens, torch.zeros_like(neg_tokens))  # all-pad row: pooled at 0
    texts = torch.cat([pos, filled.flatten(0, 1)])
    trim = text_trim_of(model)
    if trim is None:
        out = model.encode_image(image, normalize=True), model.encode_text(texts, normalize=True)
    else:
        feats, model.__dict__[PLAN_ATTR] = encode_in_length_groups(
            texts, trim.needed_lengths(model, texts), lambda t: trim.encode(model, t), trim.settings)
        out = model.encode_image(image, normalize=True), F.normalize(feats, dim=-1)
    image_features, feats = out
    neg = torch.where(mask[..., None], feats[b:].view(b, k, -1), torch.zeros((), dtype=feats.dtype, device=feats.device))
    return {"image_features": image_features, "text_features": feats[:b], "logit_scale": model.logit_scale.exp(),
            "neg_text_features": neg, "neg_mask": mask}


class Variant:
    def __init__(self, name, model, loss, forward, precision, device):
        from open_clip_train.precision import get_autocast

        self.name, self.model, self.loss, self.forward = name, model, loss, forward
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.2, eps=1e-6)
        self.autocast = get_autocast(precision, device_type=device.type)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "amp" else None
        self.device = device
        self.times, self.mems, self.lengths = [], [], []

    def step(self, images, tokens):
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            out = self.forward(self.model, images, tokens)
            losses = self.loss(**out, output_dict=True)
            total = sum(losses.values())
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            total.backward()
            self.opt.step()
        return total

    def saved_bytes(self, images, tokens):
        """Bytes of tensors saved for backward in one step (parameters excluded): the CPU's memory figure."""
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        seen = {}

        def pack(t):
            s = t.untyped_storage()
            if s.data_ptr() not in params:
                seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self.step(images, tokens)
        return sum(seen.values())


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(a, device):
    import open_clip

    from openclip_ce.testing.tiny_clip import write_tiny_model_dir

    name = a.model
    if name == "small":
        name = write_tiny_model_dir(tempfile.mkdtemp(prefix="bench-small-"), SMALL_CFG)
    torch.manual_seed(a.seed)
    return open_clip.create_model(name, precision=a.precision, device=device, output_dict=True)


def main(argv=None):
    import open_clip

    from openclip_ce.training.adapter import adapt_model, last_text_plan
    from openclip_ce.training.loss import CeClipLoss
    from openclip_ce.training.trim import TrimSettings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small",
                   help="open_clip model name or local-dir:DIR, built from its config (default: small, 4-layer towers)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default: 5 on CPU, 20 on CUDA)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per variant first (default: 1 on CPU, 5 on CUDA: kernel plans per length group)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16", "amp", "amp_bf16"), default=None,
                   help="as open_clip's --precision (default: fp32 on CPU, where amp is emulated, amp on CUDA)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--valid", type=float, default=0.8, help="probability that a negative is valid (not a placeholder)")
    p.add_argument("--trim-groups", type=int, default=TrimSettings().max_groups)
    p.add_argument("--trim-round", type=int, default=TrimSettings().round_to)
    p.add_argument("--compare-padding", action="store_true",
                   help="also time CE-CLIP with negatives padded to B*K rows instead of gathered")
    p.add_argument("--clock", choices=("wall", "cpu"), default=None,
                   help="time steps by wall clock or by this process's CPU time (default: cpu on CPU, wall on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    a.clock = a.clock or ("cpu" if device.type == "cpu" else "wall")
    if a.clock == "cpu" and device.type != "cpu":
        p.error("--clock cpu measures CPU work only: use --clock wall with --device cuda")
    if a.threads:
        torch.set_num_threads(a.threads)
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    a.precision = a.precision or ("fp32" if device.type == "cpu" else "amp")
    cpu = device.type == "cpu"
    a.steps = a.steps if a.steps is not None else (5 if cpu else 20)
    a.warmup = a.warmup if a.warmup is not None else (1 if cpu else 5)
    if a.steps < 1 or a.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    base = build(a, device)
    context, vocab = base.context_length, base.vocab_size
    image_size = base.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    n_batches = a.warmup + a.steps
    batches = [(i.to(device), t.to(device))
               for i, t in make_batches(min(n_batches, 8), a.batch_size, context, vocab, a.valid, image_size, a.seed)]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    if dtype is not None:
        batches = [(i.to(dtype), t) for i, t in batches]

    settings = TrimSettings(round_to=a.trim_round, max_groups=a.trim_groups)

    def ce_model(trim):
        m = copy.deepcopy(base)
        adapt_model(m, trim=trim, settings=settings)
        return m

    clip_loss = open_clip.ClipLoss()
    variants = [
        Variant("plain CLIP (77 tokens)" if context == 77 else f"plain CLIP ({context} tokens)", copy.deepcopy(base),
                lambda **kw: {"contrastive_loss": clip_loss(kw["image_features"], kw["text_features"], kw["logit_scale"])},
                lambda m, i, t: m(i, t[:, 0]), a.precision, device),
        Variant("CE-CLIP untrimmed", ce_model(False), CeClipLoss().to(device), lambda m, i, t: m(i, t), a.precision, device),
        Variant("CE-CLIP trimmed", ce_model(True), CeClipLoss().to(device), lambda m, i, t: m(i, t), a.precision, device),
    ]
    if a.compare_padding:
        variants += [
            Variant("CE-CLIP untrimmed, padded negs", ce_model(False), CeClipLoss().to(device), padded_ce_forward,
                    a.precision, device),
            Variant("CE-CLIP trimmed, padded negs", ce_model(True), CeClipLoss().to(device), padded_ce_forward,
                    a.precision, device),
        ]

    real = [int(t.argmax(-1)[i, j]) + 1 for _, t in batches for i in range(t.shape[0]) for j in range(t.shape[1])
            if t[i, j, 0] >= 0]
    print(f"device={device} model={a.model} precision={a.precision} batch={a.batch_size} steps={a.steps} "
          f"(+{a.warmup} warm-up) valid={a.valid} trim: up to {settings.max_groups} groups, multiple of {settings.round_to}")
    print(f"clock: {'process CPU time' if a.clock == 'cpu' else 'wall clock'}, {torch.get_num_threads()} CPU thread(s)"
          + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"text rows per image: {len(real) / (len(batches) * a.batch_size):.2f}; caption length (tokens): "
          f"mean {statistics.mean(real):.1f}, max {max(real)}, context {context}")
    sys.stdout.flush()

    for s in range(n_batches):
        images, tokens = batches[s % len(batches)]
        for v in variants:
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            t0 = clock()
            v.step(images, tokens)
            sync(device)
            dt = clock() - t0
            if s >= a.warmup:
                v.times.append(dt)
                if device.type == "cuda":
                    v.mems.append(torch.cuda.max_memory_allocated(device) - before)
                plan = last_text_plan(v.model)
                v.lengths.append(plan.mean_length if plan is not None else (context if "CE" in v.name else None))
    if device.type != "cuda":
        images, tokens = batches[0]
        for v in variants:
            v.mems.append(v.saved_bytes(images, tokens))

    plain = a.batch_size / statistics.median(variants[0].times)
    mem_label = "peak step mem" if device.type == "cuda" else "saved for bwd"
    print(f"\n{'variant':<32} {'images/s':>10} {'vs plain':>9} {'ms/step':>9} {mem_label:>14} {'mean text len':>14}")
    for v in variants:
        ips = a.batch_size / statistics.median(v.times)
        ls = [l for l in v.lengths if l is not None]
        mean_len = f"{statistics.mean(ls):.1f}" if ls else f"{context} (pos.)"
        print(f"{v.name:<32} {ips:10.1f} {ips / plain:8.2f}x {1e3 * statistics.median(v.times):9.1f} "
              f"{max(v.mems) / 2 ** 20:11.0f} MiB {mean_len:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
