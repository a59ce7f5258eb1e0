"""The metrics route: train_metrics.jsonl written once per step by the logging rank (the plugin, or the hook
for a stock run on request), read back across resumes, plotted without parsing a log line."""

import argparse
import json

import pytest

from openclip_ce.integration.reporting import LossScalarRecorder, TensorBoardProxy
from openclip_ce.metrics_file import FILE, MetricsWriter, metrics_path, read_metrics
from openclip_ce.training.plots import read_training_metrics, plot_training_log


def _writer_args(tmp_path, **kw):
    base = dict(logs=str(tmp_path), name="run", rank=0, batch_size=4, accum_freq=2, world_size=2)
    return argparse.Namespace(**{**base, **kw})


def test_one_record_per_step_counting_on_after_a_resume(tmp_path):
    w = MetricsWriter(_writer_args(tmp_path))
    for steps in (1, 1, 2, 3):  # the same step twice: several sinks read the metrics at one log step
        w.write(steps, {"loss": 1.0 / steps})
    assert w.position(3) == (3, 48)
    resumed = MetricsWriter(_writer_args(tmp_path, world_size=1))  # resumed from step 2 on one rank
    resumed.resume(2, 32)
    resumed.write(1, {"loss": 0.4})
    resumed.write(2, {"loss": 0.3})
    with open(tmp_path / "run" / FILE, "a") as f:
        f.write('{"step": 5, "samp')  # a run killed while writing
    records = read_metrics(tmp_path / "run")
    assert [(r["step"], r["samples"], r["loss"]) for r in records] == [(1, 16, 1.0), (2, 32, 0.5), (3, 40, 0.4),
                                                                       (4, 48, 0.3)]
    assert metrics_path(tmp_path / "run" / "out.log") == str(tmp_path / "run" / FILE)

    for other in (_writer_args(tmp_path, rank=1, name="r1"), _writer_args(tmp_path, logs="none", name="r2")):
        MetricsWriter(other).write(1, {"loss": 1.0})
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_a_stock_run_on_request_records_open_clips_loss_scalars(tmp_path):
    seen = []
    writer = argparse.Namespace(add_scalar=lambda *a: seen.append(a), close=lambda: "closed")
    rec = LossScalarRecorder(writer, MetricsWriter(_writer_args(tmp_path)))
    for step in (0, 1):  # what open_clip's train_one_epoch hands its TensorBoard writer at a log step
        for name, value in (("train/lr", 0.1), ("train/contrastive_loss", 2.0 - step), ("train/loss", 2.0 - step)):
            rec.add_scalar(name, value, step)
    rec.add_scalar("train/loss_epoch_avg", 1.5, 1)
    rec.flush()
    assert len(seen) == 7 and rec.close() == "closed"  # everything reaches the real writer
    records = [json.loads(l) for l in (tmp_path / "run" / FILE).read_text().splitlines()]
    assert records == [{"step": 1, "samples": 16, "contrastive_loss": 2.0, "loss": 2.0},
                       {"step": 2, "samples": 32, "contrastive_loss": 1.0, "loss": 1.0}]
    bare = LossScalarRecorder(None, MetricsWriter(_writer_args(tmp_path, name="bare")))
    bare.add_scalar("train/loss", 1.0, 0)
    assert bare.close() is None  # no writer: calls open_clip makes on it do nothing


def test_the_plugin_metrics_reach_tensorboard_once_per_step_even_without_a_writer():
    reads = []

    def source():
        reads.append(1)
        return {"ce_threshold_rel": 0.5}

    proxy = TensorBoardProxy(None, source)  # no --report-to tensorboard: the metrics are still read per step
    for step in (0, 0, 1):
        proxy.add_scalar("train/loss", 1.0, step)
    proxy.add_scalar("train/loss_epoch_avg", 1.0, 2)
    assert len(reads) == 2 and proxy.flush() is None


def test_plots_read_the_metrics_file(tmp_path):
    w = MetricsWriter(_writer_args(tmp_path))
    for step in (1, 2, 3):
        w.write(step, {"contrastive_loss": 2.0 / step, "imc_loss": 0.1, "loss": 2.0 / step + 0.1,
                       "ce_threshold_rel": 0.1 * step, **({"ce_gap_obj": 0.2} if step > 1 else {})})
    xs, series = read_training_metrics(tmp_path / "run")
    assert xs == [16, 32, 48] and series["ce_threshold_rel"] == pytest.approx([0.1, 0.2, 0.3])
    assert series["ce_gap_obj"][0] != series["ce_gap_obj"][0] and series["ce_gap_obj"][1:] == [0.2, 0.2]  # nan first
    png = plot_training_log(tmp_path / "run" / "out.log", tmp_path / "t.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError):
        read_training_metrics(tmp_path / "missing")


def test_non_finite_values_are_written_as_null_and_read_back_as_nan(tmp_path):
    MetricsWriter(_writer_args(tmp_path)).write(1, {"loss": float("nan"), "imc_loss": float("inf"), "ce_valid_rel": 0.5})
    line = (tmp_path / "run" / FILE).read_text()
    json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in {line}"))  # strict JSON
    assert '"loss": null' in line and '"imc_loss": null' in line
    (record,) = read_metrics(tmp_path / "run")
    assert record["loss"] != record["loss"] and record["ce_valid_rel"] == 0.5


def test_the_plugin_state_is_strict_json_and_an_unreadable_state_file_is_not_fatal(tmp_path, caplog):
    """A state with a NaN threshold is written with null; a state file that is not JSON (or an old one with a
    bare NaN) on --resume: a warning naming it, the thresholds start afresh (as without the file)."""
    import logging
    import math

    from openclip_ce.integration.epoch import restore_plugin_state, run_plugin_epoch, state_path
    from openclip_ce.training.loss import CeClipLoss
    from openclip_ce.training.plugin import plugin

    loss = CeClipLoss()
    loss.thresholds[0] = float("nan")
    args = argparse.Namespace(save_logs=True, checkpoint_path=str(tmp_path), loss="ce_clip",
                              _plugin_state_restored=True)
    run_plugin_epoch(plugin, loss, args, 0, run=lambda writer: None, oc_train=argparse.Namespace(),
                     wandb_names=(), position=(0, 0))
    text = (tmp_path / "ce_plugin_state_epoch_1.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(text))["state"]["thresholds"]["rel"] is None

    resume = argparse.Namespace(resume=str(tmp_path / "epoch_1.pt"))
    for content in ("{not json", '{"state": {"thresholds": {"rel": NaN, "att": 2.0}}}'):
        with open(state_path(str(tmp_path), 1), "w") as f:
            f.write(content)
        fresh = CeClipLoss()
        with caplog.at_level(logging.WARNING):
            restore_plugin_state(plugin, fresh, resume, 1, (8, 64))
        thresholds = fresh.threshold_dict()
        assert all(math.isfinite(v) for v in thresholds.values())
    assert thresholds["att"] == 2.0  # the finite values of an old state file are kept
    assert any("plugin state unreadable (JSONDecodeError" in r.getMessage() and "ce_plugin_state_epoch_1.json" in
               r.getMessage() for r in caplog.records)
