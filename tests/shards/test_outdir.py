"""The output directory under crashes and concurrent runs: a shard's ``done`` record comes after its
rename (an interrupted --overwrite never leaves an old shard counted complete), and one run per --out."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from openclip_ce.errors import UserError
from openclip_ce.shards import command, tario
from openclip_ce.shards.config import config_for
from openclip_ce.shards.outlock import OutputLock
from openclip_ce.shards.plan import ShardJob, is_complete, sidecar_path
from openclip_ce.testing.make_shards_runs import REPO, SPACY_MODEL, env, make_shards_cmd, run_cli, tree_bytes, write_caption_shards


class Crash(BaseException):
    """Stands for the process dying at that point (not an Exception: nothing may catch it as a bad shard)."""


def _cfg(inp, out, **kw):
    return config_for([str(inp)], str(out), types="rel", spacy_model=SPACY_MODEL, chunk_size=4, **kw)


@pytest.mark.parametrize("when", ["before_rename", "after_rename"])
def test_crash_around_the_rename_never_leaves_a_shard_counted_complete_wrongly(tmp_path, monkeypatch, when):
    inp, out, clean = tmp_path / "in", tmp_path / "out", tmp_path / "clean"
    write_caption_shards(inp, num_shards=1, per_shard=8)
    assert command.run_config(_cfg(inp, out, seed=0)) == 0
    assert command.run_config(_cfg(inp, clean, seed=1)) == 0
    old, new = (out / "00000.tar").read_bytes(), (clean / "00000.tar").read_bytes()
    assert old != new  # the seeds make different shards, so a stale one would show

    commit = tario.ShardWriter.commit

    def crashing_commit(self):
        if when == "after_rename":
            commit(self)
        raise Crash()

    monkeypatch.setattr(tario.ShardWriter, "commit", crashing_commit)
    with pytest.raises(Crash):
        command.run_config(_cfg(inp, out, seed=1, overwrite=True))
    monkeypatch.undo()
    job = ShardJob(str(inp / "00000.tar"), "00000.tar", str(out / "00000.tar"), sidecar_path(str(out), "00000.tar"))
    assert (out / "00000.tar").read_bytes() == (old if when == "before_rename" else new)
    assert not os.path.exists(sidecar_path(str(out), "00000.tar")) and not is_complete(str(out), job)

    assert command.run_config(_cfg(inp, out, seed=1)) == 0  # the plain rerun redoes it
    assert tree_bytes(out) == tree_bytes(clean)
    assert json.loads((out / "stats.json").read_text())["shards"]["written_this_run"] == 1


_HOLD = "import sys, time; from openclip_ce.shards.outlock import OutputLock; OutputLock(sys.argv[1]).__enter__(); " \
        "print('locked', flush=True); time.sleep(120)"


def test_the_lock_refuses_a_second_run_and_dies_with_its_holder(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, env=env(), cwd=str(REPO))
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(UserError, match=rf"--out {out} is in use by another make-shards run \(pid {holder.pid} on "):
            with OutputLock(str(out)):
                pass
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs, the kernel drops the lock
        holder.wait()
        holder.stdout.close()
    with OutputLock(str(out)):
        assert json.loads((out / ".make-shards" / "lock").read_text())["pid"] == os.getpid()


@pytest.mark.slow
def test_a_concurrent_run_on_the_same_out_is_refused_and_leaves_the_first_alone(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_caption_shards(inp, num_shards=2, per_shard=200)
    args = ("--types", "rel", "--chunk-size", "4")
    first = subprocess.Popen(make_shards_cmd([inp], out, "/unused-model", *args), env=env(), cwd=str(REPO),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = []
    deadline = time.time() + 120
    try:
        while not partial and time.time() < deadline and first.poll() is None:
            if list(out.glob(".*.partial-*")):
                os.kill(first.pid, signal.SIGSTOP)  # frozen mid-shard, lock held, partial file open
                partial = list(out.glob(".*.partial-*"))
                if not partial:
                    os.kill(first.pid, signal.SIGCONT)
            time.sleep(0.01)
        assert partial, "the first run never showed a partial file"
        second = run_cli([inp], out, "/unused-model", *args, timeout=120)
        errors = [l for l in second.stderr.splitlines() if "error:" in l]
        assert second.returncode == 2 and len(errors) == 1, second.stderr[-2000:]
        assert f"is in use by another make-shards run (pid {first.pid} on" in errors[0]
        assert all(p.exists() for p in partial)  # the live run's partial file was not taken for a stale one
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples"] == 400 and stats["shards"]["written_this_run"] == 2
    assert not list(out.glob(".*.partial-*"))
