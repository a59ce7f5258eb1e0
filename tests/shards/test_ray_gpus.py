"""The Ray engine with GPUs declared on a CPU machine (test hook ``OPENCLIP_CE_FAKE_GPUS``: Ray gets
``num_gpus=N``, the masked LMs run on the CPU): one actor placed per declared GPU, no deadlock for 1, 2
and 4 GPUs x ``--workers`` 1..4 (each run under a time limit), output byte-identical to the local
engine, least-busy routing, and clusters that cannot place the actors failing in seconds.

Cost: one local Ray per GPU count, started by the engine itself in its tightest configuration
(``--workers 1``: one task CPU beside the actors, where the old engine deadlocked) and reused by the
four ``--workers`` runs, so each actor loads its model once; shards of a few captions.
"""

import threading
import time

import pytest

from openclip_ce.errors import UserError
from openclip_ce.shards import command
from openclip_ce.shards.config import config_for
from openclip_ce.shards.devices import FAKE_GPUS_ENV
from openclip_ce.shards.plan import plan_jobs
from openclip_ce.shards.progress import Progress
from openclip_ce.shards.setup import run_setup
from openclip_ce.testing.make_shards_runs import SPACY_MODEL, tiny_filler, tree_bytes, write_caption_shards

ray = pytest.importorskip("ray")
from openclip_ce.shards.ray_pool import FillerRouter  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]

RUN_LIMIT_S = 120  # one run of 4 tiny shards takes seconds; a deadlock never ends


def _cfg(data, out, **kw):
    root, model, _ = data
    return config_for([str(root / "in")], str(out), spacy_model=SPACY_MODEL, filler_model=model,
                      types="rel,obj", chunk_size=4, **kw)


def _within(limit, fn):
    """``fn()``, or a test failure after ``limit`` seconds (the thread is left to die with the Ray)."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        pytest.fail(f"no result after {limit} s: the run is stuck (deadlock)")
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("raygpu")
    model = tiny_filler(root, [])
    write_caption_shards(root / "in", num_shards=4, per_shard=3)
    cfg = config_for([str(root / "in")], str(root / "ref"), spacy_model=SPACY_MODEL, filler_model=model,
                     types="rel,obj", chunk_size=4)
    assert command.run_config(cfg) == 0  # the local engine's output, the reference
    return root, model, tree_bytes(root / "ref")


@pytest.fixture(scope="module", params=[1, 2, 4], ids=lambda g: f"{g}gpu")
def cluster(request, data):
    gpus = request.param
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FAKE_GPUS_ENV, str(gpus))  # inherited by the Ray the engine starts, hence its workers
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        mp.setenv("RAY_prestart_worker_first_driver", "0")  # CI's CPU: no idle workers started in advance
        mp.delenv("RAY_ADDRESS", raising=False)
        assert not ray.is_initialized()
        engine = command.make_engine(_cfg(data, data[0] / "unused", engine="ray", device="cuda", workers=1))
        engine.start()
        try:
            yield gpus, engine
        finally:
            engine.close()
    assert not ray.is_initialized()


def test_one_actor_per_declared_gpu_and_a_cpu_left_for_tasks(cluster):
    gpus, engine = cluster
    assert engine.owns_ray
    total = ray.cluster_resources()
    assert total["GPU"] == gpus and total["CPU"] == gpus + 1  # actors' CPUs counted on top of --workers 1
    placed = ray.get([a.stats.remote() for a in engine.actors])
    assert sorted(g for s in placed for g in s["gpu_ids"]) == [str(i) for i in range(gpus)]
    free = ray.available_resources()
    assert free.get("GPU", 0) == 0 and free.get("CPU", 0) == 1


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_no_deadlock_and_the_local_engines_bytes(cluster, data, workers, tmp_path):
    gpus, engine = cluster
    cfg = _cfg(data, tmp_path / "out", device="cuda", workers=workers)
    jobs = plan_jobs(cfg.inputs, cfg.out)
    served_before = ray.get(engine.router.served.remote())
    t0 = time.monotonic()
    setup = run_setup(cfg, jobs, 1, {"ops": "blis", "chosen_by": "--tagging-ops"})
    results = _within(RUN_LIMIT_S, lambda: engine.run(jobs, setup, Progress(len(jobs), False, 1e9)))
    assert [r["status"] for r in results] == ["ok"] * 4, results
    assert tree_bytes(tmp_path / "out") == data[2]
    served = [a - b for a, b in zip(ray.get(engine.router.served.remote()), served_before)]
    assert sum(served) == 4  # one chunk per shard, each through the router
    assert sum(1 for s in served if s) == min(gpus, 4)  # spread over the actors, none left idle
    print(f"{gpus} GPU(s), --workers {workers}: {time.monotonic() - t0:.1f} s, requests per actor {served}")


def test_a_cluster_too_small_fails_at_once_naming_what_is_missing(cluster, data, tmp_path):
    gpus, _ = cluster
    engine = command.make_engine(_cfg(data, tmp_path, engine="ray", device="cuda", ray_fillers=gpus + 1))
    t0 = time.monotonic()
    with pytest.raises(UserError, match=f"GPU: needs {gpus + 1}, the cluster has {gpus}"):
        engine.start()
    assert time.monotonic() - t0 < 10 and ray.is_initialized()  # the caller's Ray is left running


def test_busy_gpus_fail_within_the_placement_timeout(cluster, data, tmp_path):
    gpus, _ = cluster  # the fixture's actors hold every GPU
    engine = command.make_engine(_cfg(data, tmp_path, engine="ray", device="cuda", ray_placement_timeout=2))
    t0 = time.monotonic()
    with pytest.raises(UserError, match=rf"could not place {gpus} masked-LM actor\(s\) within 2 s \(.*GPU: needs "
                                        rf"{gpus}, free 0"):
        engine.start()
    assert time.monotonic() - t0 < 20
    assert ray.available_resources().get("GPU", 0) == 0 and not engine.actors


@pytest.mark.parametrize("cluster", [1], indirect=True, ids=["1gpu"])  # once is enough: it needs no GPU
def test_the_router_sends_chunks_to_an_idle_actor(cluster):

    class Echo:  # defined here so that Ray ships it by value; "slow" holds its request until released
        def __init__(self, name, hold):
            self.name, self.hold, self.gate = name, hold, None

        async def fill(self, requests):
            import asyncio

            if self.hold:
                self.gate = self.gate or asyncio.Event()
                await self.gate.wait()
            return [[self.name]] * len(requests)

        async def release(self):
            import asyncio

            self.gate = self.gate or asyncio.Event()
            self.gate.set()

    echo = ray.remote(num_cpus=0)(Echo)
    slow = echo.remote("slow", True)
    router = ray.remote(FillerRouter).options(num_cpus=0).remote([slow, echo.remote("fast", False)])
    first = router.fill.remote(["a"])  # holds actor 0 until released
    deadline = time.monotonic() + 60  # a loaded machine may take a while to start the actors
    while ray.get(router.in_flight.remote()) != [1, 0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ray.get(router.in_flight.remote()) == [1, 0], "the held request never reached the slow actor"
    later = [ray.get(router.fill.remote(["b"])) for _ in range(6)]
    assert later == [[["fast"]]] * 6  # static `i % n` routing would have queued 3 of them behind "slow"
    ray.get(slow.release.remote())
    assert ray.get(first) == [["slow"]] and ray.get(router.served.remote()) == [1, 6]
