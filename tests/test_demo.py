"""The README's main-job command: `openclip-ce demo`, run as a user would (small sizes)."""

import json
import shutil
import sys

import pytest

from tests._proc import run

pytestmark = pytest.mark.slow


def test_demo_trains_plots_and_reports(tmp_path):
    exe = shutil.which("openclip-ce") or sys.executable
    cmd = [exe] if exe.endswith("openclip-ce") else [sys.executable, "-m", "openclip_ce.cli"]
    proc = run(cmd + ["demo", "--out", str(tmp_path / "d"), "--epochs", "2", "--per-shard", "16",
                      "--batch-size", "16", "--compare-clip"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dir = tmp_path / "d" / "logs" / "demo-0"
    assert (run_dir / "checkpoints" / "epoch_2.pt").exists()
    assert (run_dir / "ce_clip_training.png").stat().st_size > 10_000
    assert "ce_threshold_rel" in (run_dir / "out.log").read_text()
    assert "loss: clip" in (tmp_path / "d" / "logs" / "demo-0-clip" / "out.log").read_text()
    table = json.loads((tmp_path / "d" / "toy_accuracy.json").read_text())
    assert set(table) == {"random init", "CE-CLIP (--loss ce_clip)", "CLIP (--loss clip)"}
    assert all(0.0 <= v <= 1.0 for row in table.values() for v in row.values())
    assert "held-out pairwise accuracy" in proc.stderr
    assert "TorchDynamo attempted" not in proc.stderr
