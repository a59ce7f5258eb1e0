"""The Ray engine's masked LMs: one :class:`FillerActor` per GPU (share), behind one :class:`FillerRouter`.

Why a router: shard tasks used to be bound to actor ``shard_index % n_actors``, so a task could queue
behind a busy actor while another sat idle (shards differ in length; tasks start and end at different
times). Every fill request now goes to the router, which forwards it to the actor with the fewest
requests in flight (:class:`LeastBusy`). Each request is one whole chunk of one shard, filled by one
actor exactly as a local filler would fill it, so which actor serves it does not change the output.

The router is an async actor holding no CPU (``num_cpus=0``): it only forwards, and a CPU reserved
for it could be the one a shard task needs.
"""

from __future__ import annotations

import os
import socket
from typing import Dict, List, Optional, Sequence

from ..generation import GenerationSetupError
from .config import ShardsConfig
from .devices import gpu_peak_mib, is_cuda


class LeastBusy:
    """Pick the worker with the fewest requests in flight; ties go to the one that served fewest so
    far, then to the lowest index (pure bookkeeping, unit-tested without Ray)."""

    def __init__(self, n: int):
        if n < 1:
            raise ValueError("LeastBusy needs at least one worker")
        self.in_flight = [0] * n
        self.served = [0] * n

    def acquire(self) -> int:
        i = min(range(len(self.in_flight)), key=lambda j: (self.in_flight[j], self.served[j], j))
        self.in_flight[i] += 1
        return i

    def release(self, i: int) -> None:
        self.in_flight[i] -= 1
        self.served[i] += 1


class FillerActor:
    """One masked LM (on the GPU Ray gave this actor, or the CPU). A load failure is kept and
    reported by :meth:`ready` so that the driver can print it as one line."""

    def __init__(self, cfg: ShardsConfig, index: int):
        import ray

        from .process import make_mlm_filler

        self.index = index
        # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU(s): "cuda" is that GPU
        self.device = "cuda" if is_cuda(cfg.device) else cfg.device
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.requests = self.fills = 0
        self.error: Optional[str] = None
        try:
            self.filler = make_mlm_filler(cfg, self.device)
        except GenerationSetupError as e:
            self.error = str(e)

    def ready(self) -> Optional[str]:
        return self.error

    def fill(self, requests):
        self.requests += 1
        self.fills += len(requests)
        return self.filler.fill(requests)

    def stats(self) -> Dict[str, object]:
        return {"actor": self.index, "node": socket.gethostname(), "pid": os.getpid(), "device": self.device,
                "gpu_ids": self.gpu_ids, "requests": self.requests, "fills": self.fills,
                "peak_gpu_mib": gpu_peak_mib(self.device)}


class FillerRouter:
    """Async Ray actor: forwards each fill request to the least-busy :class:`FillerActor`."""

    def __init__(self, actors: Sequence):
        self.actors = list(actors)
        self.policy = LeastBusy(len(self.actors))

    async def fill(self, requests):
        i = self.policy.acquire()
        try:
            return await self.actors[i].fill.remote(requests)
        finally:
            self.policy.release(i)

    async def served(self) -> List[int]:
        return list(self.policy.served)

    async def in_flight(self) -> List[int]:
        return list(self.policy.in_flight)


class RemoteFiller:
    """The filler interface a shard task's generator sees, in front of the :class:`FillerRouter`
    (one call per chunk, so the batch composition is the same as a local filler's)."""

    ranked = True
    name = "mlm"

    def __init__(self, router=None):
        self.router = router

    def fill(self, requests):
        import ray

        return ray.get(self.router.fill.remote(list(requests)))
