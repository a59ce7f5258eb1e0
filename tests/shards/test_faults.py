"""make-shards under the faults a LAION-scale run meets: duplicate keys, members that would be unpickled,
an empty --filler vocab vocabulary, a full disk, a worker killed by SIGKILL; atomic writes without os.umask."""

import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import tarfile
import time

import pytest

from openclip_ce.errors import UserError
from openclip_ce.fileio import write_json_atomic
from openclip_ce.negatives import decode_negatives
from openclip_ce.pickled import PICKLED_EXTENSIONS, is_pickled
from openclip_ce.shards.config import config_for
from openclip_ce.shards.plan import plan_jobs, record_settings
from openclip_ce.shards.setup import vocabulary
from openclip_ce.shards.tario import member_ext, read_samples
from openclip_ce.testing.toy_shards import Opens
from openclip_ce.testing.make_shards_runs import (REPO, SPACY_MODEL, env, jpeg, make_shards_cmd, read_tar, run_cli, write_caption_shards,
                                write_tar)

pytestmark = pytest.mark.slow

NO_MODEL = "/nonexistent-model"  # --types rel and --filler vocab need no masked LM


def _tar(path, entries):
    """entries: (name, bytes) regular files, or (name, None) for a directory entry; in this order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _open_clip_samples(path):
    """The samples open_clip's own webdataset reader (group_by_keys_nothrow) makes of a tar."""
    from open_clip_train.data import tarfile_to_samples_nothrow

    return list(tarfile_to_samples_nothrow([{"url": str(path)}]))


# ----------------------------------------------------------------------------- duplicate keys
def test_reader_splits_samples_exactly_where_open_clip_does(tmp_path):
    shard = tmp_path / "tricky.tar"
    _tar(shard, [("a.jpg", b"1"), ("a.txt", b"2"), ("a.jpg", b"3"), ("a.TXT", b"4"), ("a.json", b"5"),
                 ("a/", None), ("b.jpg", b"6"), ("__meta__", b"m"), ("b.txt", b"7"), ("noext", b"8"),
                 ("b.Jpg", b"9"), ("d/.hidden.txt", b"10"), ("e.seg.txt", b"11"), ("e.seg.txt", b"12")])
    ours = [(k, {member_ext(m): m.data for m in ms if member_ext(m)}) for k, ms in read_samples(str(shard))
            if k is not None]
    theirs = [(s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")}) for s in _open_clip_samples(shard)]
    assert ours == theirs
    assert [k for k, _ in ours] == ["a", "a", "b", "b", "d/", "e", "e"]
    # every member, keyed or not, still comes out once, in file order (what make-shards copies)
    names = [m.name for _, ms in read_samples(str(shard)) for m in ms]
    assert names == [m.name for m in tarfile.open(shard).getmembers()]


def test_duplicate_keys_get_their_own_negatives_and_pickled_members_are_reported(tmp_path):
    first, second = "a dog chasing a ball in the park", "a woman holding an umbrella near a car"
    payload = pickle.dumps(Opens(tmp_path / "ran"))
    write_tar(tmp_path / "in" / "dup.tar", [
        ("k1.jpg", jpeg(1)), ("k1.txt", b"a man riding a horse on the beach"),
        ("k3.jpg", jpeg(2)), ("k3.txt", first.encode()), ("k3.jpg", jpeg(3)), ("k3.txt", second.encode()),
        ("k4.jpg", jpeg(4)), ("k4.txt", b"a cat sitting on a wooden table"), ("k4.pyd", payload)])
    proc = run_cli([tmp_path / "in"], tmp_path / "out", NO_MODEL, "--types", "rel")
    assert proc.returncode == 0, proc.stderr[-3000:]

    samples = _open_clip_samples(tmp_path / "out" / "dup.tar")  # as the trainer will read it
    assert [s["__key__"] for s in samples] == ["k1", "k3", "k3", "k4"]
    for s in samples:  # each caption trains with negatives made from it: rel swaps two of its own words
        rel = decode_negatives(s["neg.json"])["rel"]
        assert rel and sorted(rel.split()) == sorted(s["txt"].decode().split()) and rel != s["txt"].decode()
    assert {s["txt"].decode() for s in samples[1:3]} == {first, second}

    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["samples"] == 4
    assert stats["problems"] == {"duplicate_key": 1, "pickled_member": 1}
    assert {(e["key"], e["kind"]) for e in stats["problem_examples"]} == {("k3", "duplicate_key"),
                                                                          ("k4", "pickled_member")}
    assert "1 member(s) that webdataset's decoders unpickle" in proc.stderr and "'k4'" in proc.stderr
    # copied through byte for byte, never unpickled by make-shards
    assert dict(read_tar(tmp_path / "out" / "dup.tar"))["k4.pyd"] == payload
    assert not (tmp_path / "ran").exists()


# ----------------------------------------------------------------------------- pickled members
@pytest.mark.filterwarnings("ignore:Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
def test_every_webdataset_decoder_that_unpickles_is_in_the_dropped_set(tmp_path, monkeypatch):
    """A webdataset upgrade that adds an unpickling decoder fails here until PICKLED_EXTENSIONS names it."""
    from webdataset import autodecode

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch.load as an old torch does it
    ran = []
    for ext, decode in autodecode.decoders.items():
        marker = tmp_path / f"ran-{ext}"
        try:
            decode(pickle.dumps(Opens(marker)))
        except Exception:  # noqa: BLE001 - most decoders reject a pickle: that is the point
            pass
        if marker.exists():
            ran.append(ext)
    assert {"pyd", "pickle"} <= set(ran)  # the probe works
    missing = set(ran) - PICKLED_EXTENSIONS
    assert not missing, f"webdataset decoders that unpickle, not in PICKLED_EXTENSIONS: {missing}"
    assert all(is_pickled(e) for e in ("pyd", "PICKLE", "pth", "x.pyd", "pyd.gz", "pth.gz.gz"))
    assert not any(is_pickled(e) for e in ("txt", "json", "gz", "npy", "jpg.gz", "pthx"))


# ----------------------------------------------------------------------------- --filler vocab
def test_an_empty_vocabulary_is_never_written_nor_reused(tmp_path):
    vocab = ("--filler", "vocab", "--workers", "1")
    inputs = [tmp_path / "in" / "00000.tar", tmp_path / "in" / "00001.tar"]
    out = tmp_path / "out"
    proc = run_cli(inputs, out, NO_MODEL, *vocab)  # the inputs are not there yet
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.search(r"error: --filler vocab: the vocabulary is empty: no caption could be read \(2 shard\(s\) "
                     r"unreadable, first: \S+00000\.tar\)", last), last
    assert not (out / ".make-shards" / "vocab.json").exists()
    # "nothing was written": nor its settings, which would refuse the next run's others for shards never made
    assert not (out / ".make-shards" / "config.json").exists()

    (out / ".make-shards" / "vocab.json").write_text("{}\n")  # as an older version left it
    write_caption_shards(tmp_path / "in", num_shards=2, per_shard=30)
    proc = run_cli(inputs, out, NO_MODEL, *vocab, "--seed", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the stored vocabulary is empty and no shard was completed with it: building it again" in proc.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["coverage"]["obj"] > 0.9 and stats["coverage"]["att"] > 0.3
    assert json.loads((out / ".make-shards" / "vocab.json").read_text())["NN"]

    # an empty stored vocabulary that completed shards were made with: refused, --overwrite named
    (out / ".make-shards" / "vocab.json").write_text("{}\n")
    cfg = config_for(list(map(str, inputs)), str(out), filler="vocab", spacy_model=SPACY_MODEL)
    with pytest.raises(UserError, match=r"vocab\.json: the stored --filler vocab vocabulary is empty, and 2 "
                                        r"shard\(s\) were completed with it .*rerun with --overwrite"):
        vocabulary(plan_jobs(cfg.inputs, cfg.out), cfg, "blis")


# ----------------------------------------------------------------------------- full disk
def _in_small_tmpfs(mount, size, script):
    """Run ``script`` (sh) with a tmpfs of ``size`` mounted at ``mount``, in a private mount namespace
    (root: ``unshare --mount``; otherwise a user namespace). Skips where neither is allowed."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount a small tmpfs")
    mount.mkdir(parents=True, exist_ok=True)
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]
    probe = subprocess.run(["unshare", *userns, "--mount", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {mount}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {probe.stderr.strip()}")
    return subprocess.run(["unshare", *userns, "--mount", "sh", "-c",
                           f"mount -t tmpfs -o size={size} tmpfs {mount} && {script}"],
                          capture_output=True, text=True, timeout=300, env=env(), cwd=str(REPO))


def test_a_full_disk_stops_the_run_with_one_line_and_leaves_no_partial_file(tmp_path):
    write_caption_shards(tmp_path / "in", num_shards=3, per_shard=40)  # 150 KiB per shard
    disk = tmp_path / "disk"
    out = disk / "out"
    cmd = " ".join(map(str, make_shards_cmd([tmp_path / "in"], out, NO_MODEL, "--types", "rel")))
    again = " ".join(map(str, make_shards_cmd([tmp_path / "in" / "00000.tar"], out, NO_MODEL, "--types", "rel")))
    # 1: room for one output shard, not two; 2: the disk filled to the last byte, a rerun with nothing to write
    proc = _in_small_tmpfs(disk, "240k", f"{cmd}; echo rc1=$?; find {out} -type f; cat /dev/zero > {disk}/fill "
                                        f"2>/dev/null; {again}; echo rc2=$?; find {out} -type f")
    assert "rc1=2" in proc.stdout and "rc2=2" in proc.stdout, (proc.stdout, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if "make-shards: error:" in l]
    assert len(errors) == 2, proc.stderr[-3000:]
    assert re.search(r"error: No space left on device: \S+ \(writing shard 0000[12]\.tar\); no partial file is left "
                     r"and the shards completed so far are kept: free space under \S+ and rerun", errors[0]), errors[0]
    assert re.search(r"error: \S+/(config|stats)\.json: No space left on device$", errors[1]), errors[1]
    files = [l for l in proc.stdout.splitlines() if l.startswith(str(out))]
    assert not [f for f in files if "partial" in f or f.endswith(".tmp")], files
    assert f"{out}/00000.tar" in files and f"{out}/.make-shards/done/00000.tar.json" in files


# ----------------------------------------------------------------------------- a killed worker
def test_a_killed_worker_ends_the_run_with_one_line_and_a_rerun_resumes(tmp_path):
    write_caption_shards(tmp_path / "in", num_shards=6, per_shard=30)  # three shards a worker: the kill lands mid-run
    out = tmp_path / "out"
    args = ("--filler", "vocab", "--workers", "2")
    p = subprocess.Popen(make_shards_cmd([tmp_path / "in"], out, NO_MODEL, *args), env=env(), cwd=str(REPO),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines, victim = [], None
    for line in p.stderr:
        lines.append(line)
        m = re.search(r"worker (\d) \(pid (\d+)\): (.*)", line)
        if m and victim is None:
            victim = m.groups()
            time.sleep(0.3)  # its shard is under way (loading spaCy takes longer)
            os.kill(int(victim[1]), signal.SIGKILL)
    p.wait(timeout=120)
    stderr = "".join(lines)
    assert victim is not None, stderr[-3000:]
    assert victim[2] == "vocabulary filler (no masked LM)" and "masked LM on" not in stderr
    assert p.returncode == 2 and "Traceback" not in stderr and "BrokenProcessPool" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert re.search(rf"make-shards: error: worker {victim[0]} \(pid {victim[1]}\) died while writing shard "
                     r"0000[0-5]\.tar \(killed by SIGKILL: the out-of-memory killer, or kill -9\); the shards completed "
                     r"so far are kept .*rerun the same command to resume", last), last
    assert not list(out.glob(".*partial*"))

    rerun = subprocess.run(make_shards_cmd([tmp_path / "in"], out, NO_MODEL, *args[:2], "--workers", "1"),
                           env=env(), cwd=str(REPO), capture_output=True, text=True, timeout=300,
                           preexec_fn=lambda: os.umask(0o027))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["shards"]["complete"] == 6 and stats["samples"] == 180
    assert (out / "stats.json").stat().st_mode & 0o777 == 0o640  # the umask of the run, read by no one


# ----------------------------------------------------------------------------- atomic writes
def test_atomic_writes_never_touch_the_process_umask(tmp_path, monkeypatch):
    def no_umask(mask):
        raise AssertionError("os.umask sets the umask of every thread of the process")

    monkeypatch.setattr(os, "umask", no_umask)
    write_json_atomic(tmp_path / "a" / "x.json", {"a": 1})
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"a": 1}
    assert os.listdir(tmp_path / "a") == ["x.json"]


def test_atomic_write_errors_name_the_file_and_leave_nothing(tmp_path, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        write_json_atomic(tmp_path / "stats.json", {"a": 1})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "stats.json")
    assert os.listdir(tmp_path) == []


def test_debug_adds_the_traceback_to_the_one_line(tmp_path):
    cmd = make_shards_cmd([tmp_path / "in"], tmp_path / "out", NO_MODEL, "--types", "colour")
    plain = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=str(REPO), timeout=120)
    debug = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, env=env(), cwd=str(REPO), timeout=120)
    line = "openclip-ce make-shards: error: --types: expected a non-empty comma-separated subset"
    assert plain.returncode == 2 and plain.stderr.startswith(line) and "Traceback" not in plain.stderr
    assert debug.returncode != 0 and debug.stderr.startswith(line) and "Traceback (most recent call last)" in debug.stderr


# ----------------------------------------------------------------------------- odd inputs and damaged state
def test_a_shard_list_naming_itself_and_a_fifo_are_one_line_each(tmp_path):
    write_caption_shards(tmp_path / "in", num_shards=1, per_shard=2)
    (tmp_path / "a.txt").write_text(f"{tmp_path / 'in' / '00000.tar'}\n@{tmp_path / 'b.txt'}\n")
    (tmp_path / "b.txt").write_text(f"@{tmp_path / 'a.txt'}\n")
    with pytest.raises(UserError, match=r"the list of shards .*a\.txt' names itself \(@.*a\.txt -> @.*b\.txt -> @.*a\.txt\)"):
        plan_jobs([f"@{tmp_path / 'a.txt'}"], str(tmp_path / "out"))
    shutil.copy(tmp_path / "in" / "00000.tar", tmp_path / "in" / "stats.json")
    with pytest.raises(UserError, match=r"stats\.json: its output, .*out/stats\.json, is where the run keeps"):
        plan_jobs([str(tmp_path / "in" / "00000.tar"), str(tmp_path / "in" / "stats.json")], str(tmp_path / "out"))
    os.mkfifo(tmp_path / "in" / "stuck.tar")  # would block the reader forever
    with pytest.raises(UserError, match=r"stuck\.tar: not a regular file"):
        plan_jobs([str(tmp_path / "in")], str(tmp_path / "out"))


def test_caption_flags_out_of_range_are_refused():
    with pytest.raises(UserError, match=r"--max-caption-chars must be <= 1,000,000"):
        config_for(["x.tar"], "out", max_caption_chars=2_000_000)
    with pytest.raises(UserError, match=r"--caption-json-field is empty"):
        config_for(["x.tar"], "out", caption_json_field="")
    assert config_for(["x.tar"], "out", max_caption_chars=1_000_000).max_caption_chars == 1_000_000


def test_damaged_state_files_are_one_line_or_the_shard_made_again(tmp_path):
    write_caption_shards(tmp_path / "in", num_shards=2, per_shard=4)
    out = tmp_path / "out"
    args = ("--types", "rel")
    assert run_cli([tmp_path / "in"], out, NO_MODEL, *args).returncode == 0
    first = json.loads((out / "stats.json").read_text())
    record = out / ".make-shards" / "done" / "00001.tar.json"
    for damaged in ("{}", '{"samples": "x"}', "[1, 2]"):  # each is made again, with a warning naming it
        record.write_text(damaged)
        proc = run_cli([tmp_path / "in"], out, NO_MODEL, *args)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"{record}: " in proc.stderr and "the shard is made again" in proc.stderr, proc.stderr[-2000:]
        stats = json.loads((out / "stats.json").read_text())
        assert stats["shards"]["written_this_run"] == 1 and stats["samples"] == first["samples"] == 8
    config = out / ".make-shards" / "config.json"
    for damaged in ('{"seed": 0, trunc', "", "[1, 2]"):
        config.write_text(damaged)
        proc = run_cli([tmp_path / "in"], out, NO_MODEL, *args)
        errors = [l for l in proc.stderr.splitlines() if "error:" in l]
        assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"{config}: " in errors[0] and "--overwrite" in errors[0], errors
    assert run_cli([tmp_path / "in"], out, NO_MODEL, *args, "--overwrite").returncode == 0
    config.write_text("[1, 2]")  # a run with nothing to write keeps the last tagging ops: none readable here
    record_settings(str(out), {"seed": 0}, False, None)
    assert json.loads(config.read_text()) == {"seed": 0, "tagging_ops": None}


def test_captions_all_in_another_language_say_so_instead_of_no_caption(tmp_path):
    write_caption_shards(tmp_path / "in", num_shards=1, per_shard=6)
    proc = run_cli([tmp_path / "in"], tmp_path / "out", NO_MODEL, "--filler", "vocab", "--languages", "de")
    errors = [l for l in proc.stderr.splitlines() if "error:" in l]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "no caption passed the checks (other_language_caption 6" in errors[0] and "--languages" in errors[0], errors


def test_ctrl_c_is_one_line_and_a_rerun_resumes(tmp_path):
    write_caption_shards(tmp_path / "in", num_shards=6, per_shard=30)
    out = tmp_path / "out"
    args = ("--filler", "vocab", "--workers", "2")
    # a job a shell starts in the background (`&`, nohup) has Ctrl-C ignored, and so would make-shards started
    # from it: give it the Ctrl-C of a terminal's foreground command, whatever started the tests
    p = subprocess.Popen(make_shards_cmd([tmp_path / "in"], out, NO_MODEL, *args), env=env(), cwd=str(REPO),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in p.stderr:
        lines.append(line)
        if re.search(r"worker \d \(pid \d+\): ", line):
            time.sleep(0.3)
            os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C: every process of the group
            break
    rest = p.communicate(timeout=120)[1]
    stderr = "".join(lines) + rest
    assert p.returncode == 130 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        "openclip-ce make-shards: interrupted; the shards completed so far are kept (unfinished ones are made "
        "again): run the same command to resume")
    rerun = run_cli([tmp_path / "in"], out, NO_MODEL, *args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["shards"]["complete"] == 6 and stats["samples"] == 180
    assert not [p for p in out.rglob("*") if "partial" in p.name]
