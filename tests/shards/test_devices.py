"""make-shards on GPUs, without a GPU: the local engine's device assignment, the Ray engine's resource
arithmetic and actor routing (pure functions), and the fail-fast errors of jobs asking for GPUs that
are not there (both engines, before any shard is touched)."""

import json
import time

import pytest

from openclip_ce.errors import UserError
from openclip_ce.shards import command
from openclip_ce.shards.config import config_for
from openclip_ce.shards.devices import (FAKE_GPUS_ENV, assign_devices, filler_device, filler_devices, idle_gpus,
                                        parse_devices, visible_gpu_count)
from openclip_ce.shards.ray_pool import LeastBusy
from openclip_ce.shards.ray_resources import (FillerPlan, describe_missing, filler_plan, local_ray_resources,
                                              missing_resources)
from openclip_ce.testing.make_shards_runs import SPACY_MODEL, run_cli, write_caption_shards


# ----------------------------------------------------------------------------- local engine: assignment
def test_each_worker_feeds_a_gpu_round_robin():
    assert assign_devices("cuda", 4, visible=4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert assign_devices("cuda", 2, visible=8) == ["cuda:0", "cuda:1"]
    assert idle_gpus(["cuda:0", "cuda:1"], visible=8) == [2, 3, 4, 5, 6, 7]
    # workers hold no model: any number of them feed the GPUs' masked-LM processes, spread evenly
    assert assign_devices("cuda", 5, visible=2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert filler_devices(assign_devices("cuda", 16, visible=1)) == ["cuda:0"]  # one model for 16 workers
    assert filler_devices(assign_devices("cuda", 3, visible=8)) == ["cuda:0", "cuda:1", "cuda:2"]
    assert filler_devices(["cpu", "cpu"]) == []


def test_explicit_devices_and_cuda_index():
    assert assign_devices("cuda", 3, visible=4, devices=parse_devices("3,1,2")) == ["cuda:3", "cuda:1", "cuda:2"]
    assert idle_gpus(["cuda:3"], visible=4, devices=(3, 1)) == [1]
    assert assign_devices("cuda:2", 1, visible=4) == ["cuda:2"]
    assert assign_devices("cuda:2", 2, visible=4) == ["cuda:2", "cuda:2"]
    assert assign_devices("cpu", 3, visible=0) == ["cpu"] * 3


@pytest.mark.parametrize("device,workers,visible,devices,message", [
    ("cuda", 1, 0, None, "no CUDA GPU is visible"),
    ("cuda:1", 1, 1, None, "GPU 1 not visible; this machine has 1 GPU(s), 0..0"),
    ("cuda", 2, 4, (0, 5, 7), "GPU 5, 7 not visible"),
    ("cuda:0", 1, 2, (1,), "either as --device cuda:0 or as --devices"),
    ("cpu", 1, 2, (1,), "--devices needs --device cuda"),
])
def test_missing_gpus_are_refused(device, workers, visible, devices, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        assign_devices(device, workers, visible, devices)


def test_workers_per_gpu_is_gone_with_a_clear_message():
    with pytest.raises(UserError, match="--workers-per-gpu is gone: .* set --workers to the CPU cores"):
        config_for(["x.tar"], "out", device="cuda", workers_per_gpu=2)


def test_a_chosen_gpu_leaves_no_advice_to_raise_workers(monkeypatch, caplog):
    """--device cuda:1 on a 4-GPU node: the user picked one GPU; "raise --workers" would be refused."""
    monkeypatch.setenv(FAKE_GPUS_ENV, "4")
    for device, idle in (("cuda:1", None), ("cuda", "GPU(s) 1,2,3 get no worker")):
        caplog.clear()
        command.make_engine(config_for(["x.tar"], "out", device=device, filler_model="/m",
                                       spacy_model=SPACY_MODEL)).start()
        warned = [r.getMessage() for r in caplog.records if "get no worker" in r.getMessage()]
        assert warned == ([] if idle is None else [idle + "; raise --workers to use them"]), (device, warned)


def test_devices_flag_parsing():
    assert parse_devices(None) is None and parse_devices("") is None
    assert parse_devices("0, 2,3") == (0, 2, 3)
    for bad in ("a,b", "-1", "1,1"):
        with pytest.raises(UserError, match="--devices"):
            parse_devices(bad)


def test_test_hook_declares_gpus_and_keeps_the_filler_on_cpu(monkeypatch):
    monkeypatch.delenv(FAKE_GPUS_ENV, raising=False)
    assert filler_device("cuda:1") == "cuda:1"
    monkeypatch.setenv(FAKE_GPUS_ENV, "3")
    assert visible_gpu_count() == 3
    assert filler_device("cuda:1") == "cpu" and filler_device("cuda") == "cpu" and filler_device("cpu") == "cpu"


# ----------------------------------------------------------------------------- Ray: resources and routing
def _cfg(**kw):
    return config_for(["x.tar"], "out", engine="ray", **kw)


def _plan(cfg, gpus):
    """The Ray engine's actors for ``cfg`` on a cluster of ``gpus`` GPUs, from the values the engine gets."""
    engine = command.make_engine(cfg)
    return filler_plan(engine.options, engine.masked_lm is not None, gpus)


@pytest.mark.parametrize("gpus", [1, 2, 4])
@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_a_local_ray_always_has_room_for_the_actors_and_the_workers(gpus, workers):
    for kw in ({"device": "cuda"}, {"device": "cuda", "ray_gpus_per_filler": 0.5}, {"device": "cpu"},
               {"device": "cpu", "ray_fillers": 3}):
        plan = _plan(_cfg(workers=workers, **kw), gpus)
        res = local_ray_resources(workers, plan, gpus)
        have = {"CPU": res["num_cpus"], "GPU": res["num_gpus"]}
        assert missing_resources(plan.demand(), have) == {}, (kw, plan, res)
        assert res["num_cpus"] - plan.n * plan.cpus == workers  # every worker has a CPU beside the actors
        if kw["device"] == "cuda":
            assert plan.n == gpus / kw.get("ray_gpus_per_filler", 1) and res["num_gpus"] == gpus
    # the bug this replaces: CPUs = workers only, GPU actors holding one each -> no task could start
    plan = _plan(_cfg(workers=1, device="cuda"), 2)
    assert missing_resources(plan.demand(), {"CPU": 1, "GPU": 2}) == {"CPU": (3.0, 1)}


def test_filler_plan_on_a_cluster():
    with pytest.raises(UserError, match="no GPU resources"):
        _plan(_cfg(device="cuda"), 0)
    assert _plan(_cfg(device="cuda"), 8) == FillerPlan(8, 1.0)
    assert _plan(_cfg(device="cuda", ray_fillers=2), 8) == FillerPlan(2, 1.0)
    assert _plan(_cfg(device="cpu"), 8) == FillerPlan(1, 0.0)
    assert _plan(_cfg(device="cuda", filler="vocab"), 0).n == 0  # no masked LM, no GPU needed
    assert _plan(_cfg(device="cuda", types="rel"), 0).n == 0
    plan = _plan(_cfg(device="cuda", ray_fillers=4), 2)
    assert plan.bundles() == [{"CPU": 1.0, "GPU": 1.0}] * 4
    missing = missing_resources(plan.demand(), {"CPU": 16.0, "GPU": 2.0})
    assert describe_missing(missing, "the cluster has") == "GPU: needs 4, the cluster has 2"


def test_ray_flags_are_checked():
    with pytest.raises(UserError, match="--ray-gpus-per-filler"):
        _cfg(device="cuda", ray_gpus_per_filler=1.5)
    with pytest.raises(UserError, match="not --devices"):
        _cfg(device="cuda", devices="0,1")
    with pytest.raises(UserError, match="cuda:N"):
        _cfg(device="cuda:1")
    with pytest.raises(UserError, match="expected cpu, cuda, cuda:N or mps"):
        config_for(["x.tar"], "out", device="cuda1")


def test_least_busy_sends_work_to_an_idle_actor_not_by_index():
    pool = LeastBusy(3)
    first = pool.acquire()  # a long request holds actor 0
    assert first == 0
    # while it runs, every new request goes elsewhere; a static `index % n` would send one in three to 0
    for _ in range(6):
        i = pool.acquire()
        assert i != 0
        pool.release(i)
    assert pool.served == [0, 3, 3] and pool.in_flight == [1, 0, 0]
    pool.release(first)
    assert pool.acquire() == 0  # idle again and served least


# ----------------------------------------------------------------------------- fail fast, both engines
@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    write_caption_shards(root / "in", num_shards=2, per_shard=3)
    return root / "in"


def _no_shard_touched(out):
    files = sorted(p.name for p in out.rglob("*") if p.is_file()) if out.exists() else []
    assert files in ([], ["lock"]), files  # no shard, no partial, no config.json, no done record


@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_cuda_without_a_gpu_fails_fast_with_one_line(shards, tmp_path, engine, monkeypatch):
    if engine == "ray":
        pytest.importorskip("ray")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU, even on a machine that has one
    t0 = time.monotonic()
    proc = run_cli([shards], tmp_path / "out", "/nonexistent-model", "--device", "cuda", "--engine", engine,
                   timeout=120)
    assert time.monotonic() - t0 < 60  # no model load, no tagging: only start-up (slow on a loaded machine)
    errors = [l for l in proc.stderr.splitlines() if "error:" in l]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "no CUDA GPU is visible" in errors[0] and "Traceback" not in proc.stderr
    _no_shard_touched(tmp_path / "out")


@pytest.mark.parametrize("settings,message", [
    ({"device": "cuda", "devices": "0,3"}, "GPU 3 not visible; this machine has 2 GPU(s)"),
    pytest.param({"device": "cuda", "engine": "ray", "ray_fillers": 3}, "GPU: needs 3, this machine has 2",
                 marks=pytest.mark.ray),
])
def test_fewer_gpus_than_asked_fail_before_any_shard(shards, tmp_path, monkeypatch, settings, message):
    if settings.get("engine") == "ray":
        pytest.importorskip("ray")
    monkeypatch.setenv(FAKE_GPUS_ENV, "2")
    cfg = config_for([str(shards)], str(tmp_path / "out"), spacy_model=SPACY_MODEL,
                     filler_model="/nonexistent-model", **settings)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        command.run_config(cfg)
    _no_shard_touched(tmp_path / "out")


@pytest.mark.slow
def test_local_workers_feed_one_masked_lm_process_per_gpu(shards, tmp_path, monkeypatch):
    """Three spawned workers on two declared GPUs (--devices 1,0): one masked-LM process per GPU, each
    worker feeding the one it was assigned (logged), stats.json listing both processes and what they
    filled; the bytes equal a one-process CPU run."""
    from openclip_ce.testing.make_shards_runs import tiny_filler, tree_bytes

    model = tiny_filler(tmp_path, [])
    ref = run_cli([shards], tmp_path / "ref", model, "--types", "rel,obj", "--chunk-size", "2")
    assert ref.returncode == 0, ref.stderr[-3000:]
    monkeypatch.setenv(FAKE_GPUS_ENV, "2")
    proc = run_cli([shards], tmp_path / "out", model, "--types", "rel,obj", "--device", "cuda", "--workers", "3",
                   "--devices", "1,0", "--chunk-size", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "local engine: worker 0 -> cuda:1, worker 1 -> cuda:0, worker 2 -> cuda:1" in proc.stderr
    assert "one masked-LM process on each of cuda:1, cuda:0" in proc.stderr
    run = json.loads((tmp_path / "out" / "stats.json").read_text())["run"]
    detail, fillers = run["workers_detail"], run["fillers"]
    planned = {0: "cuda:1", 1: "cuda:0", 2: "cuda:1"}
    assert detail and sum(w["shards"] for w in detail) == 2
    for w in detail:
        assert w["device"] == planned[w["worker"]]
        assert f"worker {w['worker']} (pid " in proc.stderr
    assert [f["device"] for f in fillers] == ["cuda:1", "cuda:0"]
    assert sum(f["fills"] for f in fillers) == json.loads((tmp_path / "out" / "stats.json").read_text())[
        "throughput"]["fills"] > 0
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "ref")


@pytest.mark.slow
def test_a_masked_lm_process_that_dies_stops_the_run_in_one_line(tmp_path, monkeypatch):
    """A GPU process killed mid-run (the kernel's OOM killer, say) must not leave the workers waiting
    forever: the run stops within seconds with one line naming the device."""
    import os
    import re
    import signal
    import subprocess

    from openclip_ce.testing.make_shards_runs import env, make_shards_cmd, tiny_filler

    write_caption_shards(tmp_path / "in", num_shards=4, per_shard=150)
    model = tiny_filler(tmp_path, [])
    monkeypatch.setenv(FAKE_GPUS_ENV, "1")
    cmd = make_shards_cmd([tmp_path / "in"], tmp_path / "out", model, "--types", "obj", "--device", "cuda",
                          "--workers", "2", "--chunk-size", "4", "--batch-size", "2")
    p = subprocess.Popen(cmd, env=env(), stderr=subprocess.PIPE, text=True)
    seen = []
    for line in p.stderr:
        seen.append(line)
        m = re.search(r"masked-LM process 0 \(pid (\d+)\) on cuda:0: ready", line)
        if m:
            os.kill(int(m.group(1)), signal.SIGKILL)
            break
    t0 = time.monotonic()
    _, rest = p.communicate(timeout=120)
    err = "".join(seen) + rest
    assert p.returncode == 2 and time.monotonic() - t0 < 60, err[-3000:]
    assert "error: the masked-LM process on cuda:0 died (exit code -9;" in err and "Traceback" not in err, err[-3000:]
