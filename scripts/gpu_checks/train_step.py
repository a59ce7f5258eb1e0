#!/usr/bin/env python
"""Device check of the CE-CLIP training step on a GPU: one prepared run, figures into one JSON file.

    python scripts/gpu_checks/train_step.py --out $OUT                  # on the GPU (about 7 minutes on an H200)
    python scripts/gpu_checks/train_step.py --out /tmp/x --smoke        # any machine: tiny sizes, CPU

Steps, each in its own process with its own time limit (a step that fails or runs out is recorded
as such and the next one runs; the JSON is rewritten after every step, so a run cut short keeps
what it measured):

1. ``bench_256``, ``bench_512``: ``scripts/benchmarks/bench_train_step.py`` (ViT-B-32 from its config, amp_bf16,
   plain CLIP vs CE-CLIP packed vs CE-CLIP rows, same batches), eager, at batch 256 and 512.
   Goals: packed >= 0.9x plain at 256, >= 0.95x at 512; peak step memory <= 1.1x plain's.
2. ``bench_256_compiled``: the same at 256 with ``--compile`` (open_clip's ``--torchcompile``).
   Goal: >= 0.9x compiled plain CLIP.
3. ``train_ce_clip``, ``train_clip``: real training through open_clip's main (``python -m openclip_ce.train``)
   on the toy shards (:func:`openclip_ce.testing.toy_shards.write_demo_shards`, 16,384 samples),
   ViT-B-32 from its config, amp_bf16, batch 256, lr 5e-4, warmup 10, 2 epochs, 12 workers; CE-CLIP
   with the defaults of a run from random weights (the CE terms' schedule); the logged contrastive
   loss per step, whether it ends below chance, the step the schedule's gate opened, and a PNG of
   each run's terms. Goal: ``train_ce_clip`` learns (with ``--ce-schedule off`` this run collapsed).
4. ``probe``: ``scripts/benchmarks/probe_collapse.py`` (same batches in fp32 and amp_bf16; CE-CLIP with the
   defaults and with ``--ce-schedule off``, and plain CLIP, from the same weights; gradient norms and
   feature spread per step), to tell the objective from a numerical defect if a run collapses.

Needs open_clip_torch, webdataset, braceexpand and ftfy (carried to the device machine:
``scripts/gpu_checks/bundle.sh``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

from openclip_ce.fileio import write_json_atomic

ROW = re.compile(r"^(plain CLIP|CE-CLIP [\w ,()-]+?)\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+)\s+(\d+) MiB\s+([\d.]+)\s+(\d+)$", re.M)


def run_step(name, cmd, timeout, figures, out, env=None):
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env={**os.environ, **(env or {})})
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, stdout, stderr = "timeout", e.stdout or "", e.stderr or ""
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
        stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
    (out / f"{name}.log").write_text(f"$ {' '.join(map(str, cmd))}\nrc={rc}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    figures[name] = {"rc": rc, "seconds": round(time.time() - t0, 1)}
    print(f"[{name}] rc={rc} in {figures[name]['seconds']} s", flush=True)
    return rc, stdout


def bench(name, args, timeout, figures, out):
    rc, stdout = run_step(name, [sys.executable, "scripts/benchmarks/bench_train_step.py", *args], timeout, figures, out)
    rows = {m.group(1).strip(): {"images_per_s": float(m.group(2)), "vs_plain": float(m.group(3)),
                                 "ms_per_step": float(m.group(4)), "mem_mib": int(m.group(5)),
                                 "text_tokens_per_image": float(m.group(6)), "host_reads": int(m.group(7))}
            for m in ROW.finditer(stdout)}
    if rows:
        plain_mem = rows.get("plain CLIP", {}).get("mem_mib") or 1
        for r in rows.values():
            r["mem_vs_plain"] = round(r["mem_mib"] / plain_mem, 3)
        figures[name]["variants"] = rows
    print(stdout[-1500:], flush=True)


def train(name, model, shards, samples, args, timeout, figures, out, extra):
    logs = out / "runs"
    # openclip_ce.train: open_clip's own main with the plugin wired explicitly (no .pth hook on a bare machine)
    cmd = [sys.executable, "-m", "openclip_ce.train", "--model", model, "--train-data", shards,
           "--dataset-type", "webdataset", "--train-num-samples", str(samples), "--batch-size", str(args.batch),
           "--epochs", "2", "--lr", "5e-4", "--warmup", "10", "--workers", str(args.workers),
           "--precision", args.precision, "--logs", str(logs), "--name", name, "--log-every-n-steps", "1",
           "--seed", "0", "--save-frequency", "0", "--device", args.device, *extra]
    # OPENCLIP_CE_METRICS=1: the plain CLIP run records its loss in train_metrics.jsonl as the plugin run does
    rc, _ = run_step(name, cmd, timeout, figures, out, env={"OPENCLIP_CE_METRICS": "1"})
    log = logs / name / "out.log"
    if not (logs / name / "train_metrics.jsonl").exists():
        return
    from openclip_ce.training.plots import read_training_metrics, plot_training_log

    steps, series = read_training_metrics(logs / name)
    contrastive = series.get("contrastive_loss", [])
    figures[name].update({"steps": len(steps), "contrastive_first": contrastive[:1], "contrastive_last": contrastive[-1:],
                          "collapse_warning": "collapsed to one point" in log.read_text()})
    from openclip_ce.training.plots import gate_opened

    opened = gate_opened(logs / name) if "ce_imc_weight" in series else None
    if "ce_imc_weight" in series:  # the CE terms' schedule: when IMC and CMR came in, and their last weights
        figures[name].update({"gate_open_step": opened and opened[0], "imc_weight_last": series["ce_imc_weight"][-1:]})
    chance = math.log(args.batch)  # plain CLIP's; CE-CLIP's lies above it (negative columns)
    figures[name]["learned"] = bool(contrastive) and contrastive[-1] < 0.9 * chance
    try:
        plot_training_log(logs / name, out / f"{name}.png")
    except Exception as e:  # noqa: BLE001 - a plot must not lose the figures
        figures[name]["plot_error"] = str(e)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="tiny model, tiny sizes, CPU: checks the script itself")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "smoke": a.smoke}
    path = out / "train_step_gpu.json"

    def save():
        write_json_atomic(path, figures, indent=1)

    if a.smoke:
        from openclip_ce.testing.tiny_clip import TINY_VIT_B_32_CFG, write_tiny_model_dir

        model = write_tiny_model_dir(Path(tempfile.mkdtemp(prefix="gpucheck-")), TINY_VIT_B_32_CFG)
        common = ["--model", model, "--precision", "fp32", "--device", "cpu", "--steps", "1", "--warmup", "0"]
        sizes, compiled = (8,), None  # the compiled bench has its own smoke test (tests/scripts/test_scripts.py)
        a.batch, a.workers, a.precision, a.device, samples, limit = 8, 1, "fp32", "cpu", 16, 300
    else:
        import torch

        figures["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        model = "ViT-B-32"
        common = ["--model", model, "--precision", "amp_bf16", "--device", "cuda", "--steps", "20"]
        sizes, compiled = (256, 512), ["--compile"]
        a.batch, a.workers, a.precision, a.device, samples, limit = 256, 12, "amp_bf16", "cuda", 16384, 150
    save()
    for size in sizes:
        bench(f"bench_{size}", [*common, "--batch-size", str(size)], limit, figures, out)
        save()
    if compiled:
        bench(f"bench_{sizes[0]}_compiled", [*common, "--batch-size", str(sizes[0]), *compiled], 2 * limit, figures, out)
        save()

    from openclip_ce.testing.toy_shards import write_demo_shards

    shard_dir = out / "toy-shards" if a.smoke else Path(tempfile.mkdtemp(prefix="toy-shards-"))
    n_shards = 2 if a.smoke else 16
    write_demo_shards(shard_dir, num_shards=n_shards, per_shard=samples // n_shards)
    shards = str(shard_dir / f"{{00000..{n_shards - 1:05d}}}.tar")
    # CE-CLIP with the defaults of a run from random weights (the CE terms' schedule), and plain CLIP
    for name, extra in (("train_ce_clip", ["--loss", "ce_clip"]), ("train_clip", [])):
        train(name, model, shards, samples, a, limit, figures, out, extra)
        save()
    probe = ["--model", model, "--out", str(out / "probe"), "--device", a.device, "--steps", "2" if a.smoke else "130",
             "--batch-size", str(a.batch), "--print-every", "10", "--variant", "default=",
             "--variant", "paper=--ce-schedule off"]
    run_step("probe", [sys.executable, "scripts/benchmarks/probe_collapse.py", *probe], limit, figures, out)
    summary = out / "probe" / "probe.json"
    if summary.exists():
        figures["probe"]["summary"] = json.loads(summary.read_text())["summary"]
    figures["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    print(json.dumps({k: v for k, v in figures.items() if k.startswith(("bench", "train"))}, indent=1)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
