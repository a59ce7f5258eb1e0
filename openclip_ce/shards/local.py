"""The local engine: shards in ``--workers`` processes of this machine, each with its own generator and
its own masked-LM device (:func:`openclip_ce.shards.devices.assign_devices`: one GPU per worker
round-robin, shared only with ``--workers-per-gpu``).

Why a device per worker: every worker building its model on ``cuda`` put all of them on GPU 0 of an
8-GPU node. Each spawned worker takes the next ``(index, device)`` slot from a queue filled by the
parent, so the assignment logged at start is the one the workers really use.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import queue as queue_mod
from typing import Dict, List, Sequence

from ..logconfig import configure_logging
from .config import ShardsConfig
from .devices import (FAKE_GPUS_ENV, assign_devices, fake_gpus, gpu_peak_mib, idle_gpus, is_cuda, parse_device,
                      visible_gpu_count)
from .plan import ShardJob
from .process import build_generator, log_result, run_job
from .progress import Progress
from .stats import workers_summary

log = logging.getLogger("openclip_ce.shards")

_WORKER: Dict[str, object] = {}


class LocalEngine:
    """``start()`` decides (and checks) each worker's device before any shard is touched; ``run()``."""

    name = "local"

    def __init__(self, cfg: ShardsConfig):
        self.cfg = cfg
        self.devices: List[str] = []

    def start(self) -> None:
        cfg = self.cfg
        if not (cfg.filler == "mlm" and cfg.needs_filler):
            self.devices = [cfg.device] * cfg.workers  # no masked LM: the device is never used
            if is_cuda(cfg.device):
                log.info("--device %s unused: no masked LM in this run (--filler vocab or --types)", cfg.device)
            return
        visible = visible_gpu_count() if is_cuda(cfg.device) else 0
        self.devices = assign_devices(cfg.device, cfg.workers, visible, cfg.devices, cfg.workers_per_gpu)
        log.info("local engine: %s", ", ".join(f"worker {i} -> {d}" for i, d in enumerate(self.devices)))
        if is_cuda(cfg.device):
            index = parse_device(cfg.device)[1]  # cuda:N: the user chose that one GPU, the others are not idle
            idle = idle_gpus(self.devices, visible, cfg.devices or ((index,) if index is not None else None))
            if idle:
                log.warning("GPU(s) %s get no worker; raise --workers to use them", ",".join(map(str, idle)))
            if fake_gpus() is not None:
                log.warning("%s is set (test hook): the masked LMs run on the CPU", FAKE_GPUS_ENV)

    def run(self, jobs: Sequence[ShardJob], cfg: ShardsConfig, progress: Progress) -> List[Dict]:
        return run_local(jobs, cfg, self.devices, progress)

    def describe(self, results: Sequence[Dict]) -> Dict[str, object]:
        return {"workers_detail": workers_summary(results)}

    def close(self) -> None:
        pass


def _annotate(res: Dict, index: int, device: str) -> Dict:
    res.update(worker=index, device=device, peak_gpu_mib=gpu_peak_mib(device))
    return res


def _worker_init(cfg: ShardsConfig, queue, slots) -> None:
    # one BLAS / OpenMP pool per worker sized to its share of the cores (numpy is not imported yet)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(cfg.threads or 1)
    index, device = slots.get()
    _WORKER.update(cfg=cfg, queue=queue, gen=None, index=index, device=device)
    configure_logging(cfg.log_level)  # a spawned process starts with no logging configuration


def _worker_run(job: ShardJob) -> Dict:
    cfg, queue = _WORKER["cfg"], _WORKER["queue"]
    if _WORKER["gen"] is None:
        log.info("worker %d (pid %d): masked LM on %s", _WORKER["index"], os.getpid(), _WORKER["device"])
        _WORKER["gen"] = build_generator(cfg, device=_WORKER["device"])
    return _annotate(run_job(job, _WORKER["gen"], cfg, queue.put), _WORKER["index"], _WORKER["device"])


def run_local(jobs: Sequence[ShardJob], cfg: ShardsConfig, devices: Sequence[str], progress: Progress) -> List[Dict]:
    workers = cfg.workers
    results = []
    if workers == 1:
        gen = build_generator(cfg, device=devices[0])
        for job in jobs:
            results.append(_annotate(run_job(job, gen, cfg, progress.add_captions), 0, devices[0]))
            log_result(results[-1])
            progress.shard_done(results[-1]["status"] == "ok")
        return results
    ctx = mp.get_context("spawn")  # no fork after torch / spaCy state
    queue, slots = ctx.Queue(), ctx.Queue()
    for slot in enumerate(devices):
        slots.put(slot)
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                initargs=(cfg, queue, slots)) as ex:
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
