"""make-shards across processes: worker counts, SIGKILL + resume, and the Ray engine (local Ray)."""

import json
import os
import signal
import subprocess
import time

import pytest

from openclip_ce.testing.make_shards_runs import env, make_shards_cmd, run_cli, tiny_filler, tree_bytes, write_caption_shards

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("par")
    model = tiny_filler(root, [])
    write_caption_shards(root / "in", num_shards=4, per_shard=25)
    ref = root / "ref"
    proc = run_cli([root / "in"], ref, model, "--workers", "1", "--chunk-size", "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, model, ref


def test_same_output_with_one_or_two_workers_and_other_batching(setup, tmp_path):
    root, model, ref = setup
    proc = run_cli([root / "in"], tmp_path / "w2", model, "--workers", "2", "--chunk-size", "7", "--batch-size", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree_bytes(tmp_path / "w2") == tree_bytes(ref)
    assert len(tree_bytes(ref)) == 4
    stats = json.loads((tmp_path / "w2" / "stats.json").read_text())
    assert stats["run"]["workers"] == 2 and stats["samples"] == 100


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path_factory, tmp_path):
    root = tmp_path_factory.mktemp("kill")
    model = tiny_filler(root, [])
    write_caption_shards(root / "in", num_shards=6, per_shard=120)
    # chunk-size 8 makes a shard take a while, so that the kill lands between shards
    args = ("--workers", "1", "--chunk-size", "8", "--batch-size", "8")
    ref = tmp_path / "ref"
    proc = run_cli([root / "in"], ref, model, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]

    out = tmp_path / "out"
    p = subprocess.Popen(make_shards_cmd([root / "in"], out, model, *args), env=env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    partial_seen = False
    while time.time() < deadline and p.poll() is None:
        done = [f for f in out.glob("*.tar")] if out.exists() else []
        partial = list(out.glob(".*.partial-*")) if out.exists() else []
        if done and len(done) < 6 and partial:
            partial_seen = True
            break
        time.sleep(0.02)
    assert p.poll() is None, "make-shards finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    p.stderr.close()
    assert partial_seen
    n_done = len(list(out.glob("*.tar")))
    assert 1 <= n_done < 6 and list(out.glob(".*.partial-*"))  # a half-written shard is left under a temp name

    proc = run_cli([root / "in"], out, model, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(out.glob(".*.partial-*"))
    assert tree_bytes(out) == tree_bytes(ref)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["shards"]["skipped_complete"] == n_done and stats["samples"] == 720
    assert stats["negatives"] == json.loads((ref / "stats.json").read_text())["negatives"]


@pytest.mark.ray
def test_ray_engine_on_a_local_ray_matches_local_output(setup, tmp_path):
    pytest.importorskip("ray")
    root, model, ref = setup
    proc = run_cli([root / "in"], tmp_path / "ray", model, "--engine", "ray", "--workers", "2",
                   "--chunk-size", "16", timeout=400)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "masked-LM actor" in proc.stderr
    assert tree_bytes(tmp_path / "ray") == tree_bytes(ref)
    stats = json.loads((tmp_path / "ray" / "stats.json").read_text())
    assert stats["run"]["engine"] == "ray" and stats["shards"]["written_this_run"] == 4 and stats["samples"] == 100
