"""The local engine: shards in ``--workers`` processes of this machine, each with its own generator."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import queue as queue_mod
from typing import Dict, List, Sequence

from ..logconfig import configure_logging
from .config import ShardsConfig
from .plan import ShardJob
from .process import build_generator, log_result, run_job
from .progress import Progress

log = logging.getLogger("openclip_ce.shards")

_WORKER: Dict[str, object] = {}


def _worker_init(cfg: ShardsConfig, queue) -> None:
    # one BLAS / OpenMP pool per worker sized to its share of the cores (numpy is not imported yet)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(cfg.threads or 1)
    _WORKER.update(cfg=cfg, queue=queue, gen=None)
    configure_logging(cfg.log_level)  # a spawned process starts with no logging configuration


def _worker_run(job: ShardJob) -> Dict:
    cfg, queue = _WORKER["cfg"], _WORKER["queue"]
    if _WORKER["gen"] is None:
        _WORKER["gen"] = build_generator(cfg)
    return run_job(job, _WORKER["gen"], cfg, queue.put)


def run_local(jobs: Sequence[ShardJob], cfg: ShardsConfig, progress: Progress) -> List[Dict]:
    workers = cfg.workers
    results = []
    if workers == 1:
        gen = build_generator(cfg)
        for job in jobs:
            results.append(run_job(job, gen, cfg, progress.add_captions))
            log_result(results[-1])
            progress.shard_done(results[-1]["status"] == "ok")
        return results
    ctx = mp.get_context("spawn")  # no fork after torch / spaCy state
    queue = ctx.Queue()
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(cfg, queue)) as ex:
        pending = {ex.submit(_worker_run, job) for job in jobs}
        try:
            while pending:
                done, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                drain(queue, progress)
                for fut in done:
                    res = fut.result()  # setup errors (GenerationSetupError) propagate: the run stops
                    results.append(res)
                    log_result(res)
                    progress.shard_done(res["status"] == "ok")
        except BaseException:
            for f in pending:
                f.cancel()
            raise
        drain(queue, progress)
    return results


def drain(queue, progress: Progress) -> None:
    while True:
        try:
            progress.add_captions(queue.get_nowait())
        except queue_mod.Empty:
            return

