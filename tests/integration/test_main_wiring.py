"""open_clip's main branch (the vendored 4.2.0.dev0 snapshot): ``--loss ce_clip`` trains through main's own
task machinery with the import hook, and through main patched with ``patches/open_clip-main-*-plugins.patch``
without it: thresholds and their resume, the metrics, the no-negatives guard, exact packing, refusals."""

import json
import sys

import pytest
import torch

from openclip_ce.metrics_file import read_metrics
from openclip_ce.testing.tiny_clip import TINY_VIT_B_32_CFG, write_tiny_model_dir
from openclip_ce.testing.proc import run, torchrun
from openclip_ce.testing.training_runs import (csv_with_negatives, demo_shards, nan_model, no_negatives_args, tiny_model,
                                               train_args)
from openclip_ce.testing.open_clip_main import pythonpath

pytestmark = pytest.mark.slow


def _main(src, args, **env):
    return run([sys.executable, "-m", "open_clip_train.main", *args], PYTHONPATH=pythonpath(src), **env)


def test_two_ranks_train_through_main_tasks_on_the_default_device_and_resume(main_src, tmp_path):
    model, data, logs = tiny_model(tmp_path), demo_shards(tmp_path), tmp_path / "logs"
    args = train_args(model, data, logs, "ce", "--loss", "ce_clip", "--dist-backend", "gloo", "--accum-freq", "2",
                      "--report-to", "tensorboard")
    args[args.index("--device"):args.index("--device") + 2] = []  # left at cuda: open_clip falls back to the CPU
    proc = torchrun(2, ["-m", "open_clip_train.main", "--", *args], PYTHONPATH=pythonpath(main_src),
                    CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr[-5000:]  # DDP would reject device_ids=[cpu] without the fix
    log = (logs / "ce" / "out.log").read_text()
    assert "world_size: 2" in log and "loss: ce_clip" in log and "device: cpu" in log and "accum_freq: 2" in log
    assert "captions and valid negatives are packed into rows" in log and "packed text batches padded to" in log
    lines = [l for l in log.splitlines() if "| open_clip_train.train | Train Epoch" in l]  # main's own logger
    assert lines and all("Imc_loss" in l and "ce_threshold_rel: " in l and "ce_valid_obj: " in l for l in lines)
    state_file = logs / "ce" / "checkpoints" / "ce_plugin_state_epoch_1.json"
    state = json.loads(state_file.read_text())["state"]
    assert set(state["thresholds"]) == {"rel", "att", "act", "obj"} and state["steps"] == 2  # 64 / 16 / accum 2
    sd = torch.load(logs / "ce" / "checkpoints" / "epoch_1.pt", map_location="cpu", weights_only=False)["state_dict"]
    assert not any(k.split(".")[-1].startswith("_ce") or "neg" in k for k in sd)  # a plain open_clip checkpoint

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(logs / "ce" / "tensorboard"))
    ea.Reload()
    assert {"train/ce_threshold_rel", "train/ce_gap_obj", "train/imc_loss", "train/cmr_loss"} <= set(ea.Tags()["scalars"])

    # resume on one process: the thresholds come back, the metrics file counts on
    args[args.index("--epochs") + 1] = "2"
    proc = _main(main_src, [*args, "--resume", "latest"], CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr[-5000:]
    log = (logs / "ce" / "out.log").read_text()
    assert f"ce_clip: restored plugin state from {state_file}: {state}" in log
    assert (logs / "ce" / "checkpoints" / "epoch_2.pt").exists()
    records = read_metrics(logs / "ce")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]  # 2 steps of 2 ranks, then 4 of one
    assert [r["samples"] for r in records] == [32, 64, 80, 96, 112, 128]
    assert all(r["loss"] == pytest.approx(r["contrastive_loss"] + r["imc_loss"] + r["cmr_loss"]) for r in records)

    # once more without the state file (a checkpoint copied alone): the metrics file counts on from main's
    # own position (the checkpoint's global_step and samples_seen), so no earlier record is dropped
    (logs / "ce" / "checkpoints" / "ce_plugin_state_epoch_2.json").unlink()
    args[args.index("--epochs") + 1] = "3"
    proc = _main(main_src, [*args, "--resume", "latest"], CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "ce_clip: no plugin state at" in (logs / "ce" / "out.log").read_text()
    records = read_metrics(logs / "ce")
    # main's global_step in the epoch-2 checkpoint is 8, not 6: it numbers the one-process epoch as its
    # second epoch of 4 steps (steps 5-8); its samples_seen, 128, is exact. The file follows main's counters.
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6, 9, 10, 11, 12]
    assert [r["samples"] for r in records] == [32, 64, 80, 96, 112, 128, 144, 160, 176, 192]


def test_packed_text_gives_the_unpacked_loss_on_main_csv_data(main_src, tmp_path):
    """main's csv pipeline (dict samples): packed text rows == --ce-no-pack, first step, to float tolerance."""
    model = write_tiny_model_dir(tmp_path / "model77", TINY_VIT_B_32_CFG)
    data, logs = csv_with_negatives(tmp_path), tmp_path / "logs"

    def first_step(name, *extra):
        args = train_args(model, data, logs, name, "--loss", "ce_clip", *extra, samples=8, batch=8)
        args[args.index("webdataset")] = "csv"
        proc = _main(main_src, args)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return (logs / name / "out.log").read_text(), read_metrics(logs / name)[0]

    # every term from step 1 (not the schedule of a run from random weights), so that IMC and CMR are compared too
    packed_log, packed = first_step("packed", "--ce-schedule", "off")
    full_log, full = first_step("notrim", "--ce-no-pack", "--ce-schedule", "off")
    assert "packed text batches padded to" in packed_log and "rows text batches padded to" in full_log
    assert packed["ce_valid_rel"] < 1 or packed["ce_valid_act"] < 1  # placeholders took part
    for k in ("contrastive_loss", "imc_loss", "cmr_loss", "loss"):
        assert packed[k] == pytest.approx(full[k], rel=1e-4, abs=1e-6), (k, packed, full)


_PARSE_MANY = """
import contextlib, io, json, sys
import open_clip_train.main
from open_clip_train.params import parse_args
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parse_args(argv)
        out.append([0, ""])
    except SystemExit as e:
        out.append([e.code, err.getvalue()])
print(json.dumps(out))
"""


def test_main_refuses_what_the_plugin_cannot_take_and_stops_without_negatives(main_src, tmp_path):
    base = ["--model", "ViT-B-32", "--train-data", "x.tar", "--loss", "ce_clip"]
    cases = ((["--use-naflex"], "--use-naflex"), (["--json-text-key", "caption"], "--json-text-key"),
             (["--fsdp"], "--fsdp"), (["--dataset-type", "webdataset-audio"], "audio"),
             (["--loss", "bogus"], "invalid choice: 'bogus'"))
    proc = run([sys.executable, "-c", _PARSE_MANY, json.dumps([base + extra for extra, _ in cases])],
               PYTHONPATH=pythonpath(main_src))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (extra, what), (code, err) in zip(cases, json.loads(proc.stdout.strip().splitlines()[-1])):
        assert code == 2 and what in err and "Traceback" not in err, (extra, err)

    # compiled as main compiles by default (--torchcompile-strategy task: the task's forward, loss included),
    # where a check inside the loss never runs: the guard is counted on the host after each optimizer step
    proc = _main(main_src, no_negatives_args(tmp_path, "--torchcompile", "--torchcompile-backend", "eager"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "no valid hard negative reached the loss in the first 50 optimizer steps" in proc.stderr
    assert "Traceback" not in proc.stderr


def _stopped_in_one_line(proc, message):
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if "| ERROR |" in l]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in proc.stderr, proc.stderr[-3000:]


def _nan_run(src, tmp_path, *extra):
    """A model with one NaN weight, compiled as main compiles by default (the task's forward, loss included):
    the non-finite loss is found on the host after the optimizer step, at the first log step."""
    logs = tmp_path / "logs"
    args = train_args(nan_model(tmp_path), demo_shards(tmp_path, 1, 8), logs, "nan", "--loss", "ce_clip",
                      "--log-every-n-steps", "3", "--torchcompile", "--torchcompile-backend", "eager", *extra,
                      samples=8, batch=4)
    proc = _main(src, args)
    _stopped_in_one_line(proc, "training loss is not finite (NaN or inf) since optimizer step 1; stopped at step 1")
    assert not list((logs / "nan" / "checkpoints").iterdir())  # no checkpoint, no state file
    return logs / "nan"


def test_main_stops_a_nan_loss_at_the_first_log_step_when_compiled(main_src, tmp_path):
    _nan_run(main_src, tmp_path)


def test_patched_main_stops_in_one_line_without_negatives_when_compiled_and_on_a_nan_loss(patched_main_src, tmp_path):
    """The patch calls the loss's host-side hooks as the import hook does: the no-negatives guard fires under
    --torchcompile (it never did: plain CLIP trained, exit 0), and a plugin's stop is one line, exit 2 (it
    was a traceback, exit 1); the non-finite loss stops the run too."""
    args = no_negatives_args(tmp_path, "--torchcompile", "--torchcompile-backend", "eager")
    _stopped_in_one_line(_main(patched_main_src, args),
                         "no valid hard negative reached the loss in the first 50 optimizer steps")
    _nan_run(patched_main_src, tmp_path)


def test_patched_main_trains_and_resumes_without_the_hook(patched_main_src, tmp_path):
    model, data, logs = tiny_model(tmp_path), demo_shards(tmp_path, 2, 8), tmp_path / "logs"
    args = train_args(model, data, logs, "p", "--loss", "ce_clip", samples=16, batch=8)
    proc = _main(patched_main_src, args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = torch.load(logs / "p" / "checkpoints" / "epoch_1.pt", map_location="cpu", weights_only=False)
    state = ckpt["plugin_state"]
    assert set(state["thresholds"]) == {"rel", "att", "act", "obj"} and state["steps"] == 2
    assert not (logs / "p" / "checkpoints" / "ce_plugin_state_epoch_1.json").exists()  # the hook stood aside
    log = (logs / "p" / "out.log").read_text()
    assert "ce_threshold_rel" in log and "Imc_loss" in log and "packed text batches padded to" in log

    args[args.index("--epochs") + 1] = "2"
    proc = _main(patched_main_src, [*args, "--resume", "latest"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (logs / "p" / "out.log").read_text()
    assert f"ce_clip: restored plugin state from {logs / 'p' / 'checkpoints' / 'epoch_1.pt'}: {state}" in log
    assert [r["step"] for r in read_metrics(logs / "p")] == [1, 2, 3, 4]  # the plugin's metrics file, patched too


_PACK_SUPPORT = """
import copy, sys
from open_clip.model import CLIP
from openclip_ce.integration.text_packing import pack_support
from openclip_ce.testing.tiny_clip import TINY_VIT_B_32_CFG

class OwnEncodeText(CLIP):  # main's encode_text calls _encode_text: an override there changes the features
    def _encode_text(self, text, normalize=False):
        return super()._encode_text(text, normalize)

print(pack_support(CLIP(**copy.deepcopy(TINY_VIT_B_32_CFG))), "|", pack_support(OwnEncodeText(**copy.deepcopy(TINY_VIT_B_32_CFG))))
"""


def test_main_models_that_override_the_inner_text_encoder_are_not_packed(main_src):
    proc = run([sys.executable, "-c", _PACK_SUPPORT], PYTHONPATH=pythonpath(main_src))
    assert proc.returncode == 0, proc.stderr[-3000:]
    plain, own = proc.stdout.strip().splitlines()[-1].split(" | ")
    assert plain == "None" and own == "OwnEncodeText overrides CLIP._encode_text"
