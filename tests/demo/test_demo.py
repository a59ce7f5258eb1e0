"""The README's main-job command, `openclip-ce demo`, run as a user would (--quick sizes)."""

import json
import re

import pytest

from openclip_ce.demo import scenes
from openclip_ce.testing.caption_shards import read_tar
from openclip_ce.testing.proc import cli, run

pytestmark = pytest.mark.slow


def test_demo_runs_every_part_and_writes_one_report(tmp_path):
    out = tmp_path / "d"
    proc = run(cli() + ["demo", "--quick", "--out", str(out)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the terminal: one line per stage, not open_clip's log or the model's repr
    stages = [l for l in proc.stderr.splitlines() if re.match(r"[1-5]/5 ", l)]
    assert len(stages) == 11 and all("FAILED" not in l for l in stages), proc.stderr
    assert "Model:" not in proc.stderr and "Train Epoch" not in proc.stderr
    assert proc.stdout.strip() == str(out / "report.md")

    # every part ran through its real entry point and left its own output
    stats = json.loads((out / "data" / "train-neg" / "stats.json").read_text())
    # every scene names two different shapes; spaCy now and then tags a caption-final shape as ADJ
    # ("... a small pink square"), which leaves that caption with one noun and a rel placeholder
    assert stats["samples"] == 96 and stats["coverage"]["rel"] > 0.9 and stats["coverage"]["act"] > 0.3
    for name, loss in (("clip", "loss: clip"), ("ce-clip", "loss: ce_clip")):
        log = (out / "runs" / name / "out.log").read_text()
        assert loss in log and "Train Epoch" in log
        res = json.loads((out / "results" / f"{name}.json").read_text())
        assert set(res["benchmarks"]["sugarcrepe"]["splits"]) == set(scenes.SPLITS)
    assert "ce_threshold_act" in (out / "runs" / "ce-clip" / "out.log").read_text()
    for png in ("compare.png", "analysis.png", "training_ce_clip.png", "training_clip.png"):
        data = (out / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png

    report = (out / "report.md").read_text()
    clip = json.loads((out / "results" / "clip.json").read_text())["summary"]
    ce = json.loads((out / "results" / "ce-clip.json").read_text())["summary"]
    for split in scenes.SPLITS:  # the table holds the two models' numbers side by side
        row = next(l for l in report.splitlines() if l.startswith(f"| {split} |"))
        assert f"| {100 * clip['sugarcrepe/' + split]:.1f} | {100 * ce['sugarcrepe/' + split]:.1f} |" in row
    assert f"{100 * stats['coverage']['act']:.1f}% of 96 captions" in report
    cleaned = json.loads((out / "data" / "train-neg" / "decontamination.json").read_text())
    assert cleaned["negatives"]["obj"] > 0 and f"obj {cleaned['removed']['obj']} of {cleaned['negatives']['obj']}" in report
    for shard in (out / "data" / "train-neg").glob("*.tar"):  # no training negative names a held-out combination
        for name, data in read_tar(shard):
            if name.endswith(".neg.json"):
                assert not any(v and scenes.names_held_out(v) for v in json.loads(data).values()), data
    assert "open_clip_train.main" in report and "make-shards" in report and "analyze" in report

    again = run(cli() + ["demo", "--quick", "--out", str(out)], timeout=120)
    assert again.returncode == 2 and "already holds a demo run" in again.stderr


def test_held_out_scenes_never_appear_in_training(tmp_path):
    import random

    rng = random.Random(0)
    train = [scenes.random_scene(rng, held_out=False) for _ in range(500)]
    held = [scenes.random_scene(rng, held_out=True) for _ in range(200)]

    def combination(s):  # the two colours and the two shapes, whatever their binding
        return frozenset({s.first.color, s.second.color}), frozenset({s.first.shape, s.second.shape})

    assert not {combination(s) for s in train} & {combination(s) for s in held}
    assert all(s.held_out() for s in held) and not any(s.held_out() for s in train)
    # every colour-shape pair itself is seen in training (only pairs of objects are held out)
    assert {(o.color, o.shape) for s in train for o in (s.first, s.second)} == \
        {(c, sh) for c in scenes.COLORS for sh in scenes.SHAPES}
    counts = scenes.evaluation_set(tmp_path, 20, seed=1)
    assert counts == {s: 20 for s in scenes.SPLITS}
    items = json.loads((tmp_path / "sugarcrepe" / "swap_att.json").read_text())
    for item in items.values():  # a swap keeps the words and changes the binding
        assert sorted(item["caption"].split()) == sorted(item["negative_caption"].split())
        assert item["caption"] != item["negative_caption"]
        assert (tmp_path / "sugarcrepe" / "val2017" / item["filename"]).exists()


def test_training_negatives_that_name_a_held_out_combination_become_placeholders(tmp_path):
    from openclip_ce.demo.decontaminate import drop_held_out_negatives
    from openclip_ce.negatives import decode_negatives, encode_negatives
    from openclip_ce.shards.tario import ShardWriter, read_samples

    held = next((c1, s1, c2, s2) for c1 in scenes.COLORS for c2 in scenes.COLORS for s1 in scenes.SHAPES
                for s2 in scenes.SHAPES if c1 != c2 and s1 != s2 and scenes.is_held_out((c1, s1), (c2, s2)))
    kept = next((c1, s1, c2, s2) for c1 in scenes.COLORS for c2 in scenes.COLORS for s1 in scenes.SHAPES
                for s2 in scenes.SHAPES if c1 != c2 and s1 != s2 and not scenes.is_held_out((c1, s1), (c2, s2)))
    bad = "a small {} {} covers a big {} {}".format(*held)
    good = "a small {} {} above a big {} {}".format(*kept)
    assert scenes.names_held_out(bad) and scenes.names_held_out("a big {2} {3} below a small {0} {1}".format(*held))
    assert not scenes.names_held_out(good) and not scenes.names_held_out("a small small {1} covers a big {2} {3}".format(*held))
    assert scenes.caption_objects(bad) == [(held[0], held[1]), (held[2], held[3])]

    shards = tmp_path / "neg"
    w = ShardWriter(str(shards / "00000.tar"))
    w.add("a.jpg", b"\xff\xd8jpeg", 0)
    w.add("a.txt", good.encode(), 0)
    w.add("a.neg.json", encode_negatives({"rel": good, "att": None, "act": good, "obj": bad}), 0)
    w.commit()
    w = ShardWriter(str(shards / "00001.tar"))  # nothing to remove: left as it is
    w.add("b.txt", good.encode(), 0)
    w.add("b.neg.json", encode_negatives({"rel": good, "att": good, "act": None, "obj": None}), 0)
    w.commit()
    untouched = (shards / "00001.tar").read_bytes()

    result = drop_held_out_negatives(shards)
    assert result == {"negatives": {"rel": 2, "att": 1, "act": 1, "obj": 1}, "removed": {"rel": 0, "att": 0, "act": 0, "obj": 1}}
    samples = {k: {m.name: m.data for m in ms} for k, ms in read_samples(str(shards / "00000.tar"))}
    assert samples["a"]["a.jpg"] == b"\xff\xd8jpeg" and samples["a"]["a.txt"] == good.encode()
    assert decode_negatives(samples["a"]["a.neg.json"]) == {"rel": good, "att": None, "act": good, "obj": None}
    assert (shards / "00001.tar").read_bytes() == untouched
    assert json.loads((shards / "decontamination.json").read_text()) == result
    assert not [p for p in shards.iterdir() if "partial" in p.name]
