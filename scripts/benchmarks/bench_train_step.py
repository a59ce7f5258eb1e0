#!/usr/bin/env python
"""Training-step throughput of CE-CLIP relative to plain CLIP, in one run, same model and data.

    python scripts/benchmarks/bench_train_step.py --precision fp32 --threads 1          # CPU: a small model, a few minutes
    python scripts/benchmarks/bench_train_step.py --model ViT-B-32 --batch-size 256 --precision amp_bf16 --device cuda
    python scripts/benchmarks/bench_train_step.py ... --compile                         # every variant compiled

Variants, each a full training step (forward, loss, backward, AdamW step) on its own copy of the
same randomly initialised model (built from its config, nothing downloaded):

* ``plain CLIP``: open_clip's forward and ``ClipLoss`` on the positives, padded to the context length
  (what ``--loss clip`` does);
* ``CE-CLIP packed`` (the default): captions and valid negatives packed into rows of the context
  length, laid out on the CPU as the data workers do (:mod:`openclip_ce.training.packing`);
* ``CE-CLIP rows`` (``--ce-no-pack``): one caption per row at the full context length;
* with ``--siglip``, ``plain SigLIP`` and ``CE-SigLIP packed`` on the same weights plus ``logit_bias``
  (as ``--siglip`` builds them), and CE-SigLIP's step time over CE-CLIP's;
* with ``--compare-layouts``, ``CE-CLIP dense``: every slot encoded, placeholders too, laid out on
  the device (what a batch without a data-stage layout gets).

The layouts are made before timing, as the data workers make them, and padded to the row capacity
as ``CeTextBatch.to`` does in a run. With ``--compile`` every model is wrapped in ``torch.compile``
as open_clip's ``--torchcompile`` does (the loss stays eager, as there). The variants take turns
step by step (so a shared or throttling machine slows them alike) on the same synthetic batches;
images/s is the batch size over the median step time. ``--clock cpu`` (the default on CPU) times
steps in this process's CPU time rather than wall-clock time, so that other work on a shared machine
does not count. Data: random images, caption lengths drawn from COCO-like statistics
(:data:`CAPTION_LENGTHS`: mean ~14 tokens with start/end tokens, p99 24, max 52), four negatives per
caption of similar length, each valid with probability ``--valid``. Prints images/s, the ratio to
plain CLIP, the step's peak memory (CUDA: peak allocated during the step above what was allocated
before it; CPU: bytes of tensors saved for backward, parameters excluded), the text tokens encoded
per image, and the operations that make a GPU wait for the host in the forward, loss and backward
of one extra step (:mod:`openclip_ce.testing.host_sync`; the optimizer's are the same for all).
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import statistics
import sys
import tempfile
import time

import torch

# Caption lengths in tokens (start and end tokens included), as (length, count per 1000 captions):
# COCO-like (COCO captions with open_clip's tokenizer: mean 13.9, p99 24, max 52).
CAPTION_LENGTHS = (
    (8, 5), (9, 30), (10, 60), (11, 100), (12, 140), (13, 155), (14, 135), (15, 110), (16, 80), (17, 55),
    (18, 40), (19, 25), (20, 20), (21, 12), (22, 9), (23, 7), (24, 7),
    (25, 3), (26, 2), (27, 2), (28, 1), (30, 1), (52, 1),
)
NUM_NEG = 4


def length_table():
    return [n for n, c in CAPTION_LENGTHS for _ in range(c)]


def make_batches(n, batch, context, vocab, valid, image_size, seed):
    """``n`` batches ``(images [B,3,S,S], tokens [B, 1+K, L])``; end-of-text is the largest id (argmax pooling)."""
    from openclip_ce.training.packing import PLACEHOLDER_TOKEN

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


class Variant:
    def __init__(self, name, model, loss, forward, precision, device, texts=None):
        from open_clip_train.precision import get_autocast

        # texts(i, tokens) -> what the model gets as text, made before timing (the data workers' share)
        self.name, self.model, self.loss, self.forward, self.texts = name, model, loss, forward, texts
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.2, eps=1e-6)
        self.autocast = get_autocast(precision, device_type=device.type)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "amp" else None
        self.device = device
        self.times, self.mems, self.tokens, self.reads = [], [], [], None

    def forward_backward(self, images, text):
        with self.autocast():
            out = self.forward(self.model, images, text)
            losses = self.loss(**out, output_dict=True)
            total = sum(losses.values())
        (self.scaler.scale(total) if self.scaler is not None else total).backward()
        return total

    def step(self, images, text):
        self.opt.zero_grad(set_to_none=True)
        total = self.forward_backward(images, text)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
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

    from openclip_ce.testing.tiny_clip import SMALL_VIT_B_32_CFG, write_tiny_model_dir

    name = a.model
    if name == "small":
        name = write_tiny_model_dir(tempfile.mkdtemp(prefix="bench-small-"), SMALL_VIT_B_32_CFG)
    torch.manual_seed(a.seed)
    return open_clip.create_model(name, precision=a.precision, device=device, output_dict=True)


def text_tokens(text, batch):
    """Text-tower positions encoded per image."""
    tokens = text.tokens if hasattr(text, "tokens") else text
    return tokens.numel() / batch


def main(argv=None):
    import open_clip

    from openclip_ce.testing.host_sync import count_host_reads
    from openclip_ce.training.adapter import adapt_model
    from openclip_ce.training.loss import CeClipLoss
    from openclip_ce.training.packing import CAPACITY, dense_text_batch, layout_text_batch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small",
                   help="open_clip model name or local-dir:DIR, built from its config (default: small, 4-layer towers)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default: 5 on CPU, 20 on CUDA)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per variant first (default: 1 on CPU, 5 on CUDA; with --compile 3 more)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16", "amp", "amp_bf16"), default=None,
                   help="as open_clip's --precision (default: fp32 on CPU, where amp is emulated, amp on CUDA)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--valid", type=float, default=0.8, help="probability that a negative is valid (not a placeholder)")
    p.add_argument("--compile", action="store_true", help="wrap every model in torch.compile (open_clip's --torchcompile)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default: inductor, as open_clip)")
    p.add_argument("--siglip", action="store_true",
                   help="also time plain SigLIP and CE-SigLIP (same weights plus logit_bias, as --siglip builds them)")
    p.add_argument("--compare-layouts", action="store_true",
                   help="also time CE-CLIP with every slot encoded (dense, laid out on the device)")
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
    a.warmup = (a.warmup if a.warmup is not None else (1 if cpu else 5)) + (3 if a.compile else 0)
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
    raw = make_batches(min(n_batches, 8), a.batch_size, context, vocab, a.valid, image_size, a.seed)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    images = [i.to(device=device, dtype=dtype) for i, _ in raw]

    def ce_model(pack):
        m = copy.deepcopy(base)
        return m, adapt_model(m, pack=pack)

    def laid_out(spec):
        CAPACITY.configure(None)  # each layout its own capacity, grown over these batches as in a run
        cpu_side = [layout_text_batch(t, spec) for _, t in raw]
        for t in cpu_side:
            t.to("cpu")
        return [t.to(device) for t in cpu_side]

    clip_loss = open_clip.ClipLoss()
    packed_model, spec = ce_model(True)
    variants = [
        Variant("plain CLIP" + ("" if context == 77 else f" ({context} tokens)"), copy.deepcopy(base),
                lambda **kw: {"contrastive_loss": clip_loss(kw["image_features"], kw["text_features"], kw["logit_scale"])},
                lambda m, i, t: m(i, t), a.precision, device, [t[:, 0].to(device) for _, t in raw]),
        Variant("CE-CLIP packed" if spec is not None else "CE-CLIP packed (not exact here: rows)", packed_model,
                CeClipLoss().to(device), lambda m, i, t: m(i, t), a.precision, device, laid_out(spec)),
        Variant("CE-CLIP rows (--ce-no-pack)", ce_model(False)[0], CeClipLoss().to(device), lambda m, i, t: m(i, t),
                a.precision, device, laid_out(None)),
    ]
    if a.compare_layouts:
        variants.append(Variant("CE-CLIP dense (all slots)", ce_model(False)[0], CeClipLoss().to(device),
                                lambda m, i, t: m(i, t), a.precision, device,
                                [dense_text_batch(t.to(device)) for _, t in raw]))
    if a.siglip:
        from open_clip.loss import SigLipLoss

        from openclip_ce.training.siglip_loss import CeSigLipLoss

        sig = copy.deepcopy(base)  # what create_model(..., init_logit_scale=log 10, init_logit_bias=-10) gives
        sig.logit_bias = torch.nn.Parameter(torch.full_like(base.logit_scale, -10.0))
        with torch.no_grad():
            sig.logit_scale.fill_(math.log(10))
        sig_loss, ce_sig = SigLipLoss(), copy.deepcopy(sig)
        adapt_model(ce_sig, pack=True)
        variants += [
            Variant("plain SigLIP", sig, lambda **kw: {"contrastive_loss": sig_loss(
                kw["image_features"], kw["text_features"], kw["logit_scale"], kw["logit_bias"])},
                lambda m, i, t: m(i, t), a.precision, device, variants[0].texts),
            Variant("CE-SigLIP packed", ce_sig, CeSigLipLoss().to(device), lambda m, i, t: m(i, t), a.precision,
                    device, variants[1].texts),
        ]
    if a.compile:
        for v in variants:
            v.model = torch.compile(v.model, backend=a.compile_backend)

    real = [int(t.argmax(-1)[i, j]) + 1 for _, t in raw for i in range(t.shape[0]) for j in range(t.shape[1])
            if t[i, j, 0] >= 0]
    print(f"device={device} model={a.model} precision={a.precision} batch={a.batch_size} steps={a.steps} "
          f"(+{a.warmup} warm-up) valid={a.valid} compile={a.compile}")
    print(f"clock: {'process CPU time' if a.clock == 'cpu' else 'wall clock'}, {torch.get_num_threads()} CPU thread(s)"
          + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"captions per image: {len(real) / (len(raw) * a.batch_size):.2f}; caption length (tokens): "
          f"mean {statistics.mean(real):.1f}, max {max(real)}, context {context}")
    sys.stdout.flush()

    for s in range(n_batches):
        for v in variants:
            text = v.texts[s % len(raw)]
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            t0 = clock()
            v.step(images[s % len(raw)], text)
            sync(device)
            dt = clock() - t0
            if s >= a.warmup:
                v.times.append(dt)
                v.tokens.append(text_tokens(text, a.batch_size))
                if device.type == "cuda":
                    v.mems.append(torch.cuda.max_memory_allocated(device) - before)
    for v in variants:
        v.reads = sum(count_host_reads(v.forward_backward, images[0], v.texts[0])[1].values())
        if device.type != "cuda":
            v.mems.append(v.saved_bytes(images[0], v.texts[0]))

    plain = a.batch_size / statistics.median(variants[0].times)
    mem_label = "peak step mem" if device.type == "cuda" else "saved for bwd"
    print(f"\n{'variant':<38} {'images/s':>10} {'vs plain':>9} {'ms/step':>9} {mem_label:>14} "
          f"{'text tok/img':>13} {'host reads':>11}")
    for v in variants:
        ips = a.batch_size / statistics.median(v.times)
        print(f"{v.name:<38} {ips:10.1f} {ips / plain:8.2f}x {1e3 * statistics.median(v.times):9.1f} "
              f"{max(v.mems) / 2 ** 20:11.0f} MiB {statistics.mean(v.tokens):13.1f} {v.reads:11d}")
    if a.siglip:
        by_name = {v.name.split(" (")[0]: statistics.median(v.times) for v in variants}
        print(f"\nCE-SigLIP step time / CE-CLIP step time: {by_name['CE-SigLIP packed'] / by_name['CE-CLIP packed']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
