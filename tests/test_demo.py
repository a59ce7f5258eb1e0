"""The README's main-job command, `openclip-ce demo`, run as a user would (--quick sizes)."""

import json
import re
import shutil
import sys

import pytest

from openclip_ce.demo import scenes
from tests._proc import run

pytestmark = pytest.mark.slow


def _cmd():
    exe = shutil.which("openclip-ce")
    return [exe] if exe else [sys.executable, "-m", "openclip_ce.cli"]


def test_demo_runs_every_part_and_writes_one_report(tmp_path):
    out = tmp_path / "d"
    proc = run(_cmd() + ["demo", "--quick", "--out", str(out)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the terminal: one line per stage, not open_clip's log or the model's repr
    stages = [l for l in proc.stderr.splitlines() if re.match(r"[1-5]/5 ", l)]
    assert len(stages) == 10 and all("FAILED" not in l for l in stages), proc.stderr
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
    assert "open_clip_train.main" in report and "make-shards" in report and "analyze" in report

    again = run(_cmd() + ["demo", "--quick", "--out", str(out)], timeout=120)
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
