"""The local engine: shards in ``--workers`` processes of this machine (read, tag, encode, choose, write),
and the masked LM where ``--device`` says.

* ``--device cpu``: each worker has its own masked LM and fills its chunks itself.
* ``--device cuda``: each GPU in use holds one masked-LM process (:mod:`.fill_server`) that every
  worker assigned to it feeds through a bounded queue, with two chunks in flight per worker, so the GPU
  computes while the workers tag (:func:`openclip_ce.shards.devices.assign_devices`: worker ``i`` ->
  GPU ``i mod n``). Workers hold no model: ``--workers`` is the number of CPU cores to use.

Each spawned worker takes the next ``(index, device)`` slot from a queue filled by the parent, so the
assignment logged at start is the one the workers really use. A worker that dies (``kill -9``, the
out-of-memory killer) stops the run with one line naming it and its shard (:class:`WorkerDied`).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import signal
from concurrent.futures.process import BrokenProcessPool
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import UserError

from ..logconfig import configure_logging
from .devices import (FAKE_GPUS_ENV, assign_devices, fake_gpus, filler_devices, gpu_peak_mib, idle_gpus, is_cuda,
                      parse_device, visible_gpu_count)
from .fill_server import FillLinks, FillServers, exit_with_parent
from .plan import ShardJob
from .process import log_result, run_job
from .setup import MaskedLM, RunSetup, build_generator, remote_filler
from .tario import remove_stale_partials
from .progress import Progress
from .stats import workers_summary

log = logging.getLogger(__name__)

_WORKER: Dict[str, object] = {}


class WorkerDied(UserError):
    """A worker process died (killed, out of memory): the run stops with one line naming it; the shard
    it was writing leaves no file under its name, completed shards stay complete, a rerun resumes."""


class LocalEngine:
    """``start()`` decides (and checks) each worker's device before any shard is touched; ``run()``."""

    name = "local"

    def __init__(self, workers: int, device: str, gpus: Optional[Tuple[int, ...]], masked_lm: Optional[MaskedLM]):
        """``--workers``, ``--device``, ``--devices`` (``gpus``) and the run's masked LM (None: none needed)."""
        self.workers = workers
        self.device = device
        self.gpus = gpus
        self.masked_lm = masked_lm
        self.devices: List[str] = []
        self.fillers: List[Dict] = []

    @property
    def gpu_fillers(self) -> bool:
        """Masked LMs in GPU processes fed by the workers (``--device cuda``), not in the workers."""
        return self.masked_lm is not None and is_cuda(self.device)

    def start(self) -> None:
        if self.masked_lm is None:
            self.devices = [self.device] * self.workers  # no masked LM: the device is never used
            if is_cuda(self.device):
                log.info("--device %s unused: no masked LM in this run (--filler vocab or --types)", self.device)
            return
        visible = visible_gpu_count() if is_cuda(self.device) else 0
        self.devices = assign_devices(self.device, self.workers, visible, self.gpus)
        log.info("local engine: %s", ", ".join(f"worker {i} -> {d}" for i, d in enumerate(self.devices)))
        if is_cuda(self.device):
            log.info("local engine: one masked-LM process on each of %s, fed by the workers",
                     ", ".join(filler_devices(self.devices)))
            index = parse_device(self.device)[1]  # cuda:N: the user chose that one GPU, the others are not idle
            idle = idle_gpus(self.devices, visible, self.gpus or ((index,) if index is not None else None))
            if idle:
                log.warning("GPU(s) %s get no worker; raise --workers to use them", ",".join(map(str, idle)))
            if fake_gpus() is not None:
                log.warning("%s is set (test hook): the masked LMs run on the CPU", FAKE_GPUS_ENV)

    def run(self, jobs: Sequence[ShardJob], setup: RunSetup, progress: Progress) -> List[Dict]:
        if not self.gpu_fillers:
            return run_local(jobs, setup, self.devices, progress)
        ctx = mp.get_context("spawn")  # no fork after torch / spaCy state
        servers = FillServers(ctx, self.masked_lm, setup.log_level, filler_devices(self.devices), self.workers)
        try:
            servers.start()
            results = run_local(jobs, setup, self.devices, progress, servers)
            self.fillers = servers.stop()
            return results
        finally:
            servers.kill()

    def describe(self, results: Sequence[Dict]) -> Dict[str, object]:
        out: Dict[str, object] = {"workers_detail": workers_summary(results)}
        if self.fillers:
            out["fillers"] = self.fillers
        return out

    def close(self) -> None:
        pass


def _annotate(res: Dict, index: int, device: str, gpu_fillers: bool) -> Dict:
    res.update(worker=index, device=device, peak_gpu_mib=None if gpu_fillers else gpu_peak_mib(device))
    return res


def _worker_init(setup: RunSetup, queue, slots, servers: Optional[FillLinks]) -> None:
    from threadpoolctl import threadpool_limits

    exit_with_parent()
    # Ctrl-C reaches the whole process group: the parent alone answers it (one line, the workers ended)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # one BLAS / OpenMP pool per worker sized to its share of the cores: numpy (imported while ``setup`` was
    # unpickled) has started its pool already, so it is resized; the variables cover libraries loaded later
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(setup.threads or 1)
    threadpool_limits(setup.threads or 1)
    index, device = slots.get()
    _WORKER.update(setup=setup, queue=queue, gen=None, index=index, device=device, servers=servers)
    configure_logging(setup.log_level)  # a spawned process starts with no logging configuration


def _generator(setup: RunSetup, index: int, device: str, servers: Optional[FillLinks], check=None):
    if servers is None:
        return build_generator(setup, device=device)
    link = servers.link(index, check)
    return build_generator(setup, filler=remote_filler(setup.masked_lm, link.send, link.receive))


def _worker_run(job: ShardJob) -> Dict:
    setup, queue, servers = _WORKER["setup"], _WORKER["queue"], _WORKER["servers"]
    queue.put(("start", _WORKER["index"], os.getpid(), job.rel))  # names this worker if it dies on this shard
    if _WORKER["gen"] is None:
        log.info("worker %d (pid %d): %s", _WORKER["index"], os.getpid(), _filler_words(setup, _WORKER["device"],
                                                                                        servers is not None))
        _WORKER["gen"] = _generator(setup, _WORKER["index"], _WORKER["device"], servers)
    return _annotate(run_job(job, _WORKER["gen"], setup.captions, setup.chunk_size, queue.put), _WORKER["index"],
                     _WORKER["device"], servers is not None)


def _filler_words(setup: RunSetup, device: str, gpu_process: bool) -> str:
    if setup.filler is None:
        return "no filler (--types " + ",".join(setup.generation.types) + ")"
    if setup.filler == "vocab":
        return "vocabulary filler (no masked LM)"
    return f"masked LM on {device}" + (" (its GPU's process)" if gpu_process else "")


def run_local(jobs: Sequence[ShardJob], setup: RunSetup, devices: Sequence[str], progress: Progress,
              servers: Optional[FillServers] = None) -> List[Dict]:
    """``jobs`` by one worker per entry of ``devices`` (this process when there is one)."""
    workers = len(devices)
    results = []
    links = servers.links() if servers is not None else None
    if workers == 1:
        gen = _generator(setup, 0, devices[0], links, servers.check if servers is not None else None)
        for job in jobs:
            results.append(_annotate(run_job(job, gen, setup.captions, setup.chunk_size, progress.add_captions), 0,
                                     devices[0], servers is not None))
            log_result(results[-1])
            progress.shard_done(results[-1]["status"] == "ok")
            if servers is not None:
                servers.check()
        return results
    ctx = mp.get_context("spawn")  # no fork after torch / spaCy state
    queue, slots = ctx.Queue(), ctx.Queue()
    for slot in enumerate(devices):
        slots.put(slot)
    running: Dict[int, Tuple] = {}  # pid -> ("start", worker index, pid, shard) of its current shard
    procs: Dict = {}
    try:
        with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                    initargs=(setup, queue, slots, links)) as ex:
            pending = {ex.submit(_worker_run, job) for job in jobs}
            procs = getattr(ex, "_processes", None) or {}  # the pool's processes by pid (CPython keeps them here)
            try:
                while pending:
                    done, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                    drain(queue, progress, running)
                    if servers is not None:
                        servers.check()
                    for fut in done:
                        res = fut.result()  # setup errors (GenerationSetupError) propagate: the run stops
                        results.append(res)
                        log_result(res)
                        progress.shard_done(res["status"] == "ok")
            except BaseException as e:
                for f in pending:
                    f.cancel()
                if servers is not None:
                    servers.abort.set()  # workers waiting on a filler process give up
                if isinstance(e, KeyboardInterrupt):  # end the workers' shards now, not when they finish
                    for proc in list(procs.values()):
                        proc.terminate()
                raise
            drain(queue, progress, running)
    except BrokenProcessPool:  # the pool has ended (and joined) every worker by now
        drain(queue, progress, running)
        targets = {j.rel: j.target for j in jobs}
        for _, _, _, rel in running.values():  # their temporary files go now, not at the rerun
            remove_stale_partials(targets[rel])
        raise WorkerDied(_dead_worker(procs, running)) from None
    return results


def _dead_worker(procs: Dict, running: Dict[int, Tuple]) -> str:
    """One line: which worker died, how, on which shard, and what to do. The pool ends the other workers
    with SIGTERM once one is gone; the one that died first has another exit status."""
    dead = [(pid, p.exitcode) for pid, p in procs.items() if p.exitcode not in (None, 0, -signal.SIGTERM)]
    if dead:
        pid, code = dead[0]
        if code >= 0:
            how = f"exit status {code}"
        else:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
            if code == -signal.SIGKILL:
                how += ": the out-of-memory killer, or kill -9"
        started = running.get(pid)
        who = (f"worker {started[1]} (pid {pid}) died while writing shard {started[3]}" if started
               else f"a worker (pid {pid}) died")
    else:
        how, who = "cause unknown", "a worker process died"
    return (f"{who} ({how}); the shards completed so far are kept and the unfinished ones' partial files "
            f"deleted: rerun the same command to resume (if memory ran out, lower --workers or --chunk-size)")


def drain(queue, progress: Progress, running: Optional[Dict[int, Tuple]] = None) -> None:
    """Progress counts (ints) to ``progress``; a worker's ``("start", index, pid, shard)`` to ``running``."""
    while True:
        try:
            item = queue.get_nowait()
        except queue_mod.Empty:
            return
        if isinstance(item, tuple):
            if running is not None:
                running[item[2]] = item
        else:
            progress.add_captions(item)
