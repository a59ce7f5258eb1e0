"""The ``openclip-ce make-shards`` command: plan, run an engine, write ``stats.json``, report.

Exit codes: 0 all shards complete; 1 some shards failed (listed in ``stats.json``; rerun retries
them; ``--skip-bad`` makes it 0 unless none is complete); 2 a usage or setup error, or a run stopped
by what is no shard's fault (a full disk, a dead worker or masked-LM process): one line, and a rerun
resumes.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from ..fileio import write_json_atomic
from .config import ShardsConfig, add_arguments, config_from_args
from .devices import is_cuda
from .local import LocalEngine
from .outlock import OutputLock
from .plan import forget_settings, is_complete, plan_jobs, record_settings, verify_settings
from .captions import CAPTION_NOT_FOUND, CaptionReader
from .progress import Progress
from .setup import caption_reader, choose_tagging, masked_lm, run_setup, threads_per_worker
from .stats import aggregate

__all__ = ["add_arguments", "run", "run_config"]

log = logging.getLogger(__name__)

PROG = "openclip-ce make-shards"
# after "openclip-ce make-shards: interrupted" (Ctrl-C)
INTERRUPTED = ("; the shards completed so far are kept (unfinished ones are made again): run the same command "
               "to resume")


def run(args) -> int:
    return run_config(config_from_args(args))


def make_engine(cfg: ShardsConfig):
    """The engine of ``--engine``, given the settings it reads and the run's masked LM (None: none needed)."""
    if cfg.engine == "ray":
        from .ray_engine import RayEngine  # Ray is an optional dependency
        from .ray_resources import RayOptions

        return RayEngine(RayOptions(cfg.ray_address, cfg.workers, cfg.device, cfg.ray_fillers, cfg.ray_gpus_per_filler,
                                    cfg.ray_placement_timeout), masked_lm(cfg))
    return LocalEngine(cfg.workers, cfg.device, cfg.devices, masked_lm(cfg))


def run_config(cfg: ShardsConfig) -> int:
    """The run, in an order that fails fast and never harms ``--out``: plan (reads listings), lock
    ``--out``, compare settings (reads), start the engine (GPUs checked, Ray actors placed), and only
    then record settings and touch shards. ``cfg`` never changes: what the run decides from it (threads,
    tagging ops, filler, masked LM, vocabulary) is the :class:`~openclip_ce.shards.setup.RunSetup` the
    workers get, and they get nothing else."""
    t0 = time.perf_counter()
    engine = make_engine(cfg)
    jobs = plan_jobs(cfg.inputs, cfg.out)
    threads = threads_per_worker(cfg)
    settings = cfg.output_settings()
    tagging = None
    with OutputLock(cfg.out):
        verify_settings(cfg.out, settings, cfg.overwrite)
        todo = [j for j in jobs if cfg.overwrite or not is_complete(cfg.out, j)]
        skipped = len(jobs) - len(todo)
        log.info("%d shards: %d to write, %d already complete in %s", len(jobs), len(todo), skipped, cfg.out)
        try:
            if todo:
                engine.start()
                tagging = choose_tagging(cfg, threads)
            first_record = record_settings(cfg.out, settings, cfg.overwrite, tagging)
            try:
                setup = run_setup(cfg, jobs, threads, tagging) if todo else None
            except BaseException:  # e.g. no vocabulary: "nothing was written", so nothing may stay recorded
                if first_record:
                    forget_settings(cfg.out)
                raise
            progress = Progress(len(todo), sys.stderr.isatty() and cfg.progress, cfg.log_every)
            try:
                results = engine.run(todo, setup, progress) if todo else []
            finally:
                progress.close()
            details = engine.describe(results) if todo else {}
        finally:
            engine.close()
        wall = time.perf_counter() - t0
        run_info = {"engine": cfg.engine, "workers": cfg.workers, "device": cfg.device,
                    "fp16": is_cuda(cfg.device) and not cfg.fp32, "tagging_ops": tagging, **details}
        stats = aggregate(cfg.out, jobs, results, skipped, wall, settings, run_info)
        write_json_atomic(os.path.join(os.path.abspath(cfg.out), "stats.json"), stats)
    failed = stats["failed_shards"]
    problems = stats["problems"]
    log.info("done: %d samples in %d complete shards (%d written now, %d skipped), %d failed; coverage %s; "
             "%d samples without negatives; problems: %s; %.1f samples/s%s; stats in %s", stats["samples"],
             stats["shards"]["complete"], stats["shards"]["written_this_run"], skipped, len(failed),
             " ".join(f"{t}={c:.3f}" for t, c in stats["coverage"].items()), stats["samples_without_negatives"],
             ", ".join(f"{k} {v}" for k, v in problems.items()) or "none",
             stats["throughput"]["samples_per_s"] or 0.0,
             f", limited by {stats['throughput']['limited_by']}" if stats["throughput"]["limited_by"] else "",
             os.path.join(cfg.out, "stats.json"))
    warn_if_mostly_lost(stats, caption_reader(cfg))
    if failed:
        for f in failed:
            print(f"{PROG}: failed shard: {f['error']}", file=sys.stderr)
        if not cfg.skip_bad:
            print(f"{PROG}: {len(failed)} shard(s) failed (listed in stats.json); "
                  f"rerun to retry them, or pass --skip-bad to accept", file=sys.stderr)
            return 1
        if not stats["shards"]["complete"]:  # --skip-bad accepts bad shards, not a run that made none
            print(f"{PROG}: every shard failed ({len(failed)}, listed in stats.json): --out {cfg.out} holds no "
                  f"shard, even with --skip-bad", file=sys.stderr)
            return 1
    return 0


def warn_if_mostly_lost(stats, captions: CaptionReader) -> None:
    """A closing warning when most samples had no caption, or got no negative: what to check."""
    n = stats["samples"]
    if not n:
        return
    problems = stats["problems"]
    not_found = sum(problems.get(k, 0) for k in CAPTION_NOT_FOUND)
    where = captions.where()
    if 2 * not_found > n:
        members = next((e["members"] for e in stats["problem_examples"] if "members" in e), None)
        log.warning("most samples (%d of %d) have no caption where %s points (%s)%s: check --caption-key and "
                    "--caption-json-field", not_found, n, where,
                    ", ".join(f"{k} {problems[k]}" for k in CAPTION_NOT_FOUND if problems.get(k)),
                    f"; a sample's members: {', '.join(members)}" if members else "")
    elif 2 * stats["samples_without_negatives"] > n:
        log.warning("most samples (%d of %d) got no negative: check --caption-key / --caption-json-field (%s), "
                    "--languages (%s) and --types; problems: %s", stats["samples_without_negatives"], n, where,
                    ",".join(captions.languages) or "all", ", ".join(f"{k} {v}" for k, v in problems.items()) or "none")

