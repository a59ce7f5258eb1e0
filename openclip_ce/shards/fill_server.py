"""The local engine's masked LM on a GPU: one process per GPU, fed by every worker through a bounded queue.

Why: a worker that tags and fills in turn leaves its GPU idle while it tags, and sixteen workers with
a model each stack sixteen models on one GPU. Here the workers (CPU processes, as many as cores) only
tag, encode and choose; each sends a chunk's masked sequences (:class:`~openclip_ce.generation.mlm_tokens.FillBatch`,
numpy arrays) to its GPU's filler process and goes on with the next chunk while the GPU works
(:data:`~openclip_ce.shards.process.IN_FLIGHT` chunks in flight per worker). The filler process does
nothing but the model: pad, copy once, forward, top-k, copy back once.

Each request is one chunk, filled on its own exactly as a filler in the worker would fill it, so the
output does not depend on which worker or GPU served it, nor on timing. The request queue is bounded
(:data:`QUEUE_PER_WORKER` per worker), so a GPU that falls behind makes the workers wait rather than
memory grow; how long they waited is in ``stats.json`` (``wait_s``), and so is which side limits the run.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue as queue_mod
import threading
import time
from typing import Dict, List

from ..generation import GenerationSetupError
from ..logconfig import configure_logging
from .devices import gpu_peak_mib
from .process import FillerDied
from .setup import MaskedLM, make_mlm_scorer

log = logging.getLogger(__name__)

QUEUE_PER_WORKER = 2  # requests a filler process may have waiting per worker it serves
POLL_S = 1.0          # how often a waiting worker checks that its filler process is alive


def serve(index: int, lm: MaskedLM, log_level: str, device: str, requests, replies: List, status) -> None:
    """Process body: load the masked LM ``lm`` on ``device``, then answer ``(worker, seq, batch)`` requests on the
    worker's reply queue until ``None``. Reports ``("ready", index, error)`` and ``("stats", index, {...})``
    on ``status``."""
    configure_logging(log_level)
    exit_with_parent()
    for reply in replies:  # a reply nobody reads (its worker's shard failed) must not hold up this exit
        reply.cancel_join_thread()
    try:
        scorer = make_mlm_scorer(lm, device)
    except GenerationSetupError as e:
        status.put(("ready", index, str(e)))
        return
    status.put(("ready", index, None))
    log.info("masked-LM process %d (pid %d) on %s: ready", index, os.getpid(), device)
    t0 = time.perf_counter()
    while True:
        msg = requests.get()
        if msg is None:
            break
        worker, seq, batch = msg
        try:
            replies[worker].put((seq, scorer.topk(batch), None))
        except Exception as e:  # noqa: BLE001 - the worker's shard fails with this message; the rest go on
            log.exception("masked-LM process %d: a request failed", index)
            replies[worker].put((seq, None, f"masked LM on {device}: {type(e).__name__}: {e}"))
    lifetime = time.perf_counter() - t0
    status.put(("stats", index, {
        "filler": index, "pid": os.getpid(), "device": device, "requests": scorer.requests, "fills": scorer.fills,
        "batches": scorer.batches, "busy_s": round(scorer.busy_s, 3),
        "utilization": round(scorer.busy_s / lifetime, 3) if lifetime > 0 else None,
        "peak_gpu_mib": gpu_peak_mib(device)}))


def exit_with_parent() -> None:
    """In a child process (a masked-LM process, a worker): end it when its parent ends, also by SIGKILL,
    which ``daemon=True`` does not cover, so that no orphan keeps a GPU's memory or goes on writing shards
    after the run's lock on ``--out`` is gone."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the parent's end of its sentinel pipe closes: the parent is gone
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class ServerLink:
    """A worker's end: ``send(batch) -> seq`` and ``receive(seq) -> columns``, in order."""

    def __init__(self, requests, reply, worker: int, abort, check=None):
        self.requests, self.reply, self.worker, self.abort = requests, reply, worker, abort
        self.check = check  # the parent's own liveness check, for a worker in the parent process
        self.seq = 0
        # A request still in the queue's pipe when its filler process dies is never read; without this,
        # the process that sent it would wait for it forever at exit. Requests that matter are answered
        # (receive) before a worker returns, so nothing is lost.
        requests.cancel_join_thread()

    def send(self, batch) -> int:
        self.seq += 1
        while True:  # the queue is bounded: wait for room, but not for a process that is gone
            try:
                self.requests.put((self.worker, self.seq, batch), timeout=POLL_S)
                return self.seq
            except queue_mod.Full:
                self._check()

    def receive(self, seq: int):
        while True:
            try:
                got, cols, error = self.reply.get(timeout=POLL_S)
            except queue_mod.Empty:
                self._check()
                continue
            if got < seq:  # the answer to a chunk of a shard that failed meanwhile: nobody waits for it
                continue
            if got != seq:  # one filler process per worker, answering in order: never happens
                raise RuntimeError(f"masked-LM reply {got} where {seq} was expected")
            if error:
                raise RuntimeError(error)
            return cols

    def _check(self) -> None:
        if self.check is not None:
            self.check()
        if self.abort.is_set():
            raise FillerDied("the masked-LM process stopped; see the log above")


class FillLinks:
    """What a worker needs to reach the filler processes (picklable: handed to spawned workers)."""

    def __init__(self, requests: List, replies: List, abort):
        self.requests, self.replies, self.abort = requests, replies, abort

    def link(self, worker: int, check=None) -> ServerLink:
        return ServerLink(self.requests[worker % len(self.requests)], self.replies[worker], worker, self.abort, check)


class FillServers:
    """The parent's end: start one :func:`serve` process per device, wait until every model is loaded
    (a load error is raised as its one line), watch them, stop them and collect their statistics."""

    def __init__(self, ctx, lm: MaskedLM, log_level: str, devices: List[str], workers: int):
        self.devices = devices
        self.status = ctx.Queue()
        per = [sum(1 for w in range(workers) if w % len(devices) == i) for i in range(len(devices))]
        self.requests = [ctx.Queue(maxsize=QUEUE_PER_WORKER * max(1, n)) for n in per]
        self.replies = [ctx.Queue() for _ in range(workers)]
        self.abort = ctx.Event()
        self.procs = [ctx.Process(target=serve, args=(i, lm, log_level, d, self.requests[i], self.replies, self.status),
                                  name=f"masked-LM {d}", daemon=True) for i, d in enumerate(devices)]
        self.stats: Dict[int, Dict] = {}

    def links(self) -> FillLinks:
        return FillLinks(self.requests, self.replies, self.abort)

    def start(self) -> None:
        for p in self.procs:
            p.start()
        waiting = set(range(len(self.procs)))
        while waiting:
            try:
                kind, index, payload = self.status.get(timeout=POLL_S)
            except queue_mod.Empty:
                self.check()
                continue
            if kind == "ready":
                if payload:
                    raise GenerationSetupError(payload)
                waiting.discard(index)

    def check(self) -> None:
        """Raise (and tell the workers to stop waiting) when a filler process has died."""
        dead = [(d, p.exitcode) for d, p in zip(self.devices, self.procs) if not p.is_alive()]
        if dead:
            self.abort.set()
            raise FillerDied(f"the masked-LM process on {dead[0][0]} died (exit code {dead[0][1]}; killed for "
                             f"memory? lower --batch-size); completed shards are kept: rerun to resume")

    def stop(self) -> List[Dict]:
        """Ask every filler process to finish, wait for it, and return their statistics."""
        for q, p in zip(self.requests, self.procs):
            if p.is_alive():
                try:
                    q.put(None, timeout=5)
                except queue_mod.Full:
                    pass
        deadline = time.monotonic() + 30
        for p in self.procs:
            p.join(max(0.1, deadline - time.monotonic()))
        while True:
            try:
                kind, index, payload = self.status.get(timeout=0.2)
            except queue_mod.Empty:
                break
            if kind == "stats":
                self.stats[index] = payload
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
        return [self.stats[i] for i in sorted(self.stats)]

    def kill(self) -> None:
        self.abort.set()
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
