"""The Ray engine's masked LMs: one :class:`FillerActor` per GPU (share), behind one :class:`FillerRouter`.

Why a router: shard tasks used to be bound to actor ``shard_index % n_actors``, so a task could queue
behind a busy actor while another sat idle (shards differ in length; tasks start and end at different
times). Every fill request now goes to the router, which forwards it to the actor with the fewest
requests in flight (:class:`LeastBusy`). Each request is one whole chunk of one shard (its masked
token sequences; the task tokenizes and chooses), filled by one actor exactly as a local filler would
fill it, so which actor serves it does not change the output. A task keeps two chunks in flight.

The router is an async actor holding no CPU (``num_cpus=0``): it only forwards, and a CPU reserved
for it could be the one a shard task needs.
"""

from __future__ import annotations

import os
import socket
from typing import Dict, List, Optional, Sequence

from ..generation import GenerationSetupError
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
    """One masked LM (on the GPU Ray gave this actor, or the CPU): the model side only, answering a
    chunk's :class:`~openclip_ce.generation.mlm_tokens.FillBatch` with its top-k vocabulary columns
    (the shard task tokenizes and chooses). A load failure is kept and reported by :meth:`ready` so
    that the driver can print it as one line."""

    def __init__(self, lm, index: int):
        """``lm``: the run's :class:`~openclip_ce.shards.setup.MaskedLM`."""
        import ray

        from .setup import make_mlm_scorer

        self.index = index
        # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU(s): "cuda" is that GPU
        self.device = "cuda" if is_cuda(lm.device) else lm.device
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.requests = self.fills = 0
        self.error: Optional[str] = None
        try:
            self.scorer = make_mlm_scorer(lm, self.device)
        except GenerationSetupError as e:
            self.error = str(e)

    def ready(self) -> Optional[str]:
        return self.error

    def fill(self, batch):
        self.requests += 1
        self.fills += len(batch)
        return self.scorer.topk(batch)

    def stats(self) -> Dict[str, object]:
        busy = getattr(getattr(self, "scorer", None), "busy_s", 0.0)
        return {"actor": self.index, "node": socket.gethostname(), "pid": os.getpid(), "device": self.device,
                "gpu_ids": self.gpu_ids, "requests": self.requests, "fills": self.fills, "busy_s": round(busy, 3),
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


def remote_filler(lm, router):
    """A shard task's filler: tokenizer side here, each chunk's fills one request to the router (several
    in flight: the task tags its next chunk while an actor fills this one)."""
    import ray

    from .setup import remote_filler as make

    filler = make(lm, None, ray.get)
    bind_router(filler, router)
    return filler


def bind_router(filler, router) -> None:
    filler.send = router.fill.remote
