"""The Ray engine: shards as Ray tasks across a cluster (or a local Ray); masked LMs as Ray actors."""

from __future__ import annotations

import logging
from typing import Dict, List, Sequence

from ..errors import UserError
from ..generation.fillers import MLMFiller
from .config import ShardsConfig
from .plan import ShardJob
from .process import build_generator, log_result, run_job
from .progress import Progress

log = logging.getLogger("openclip_ce.shards")


class _FillerActor:
    """Holds one masked LM (on a GPU when the cluster has them); fills requests batch by batch."""

    def __init__(self, cfg: ShardsConfig):
        self.filler = MLMFiller(cfg.filler_model, device=cfg.device, batch_size=cfg.batch_size,
                                n_candidates=cfg.n_candidates, half=cfg.half)

    def fill(self, requests):
        return self.filler.fill(requests)


class _RemoteFiller:
    """Filler interface in front of a :class:`_FillerActor` (each call is one whole chunk: the actor's
    batch composition is the same as a local filler's)."""

    ranked = True
    name = "mlm"

    def __init__(self):
        self.actor = None

    def fill(self, requests):
        import ray

        return ray.get(self.actor.fill.remote(list(requests)))


_RAY_GEN: Dict[str, object] = {}


def _ray_shard(job: ShardJob, cfg: ShardsConfig, actor) -> Dict:
    gen = _RAY_GEN.get("gen")
    if gen is None:
        gen = _RAY_GEN["gen"] = build_generator(cfg, filler=_RemoteFiller() if actor is not None else None)
    if actor is not None:
        gen.filler.actor = actor
    return run_job(job, gen, cfg, lambda n: None)


def run_ray(jobs: Sequence[ShardJob], cfg: ShardsConfig, progress: Progress) -> List[Dict]:
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'openclip-ce[ray]'") from None
    gpu = cfg.device.startswith("cuda")
    uses_actors = cfg.filler == "mlm" and cfg.needs_filler
    if cfg.ray_address:
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=True)
    else:
        n_act = (cfg.ray_fillers or 1) if uses_actors and not gpu else 0
        ray.init(num_cpus=cfg.workers + n_act, include_dashboard=False, log_to_driver=True)
    try:
        actors = []
        if uses_actors:
            n = cfg.ray_fillers or (max(1, int(ray.cluster_resources().get("GPU", 0))) if gpu else 1)
            opts = {"num_gpus": cfg.ray_gpus_per_filler, "num_cpus": 1} if gpu else {"num_cpus": 1}
            actor_cls = ray.remote(_FillerActor).options(**opts)
            actors = [actor_cls.remote(cfg) for _ in range(n)]
            log.info("ray: %d masked-LM actor(s) on %s", n, "GPU" if gpu else "CPU")
        task = ray.remote(_ray_shard).options(num_cpus=1, max_retries=2)
        refs = {task.remote(job, cfg, actors[i % len(actors)] if actors else None): job
                for i, job in enumerate(jobs)}
        results = []
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for ref in ready:
                refs.pop(ref)
                res = ray.get(ref)  # setup errors propagate
                results.append(res)
                log_result(res)
                if res["status"] == "ok":
                    progress.add_captions(res["samples"])
                progress.shard_done(res["status"] == "ok")
        return results
    finally:
        ray.shutdown()
