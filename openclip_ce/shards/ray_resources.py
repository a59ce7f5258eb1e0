"""What the Ray engine asks of a cluster, and whether the cluster has it (pure functions, no Ray needed).

Why: a Ray job whose actors hold every CPU, or whose actors wait for GPUs that do not exist, does
not fail: it waits forever. So the demand is computed up front, in one place, and checked against
the cluster (or used to size a Ray started locally) before anything is scheduled:

* each masked-LM actor holds :data:`ACTOR_CPUS` CPU (it tokenizes and feeds the model) and, with
  ``--device cuda``, ``--ray-gpus-per-filler`` GPU, for the whole job;
* each shard task holds :data:`TASK_CPUS` CPU while it runs; at least one must fit beside the actors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..errors import UserError
from .devices import is_cuda

ACTOR_CPUS = 1.0
TASK_CPUS = 1.0


@dataclass(frozen=True)
class RayOptions:
    """The Ray engine's settings: ``--ray-address``, ``--workers``, ``--device``, ``--ray-fillers``,
    ``--ray-gpus-per-filler``, ``--ray-placement-timeout``."""

    address: Optional[str]
    workers: int
    device: str
    fillers: int
    gpus_per_filler: float
    placement_timeout: float


@dataclass(frozen=True)
class FillerPlan:
    """``n`` masked-LM actors, each holding ``cpus`` CPU and ``gpus`` GPU."""

    n: int
    gpus: float
    cpus: float = ACTOR_CPUS

    def bundles(self) -> List[Dict[str, float]]:
        """One Ray placement-group bundle per actor (its CPU and GPU on one node)."""
        b = {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus else {})}
        return [dict(b) for _ in range(self.n)]

    def demand(self, with_task: bool = True) -> Dict[str, float]:
        """Everything the job needs at once: the actors plus (``with_task``) one shard task."""
        d = {"CPU": self.n * self.cpus + (TASK_CPUS if with_task else 0.0)}
        if self.gpus:
            d["GPU"] = self.n * self.gpus
        return d


def filler_plan(options: RayOptions, masked_lm: bool, gpus_total: float) -> FillerPlan:
    """The actors of a run (none without a ``masked_lm``) on a cluster with ``gpus_total`` GPUs
    (``--ray-fillers 0``: one per GPU share with ``--device cuda``, one CPU actor otherwise)."""
    if not masked_lm:
        return FillerPlan(0, 0.0, 0.0)
    if not is_cuda(options.device):
        return FillerPlan(options.fillers or 1, 0.0)
    if gpus_total <= 0:
        raise UserError("--engine ray --device cuda: the Ray cluster has no GPU resources (no GPU node joined, "
                        "or its GPUs were not declared); start GPU nodes, or use --device cpu")
    per = options.gpus_per_filler
    n = options.fillers or max(1, int(gpus_total / per + 1e-9))
    return FillerPlan(n, per)


def local_ray_resources(workers: int, plan: FillerPlan, visible_gpus: int) -> Dict[str, float]:
    """``ray.init`` resources for a Ray this job starts itself: ``workers`` shard-task slots on top of
    the actors' CPUs (the actors' CPUs were once forgotten, and no task could ever start), and the
    GPUs this machine has (declared, so that Ray needs no detection and the test hook works)."""
    return {"num_cpus": workers * TASK_CPUS + plan.n * plan.cpus,
            "num_gpus": visible_gpus if plan.gpus else 0}


def missing_resources(demand: Dict[str, float], have: Dict[str, float]) -> Dict[str, Tuple[float, float]]:
    """``{resource: (needed, available)}`` for every resource ``have`` lacks."""
    return {k: (v, have.get(k, 0.0)) for k, v in sorted(demand.items()) if have.get(k, 0.0) + 1e-9 < v}


def _num(x: float) -> str:
    return f"{x:g}"


def describe_missing(missing: Dict[str, Tuple[float, float]], have_word: str = "has") -> str:
    return "; ".join(f"{k}: needs {_num(need)}, {have_word} {_num(got)}" for k, (need, got) in missing.items())


def describe_plan(plan: FillerPlan) -> str:
    res = f"CPU {_num(plan.cpus)}" + (f", GPU {_num(plan.gpus)}" if plan.gpus else "")
    return f"{plan.n} masked-LM actor(s) x ({res}) + {_num(TASK_CPUS)} CPU for shard tasks"
