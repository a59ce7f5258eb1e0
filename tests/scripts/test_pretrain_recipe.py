"""The LAION-400M pretraining recipe (scripts/recipes/pretrain_laion400m.sh): --dry-run prints every step with open_clip's
published LAION-400M B/32 settings and the from-scratch CE settings, runs nothing; and the shard pattern it
trains on (scripts/recipes/mixture.py) stays one short argument for tens of thousands of numbered shards."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from braceexpand import braceexpand

from openclip_ce.testing.proc import env

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _recipe(*args, **extra):
    return subprocess.run(["bash", str(ROOT / "scripts" / "recipes" / "pretrain_laion400m.sh"), *args], capture_output=True,
                          text=True, timeout=120, env=env(**extra), cwd=ROOT)


def test_dry_run_prints_every_step_with_the_published_settings_and_runs_nothing(tmp_path):
    out = tmp_path / "o"
    proc = _recipe("--dry-run", OUT=str(out), NODE_RANK="3")
    assert proc.returncode == 0, proc.stderr
    steps = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("== ")]
    assert steps == [f"{i}/5" for i in range(1, 6)]
    commands = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    shards = next(c for c in commands if c.startswith("openclip-ce make-shards"))
    assert "--engine ray --ray-address auto" in shards and "--device cuda" in shards and f"--out {out}/neg/laion400m" in shards
    train = next(c for c in commands if c.startswith("torchrun"))
    # open_clip's LAION-400M B/32: 128 GPUs (32 nodes x 4) x 256 = 32,768, 32 epochs, warm-up 2,000, lr 5e-4, wd 0.2
    for flag in ("--nnodes 32", "--nproc_per_node 4", "--node_rank 3", "--model ViT-B-32", "--batch-size 256",
                 "--epochs 32", "--warmup 2000", "--lr 5e-4", "--wd 0.2", "--local-loss --gather-with-grad",
                 "--loss ce_clip", "--ce-schedule gate", "--resume latest", f"--train-data {out}/neg/laion400m/"):
        assert flag in train, flag
    assert "--pretrained" not in train and "--force-quick-gelu" not in train  # from random weights
    assert any("--pretrained laion400m_e32" in c for c in commands if c.startswith("openclip-ce eval"))
    assert not out.exists()


def test_settings_follow_the_cluster_and_bad_input_is_one_line(tmp_path):
    proc = _recipe("--dry-run", OUT=str(tmp_path / "o"), NNODES="16", NGPU="8")
    assert proc.returncode == 0, proc.stderr
    train = next(line for line in proc.stdout.splitlines() if line.startswith("+ torchrun"))
    assert "--nnodes 16 --nproc_per_node 8" in train and "--batch-size 256" in train  # the same global batch
    bad = _recipe("--dry-run", OUT=str(tmp_path / "o"), NNODES="3", NGPU="5")
    assert bad.returncode == 2 and "batch 32768 is not a multiple of 15 GPUs" in bad.stderr
    assert _recipe("--bogus").returncode == 2


def test_mixture_names_numbered_shards_as_ranges(tmp_path):
    (tmp_path / "stats.json").write_text('{"samples": 123}')
    names = [f"{i:05d}.tar" for i in range(20000) if i not in (7, 8, 15000)]  # 200 KB as a list
    for name in names:
        (tmp_path / name).touch()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "recipes" / "mixture.py"), str(tmp_path)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    pattern, factor, samples = proc.stdout.split()
    assert pattern == f"{tmp_path}/{{{{00000..00006}},{{00009..14999}},{{15001..19999}}}}.tar" and samples == "123"
    assert [re.sub(r".*/", "", p) for p in braceexpand(pattern)] == names
