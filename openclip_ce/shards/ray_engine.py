"""The Ray engine: shards as Ray tasks across a cluster (or a Ray it starts on this machine); masked LMs as
Ray actors behind a least-busy router (:mod:`.ray_pool`).

Why it is built this way (each point was a hang or an idle GPU before):

* Resources are computed before anything is scheduled (:mod:`.ray_resources`). A Ray started here
  gets ``--workers`` task CPUs *on top of* the actors' CPUs, and the GPUs this machine has.
* On a cluster, the demand is checked against its totals at once, and the actors are placed as one
  placement group that must be ready within ``--ray-placement-timeout`` seconds; otherwise a one-line
  error names the resources missing. No shard task is submitted before every actor has loaded its
  model, so a task can never hold a CPU while waiting for an actor that cannot start.
* At most ``--workers`` shard tasks are in flight; each chunk of each task goes to the least-busy actor.

A Ray this process had already joined (``ray.init`` by the caller, as tests and notebooks do) is used
as the cluster and left running; a Ray this engine started is shut down at the end.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import socket
from typing import Dict, List, Optional, Sequence

from ..errors import UserError
from ..generation import GenerationSetupError
from .devices import FAKE_GPUS_ENV, fake_gpus, is_cuda, no_gpu_message, visible_gpu_count
from .plan import ShardJob
from .process import log_result, run_job
from .progress import Progress
from .ray_pool import FillerActor, FillerRouter, bind_router, remote_filler
from .ray_resources import (TASK_CPUS, FillerPlan, RayOptions, describe_missing, describe_plan, filler_plan,
                            local_ray_resources, missing_resources)
from .setup import MaskedLM, RunSetup, build_generator
from .stats import workers_summary

log = logging.getLogger(__name__)


class RayEngine:
    """``start()`` joins or starts Ray and places the masked-LM actors (or fails in seconds, naming what
    is missing); ``run()`` streams shard tasks; ``close()`` releases what ``start()`` took."""

    name = "ray"

    def __init__(self, options: RayOptions, masked_lm: Optional[MaskedLM]):
        """``masked_lm``: the run's masked LM, each actor's (None: the run needs none, no actor)."""
        if importlib.util.find_spec("ray") is None:  # checked here, imported where used (heavy)
            raise UserError("--engine ray needs Ray: pip install 'openclip-ce[ray]'")
        self.options = options
        self.masked_lm = masked_lm
        self.owns_ray = False
        self.where = ""
        self.plan: Optional[FillerPlan] = None
        self.pg = None
        self.actors: List = []
        self.router = None

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        try:
            self._connect()
            self._place_fillers()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> None:
        import ray

        opts = self.options
        address = opts.address or os.environ.get("RAY_ADDRESS")
        if ray.is_initialized():
            self.where = "the Ray cluster this process joined"
            return
        if address:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=True)
            except (ConnectionError, RuntimeError) as e:
                raise UserError(f"cannot join the Ray cluster at {address!r}: {str(e).splitlines()[0]}") from None
            self.where = f"the Ray cluster at {address}"
            return
        gpu = is_cuda(opts.device) and self.masked_lm is not None
        visible = visible_gpu_count() if gpu else 0
        if gpu and visible < 1:
            raise UserError(no_gpu_message("--engine ray --device cuda"))
        plan = filler_plan(opts, self.masked_lm is not None, visible)
        res = local_ray_resources(opts.workers, plan, visible)
        missing = missing_resources(plan.demand(), {"CPU": res["num_cpus"], "GPU": res["num_gpus"]})
        if missing:
            raise UserError(f"--engine ray on this machine: {describe_plan(plan)} do not fit "
                            f"({describe_missing(missing, 'this machine has')}); lower --ray-fillers")
        if gpu and fake_gpus() is not None:
            log.warning("%s is set (test hook): %d GPU(s) declared to Ray, the masked LMs run on the CPU",
                        FAKE_GPUS_ENV, visible)
        ray.init(**res, include_dashboard=False, log_to_driver=True)
        self.owns_ray = True
        self.where = f"a local Ray ({res['num_cpus']:g} CPU, {res['num_gpus']:g} GPU)"

    def _place_fillers(self) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        opts = self.options
        totals = ray.cluster_resources()
        self.plan = plan = filler_plan(opts, self.masked_lm is not None, totals.get("GPU", 0.0))
        missing = missing_resources(plan.demand(), totals)
        if missing:
            raise UserError(f"{self.where} is too small for this job: {describe_plan(plan)} "
                            f"({describe_missing(missing, 'the cluster has')}); add nodes, or lower --ray-fillers")
        free_cpu = totals.get("CPU", 0.0) - plan.n * plan.cpus
        log.info("ray: %s; up to %d shard task(s) in flight (--workers), %g CPU for them", self.where,
                 opts.workers, free_cpu)
        if plan.n == 0:
            return
        self.pg = placement_group(plan.bundles(), strategy="PACK")
        if not self.pg.wait(timeout_seconds=opts.placement_timeout):
            free = ray.available_resources()
            short = missing_resources(plan.demand(with_task=False), free)
            why = (describe_missing(short, "free") if short else
                   "enough free in total, but no node has one actor's CPU and GPU free together")
            raise UserError(f"{self.where} could not place {plan.n} masked-LM actor(s) within "
                            f"{opts.placement_timeout:g} s ({why}); other jobs may hold them: free them, "
                            f"raise --ray-placement-timeout, or lower --ray-fillers")
        actor_cls = ray.remote(FillerActor)
        self.actors = [actor_cls.options(
            num_cpus=plan.cpus, num_gpus=plan.gpus, scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=self.pg, placement_group_bundle_index=i)).remote(self.masked_lm, i)
            for i in range(plan.n)]
        try:
            errors = ray.get([a.ready.remote() for a in self.actors])
        except ray.exceptions.RayActorError as e:
            raise UserError(f"a masked-LM actor died while loading {self.masked_lm.model!r}: "
                            f"{str(e).strip().splitlines()[0]}") from None
        bad = [e for e in errors if e]
        if bad:
            raise GenerationSetupError(bad[0])
        self.router = ray.remote(FillerRouter).options(num_cpus=0).remote(self.actors)
        placed = ray.get([a.stats.remote() for a in self.actors])
        log.info("ray: %d masked-LM actor(s) ready on %s: %s", plan.n, "GPU" if plan.gpus else "CPU",
                 ", ".join(f"actor {s['actor']} -> {s['node']} {'GPU ' + ','.join(s['gpu_ids']) if s['gpu_ids'] else s['device']}"
                           for s in placed))

    # ------------------------------------------------------------------ run
    def run(self, jobs: Sequence[ShardJob], setup: RunSetup, progress: Progress) -> List[Dict]:
        import ray

        task = ray.remote(_ray_shard).options(num_cpus=TASK_CPUS, max_retries=2)
        setup_ref = ray.put(setup)  # one copy in the object store, not one per task (it may hold a vocabulary)
        queue = list(reversed(jobs))
        in_flight: Dict = {}
        results: List[Dict] = []
        while queue or in_flight:
            while queue and len(in_flight) < self.options.workers:
                job = queue.pop()
                in_flight[task.remote(job, setup_ref, self.router)] = job
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                in_flight.pop(ref)
                res = _result(ref)
                results.append(res)
                log_result(res)
                if res["status"] == "ok":
                    progress.add_captions(res["samples"])
                progress.shard_done(res["status"] == "ok")
        return results

    def describe(self, results: Sequence[Dict]) -> Dict[str, object]:
        """``workers_detail`` (shard tasks' processes) and ``fillers`` (each actor: node, GPU, requests
        served, peak GPU memory) for ``stats.json``."""
        import ray

        out: Dict[str, object] = {"workers_detail": workers_summary(results)}
        if self.actors:
            try:
                out["fillers"] = ray.get([a.stats.remote() for a in self.actors], timeout=30)
            except Exception as e:  # noqa: BLE001 - statistics must not fail a finished run
                log.warning("ray: could not read the masked-LM actors' statistics (%s)", e)
        return out

    def close(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        for a in self.actors + ([self.router] if self.router is not None else []):
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors, self.router = [], None
        if self.pg is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.pg)
            self.pg = None
        if self.owns_ray:
            ray.shutdown()
            self.owns_ray = False


def _result(ref) -> Dict:
    """A task's result; a setup error inside it (spaCy model missing) is raised as its own one-line error."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, UserError):
            raise e.cause from None
        raise


_TASK_GEN: Dict[str, object] = {}


def _generator_key(setup: RunSetup, remote: bool) -> str:
    """A task process keeps its generator between tasks of the same setup (loading spaCy per shard
    would dominate); anything that changes the generator changes this key."""
    return json.dumps([dataclasses.asdict(setup), remote], sort_keys=True, default=str)


def _ray_shard(job: ShardJob, setup: RunSetup, router) -> Dict:
    key = _generator_key(setup, router is not None)
    gen = _TASK_GEN.get(key)
    if gen is None:
        _TASK_GEN.clear()
        gen = _TASK_GEN[key] = build_generator(
            setup, filler=remote_filler(setup.masked_lm, router) if router is not None else None)
    if router is not None:
        bind_router(gen.filler, router)
    res = run_job(job, gen, setup.captions, setup.chunk_size, lambda n: None)
    res["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return res
