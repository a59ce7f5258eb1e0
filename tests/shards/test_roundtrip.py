"""Round trip: shards written by `openclip-ce make-shards` feed a `--loss ce_clip` training run."""

import re
import sys

import pytest

from openclip_ce.testing.tiny_clip import write_tiny_model_dir
from openclip_ce.testing.make_shards_runs import env, run_cli, tiny_filler, write_caption_shards

pytestmark = pytest.mark.slow


def test_make_shards_output_trains_with_ce_clip(tmp_path):
    import subprocess

    write_caption_shards(tmp_path / "in", num_shards=2, per_shard=16)
    proc = run_cli([tmp_path / "in"], tmp_path / "neg", tiny_filler(tmp_path, []), "--top-k", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]

    model = write_tiny_model_dir(tmp_path / "clip")
    logs = tmp_path / "logs"
    args = ["--model", model, "--dataset-type", "webdataset", "--train-data", str(tmp_path / "neg" / "{00000..00001}.tar"),
            "--train-num-samples", "32", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--device", "cpu",
            "--precision", "fp32", "--lr", "1e-3", "--warmup", "1", "--log-every-n-steps", "1", "--seed", "0",
            "--logs", str(logs), "--name", "rt", "--loss", "ce_clip", "--ce-strict"]
    proc = subprocess.run([sys.executable, "-m", "openclip_ce.train", "--", *args], capture_output=True, text=True,
                          timeout=600, env=env())
    assert proc.returncode == 0, proc.stderr[-5000:]
    log = (logs / "rt" / "out.log").read_text()
    assert "loss: ce_clip" in log
    lines = [l for l in log.splitlines() if "Train Epoch" in l]
    assert lines and all("Imc_loss" in l and "Cmr_loss" in l for l in lines)
    # the negatives made by make-shards reached the loss: valid (non-placeholder) counts per type
    for t in ("rel", "obj"):
        valid = [float(v) for l in lines for v in re.findall(rf"ce_valid_{t}: ([0-9.]+)", l)]
        assert valid and max(valid) > 0, (t, lines[-1])
