"""End to end, as a user runs it: open_clip's own training main with --loss ce_clip."""

import json
import random
import re
import sys

import pytest
import torch

from openclip_ce.metrics_file import read_metrics
from openclip_ce.testing.proc import run, torchrun
from openclip_ce.testing.training_runs import (TRAIN_LINE, csv_with_negatives, demo_shards, nan_model, no_negatives_args,
                                               parse_many, sample_members, tiny_model, train_args, write_shard)

pytestmark = pytest.mark.slow

def test_torchrun_two_ranks_trains_checkpoints_logs_thresholds_and_resumes(tmp_path):
    model, data, logs = tiny_model(tmp_path), demo_shards(tmp_path), tmp_path / "logs"
    args = train_args(model, data, logs, "ce", "--loss", "ce_clip", "--ce-alpha", "0.2", "--dist-backend", "gloo",
                      "--report-to", "tensorboard", "--save-frequency", "1", "--epochs", "1")
    # --device left at its default (cuda): without CUDA open_clip falls back to the CPU, and a ce_clip run
    # gets the CPU DDP fix then too (DDP rejects device_ids=[cpu])
    args[args.index("--device"):args.index("--device") + 2] = []
    # torchrun itself would take --logs as an abbreviation of its --logs-specs: hence the `--`
    proc = torchrun(2, ["-m", "open_clip_train.main", "--", *args], CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr[-5000:]
    log = (logs / "ce" / "out.log").read_text()
    assert "world_size: 2" in log and "loss: ce_clip" in log and "device: cpu" in log
    lines = [l for l in log.splitlines() if "Train Epoch" in l]
    assert lines and all(TRAIN_LINE.search(l) for l in lines), lines
    ckpt = logs / "ce" / "checkpoints" / "epoch_1.pt"
    state = json.loads((logs / "ce" / "checkpoints" / "ce_plugin_state_epoch_1.json").read_text())
    assert state["loss"] == "ce_clip" and set(state["state"]["thresholds"]) == {"rel", "att", "act", "obj"}
    sd = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert all(k.startswith("module.") for k in sd) and not any("ce" in k.split(".")[1] for k in sd)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(logs / "ce" / "tensorboard"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"train/ce_threshold_rel", "train/ce_valid_obj", "train/imc_loss", "train/cmr_loss"} <= tags

    # resume the same run for a second epoch: the thresholds come back from the state file
    args2 = [a if a != "1" or args[i - 1] != "--epochs" else "2" for i, a in enumerate(args)]
    proc = torchrun(2, ["-m", "open_clip_train.main", "--", *args2, "--resume", "latest"], CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr[-5000:]
    log = (logs / "ce" / "out.log").read_text()
    assert f"resuming checkpoint '{ckpt}' (epoch 1)" in log
    restored = re.search(r"ce_clip: restored plugin state from \S+: (.*)", log)
    assert restored and eval(restored.group(1)) == state["state"]
    assert (logs / "ce" / "checkpoints" / "epoch_2.pt").exists()
    assert any(l.startswith("Train Epoch: 1") or "Train Epoch: 1 " in l for l in log.splitlines())

    # the metrics route: one record per logged step (every step here), counting on across the resume
    records, per_epoch = read_metrics(logs / "ce"), state["state"]["steps"]
    assert per_epoch >= 2 and [r["step"] for r in records] == list(range(1, 2 * per_epoch + 1))
    assert [r["samples"] for r in records] == [16 * r["step"] for r in records]  # batch 8 x 2 ranks
    for r in records:
        assert r["loss"] == pytest.approx(r["contrastive_loss"] + r["imc_loss"] + r["cmr_loss"])
        assert {"ce_threshold_rel", "ce_valid_obj"} <= set(r)

    # once more without the state file (a checkpoint copied alone): the metrics file counts on from open_clip's
    # own position (epoch x steps per epoch), so no earlier record is dropped
    (logs / "ce" / "checkpoints" / "ce_plugin_state_epoch_2.json").unlink()
    args3 = [a if a != "1" or args[i - 1] != "--epochs" else "3" for i, a in enumerate(args)]
    proc = torchrun(2, ["-m", "open_clip_train.main", "--", *args3, "--resume", "latest"], CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "ce_clip: no plugin state at" in (logs / "ce" / "out.log").read_text()
    records = read_metrics(logs / "ce")
    assert [r["step"] for r in records] == list(range(1, 3 * per_epoch + 1))
    assert [r["samples"] for r in records] == [16 * r["step"] for r in records]


def test_explicit_entry_point_without_the_import_hook(tmp_path):
    """python -m openclip_ce.train works where .pth files are skipped (hook removed here)."""
    model, data, logs = tiny_model(tmp_path), demo_shards(tmp_path, 2, 8), tmp_path / "logs"
    args = train_args(model, data, logs, "explicit", "--loss", "ce_clip", "--ce-neg-types", "rel,obj",
                      "--ce-itc-negatives", "own", samples=16, batch=8)
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != 'OpenClipPluginFinder'];"
            "from openclip_ce.train import cli_main; sys.exit(cli_main(sys.argv[1:]))")
    proc = run([sys.executable, "-c", code, "--", *args])
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (logs / "explicit" / "out.log").read_text()
    assert "ce_threshold_rel" in log and "ce_threshold_att" not in log  # only the chosen types


def test_loss_is_a_real_flag_and_unsupported_combinations_are_refused():
    base = ["--model", "ViT-B-32", "--train-data", "x.tar"]
    res = parse_many([
        base + ["--loss", "ce_clip", "--ce-alpha", "0.3", "--ce-neg-types", "obj,rel"],
        base + ["--loss", "bogus"],
        base,
        base + ["--loss", "ce_clip", "--horovod"],
        ["--model", "coca_ViT-B-32", "--loss", "ce_clip"],
        base + ["--loss", "ce_clip", "--distill-model", "ViT-B-32", "--distill-pretrained", "openai"],
        base + ["--loss", "ce_clip", "--ce-neg-types", "rel,colour"],
        base + ["--loss", "ce_clip", "--ce-dist-timeout", "0"],
    ])
    assert res[0] == {"ok": True, "loss": "ce_clip", "dist": None, "alpha": 0.3, "types": ["rel", "obj"]}
    assert not res[1]["ok"] and "invalid choice: 'bogus'" in res[1]["err"]
    assert res[2]["ok"] and res[2]["loss"] == "clip"
    for r, what in zip(res[3:6], ["--horovod", "CoCa", "distillation"]):
        assert not r["ok"] and r["code"] == 2, r
        assert what in r["err"] and "not supported with --loss ce_clip" in r["err"], r
    assert not res[6]["ok"] and "--ce-neg-types" in res[6]["err"] and "colour" in res[6]["err"]
    assert not res[7]["ok"] and "--ce-dist-timeout: must be a number > 0, got 0" in res[7]["err"]


def test_help_lists_plugin_flags_and_disable_turns_the_hook_off():
    on = run([sys.executable, "-m", "open_clip_train.main", "--help"])
    assert on.returncode == 0 and "--ce-alpha" in on.stdout and "--loss {clip,ce_clip}" in on.stdout
    off = run([sys.executable, "-m", "open_clip_train.main", "--help"], OPENCLIP_CE_DISABLE="1")
    assert off.returncode == 0 and "--ce-alpha" not in off.stdout and "--loss-dist-impl" in off.stdout


def test_entry_points_refuse_ce_clip_when_plugin_is_not_active(tmp_path):
    proc = run([sys.executable, "-m", "openclip_ce.train", "--model", "ViT-B-32", "--loss", "ce_clip"],
               OPENCLIP_CE_DISABLE="1")
    assert proc.returncode == 2
    assert "--loss ce_clip needs the openclip-ce plugin" in proc.stderr and "OPENCLIP_CE_DISABLE" in proc.stderr
    # the abbreviation open_clip alone would have accepted is refused too
    proc = run([sys.executable, "-m", "openclip_ce.train", "--model", "ViT-B-32", "--los", "ce_clip"],
               OPENCLIP_CE_DISABLE="1")
    assert proc.returncode == 2 and "--loss ce_clip needs" in proc.stderr


def test_unsupported_open_clip_version():
    fake = "import openclip_ce.integration.versions as v; v.openclip_version = lambda: '3.2.0';"
    # a run that does not ask for a plugin goes on untouched, after one warning line
    plain = run([sys.executable, "-c", fake + "import open_clip_train.main as m; from open_clip_train.params import "
                 "parse_args; ns = parse_args(['--model', 'ViT-B-32']); print(hasattr(ns, 'loss'), "
                 "hasattr(m.parse_args, '__wrapped__'))"])
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert plain.stdout.split() == ["False", "False"]
    warnings = [l for l in plain.stderr.splitlines() if l.startswith("openclip-ce: warning:")]
    assert len(warnings) == 1 and "open_clip_torch 3.2.0 is installed" in warnings[0], plain.stderr[-3000:]
    # a run that asks for ce_clip is refused, in one line, before anything is patched
    via_hook = run([sys.executable, "-c", fake + "import open_clip_train.main", "--loss", "ce_clip"])
    assert via_hook.returncode == 2
    assert ("open_clip_train: error: --loss ce_clip: openclip-ce" in via_hook.stderr
            and "supports open_clip_torch 3.3.x and 4.x from 4.2.0.dev0 (main), but open_clip_torch 3.2.0 is installed"
            in via_hook.stderr)
    assert "Traceback" not in via_hook.stderr
    explicit = run([sys.executable, "-c", fake + "import sys; from openclip_ce.train import cli_main;"
                    "import open_clip, open_clip.factory; sys.exit(cli_main(['--loss', 'ce_clip'])"
                    " if open_clip.create_loss is open_clip.factory.create_loss else 99)"])
    assert explicit.returncode == 2 and "open_clip_torch 3.2.0 is installed" in explicit.stderr


def _bad_shards(tmp_path):
    rng = random.Random(1)
    kinds = ["ok", "missing", "ok", "malformed", "ok", "unknown-type", "ok", "ok"]
    for s in range(2):
        write_shard(tmp_path / f"bad{s}.tar", [(f"s{s}k{i}", sample_members(rng, k)) for i, k in enumerate(kinds)])
    return str(tmp_path / "bad{0..1}.tar")


def test_bad_neg_json_is_counted_or_strictly_rejected(tmp_path):
    model, data, logs = tiny_model(tmp_path), _bad_shards(tmp_path), tmp_path / "logs"
    lenient = run([sys.executable, "-m", "open_clip_train.main",
                   *train_args(model, data, logs, "lenient", "--loss", "ce_clip", samples=16, batch=4)])
    assert lenient.returncode == 0, lenient.stderr[-4000:]
    log = (logs / "lenient" / "out.log").read_text()
    assert re.search(r"ce_clip: shard \S+bad\d\.tar key s\dk1: missing neg\.json", log)
    assert re.search(r"key s\dk3: malformed neg\.json \(not valid UTF-8 JSON", log)
    assert re.search(r"key s\dk5: malformed neg\.json \(unknown negative type\(s\) \['colour'\]", log)
    assert "such samples so far in this data worker" in log

    strict = run([sys.executable, "-m", "open_clip_train.main",
                  *train_args(model, data, logs, "strict", "--loss", "ce_clip", "--ce-strict", samples=16, batch=4)])
    assert strict.returncode == 2 and "Traceback" not in strict.stderr, strict.stderr[-3000:]  # one line, named
    assert re.search(r"ERROR \| shard \S+bad\d\.tar key s\dk\d: (missing|malformed) neg\.json.*--ce-strict\)$",
                     strict.stderr, re.M), strict.stderr[-3000:]


def test_csv_dataset_with_negative_columns(tmp_path):
    from openclip_ce.testing.toy_shards import make_sample

    rng = random.Random(2)
    rows = ["filepath\ttitle\tneg_rel\tneg_att\tneg_act\tneg_obj"]
    for i in range(16):
        caption, jpg, negs = make_sample(rng)
        (tmp_path / f"{i}.jpg").write_bytes(jpg)
        rows.append("\t".join([str(tmp_path / f"{i}.jpg"), caption] + [negs[t] or "" for t in ("rel", "att", "act", "obj")]))
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    model, logs = tiny_model(tmp_path), tmp_path / "logs"
    args = train_args(model, str(tmp_path / "train.csv"), logs, "csv", "--loss", "ce_clip", samples=16, batch=4)
    args[args.index("webdataset")] = "csv"
    proc = run([sys.executable, "-m", "open_clip_train.main", *args])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ce_valid_act: 0 " in (logs / "csv" / "out.log").read_text()

    (tmp_path / "plain.csv").write_text("filepath\ttitle\n" + f"{tmp_path / '0.jpg'}\ta cat\n")
    args[args.index(str(tmp_path / "train.csv"))] = str(tmp_path / "plain.csv")
    args[args.index("csv") + 0] = "csv"
    args[args.index("--name") + 1] = "plain"
    proc = run([sys.executable, "-m", "open_clip_train.main", *args])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-4000:]  # one line, as main's wiring
    assert "plain.csv: missing column(s) ['neg_rel', 'neg_att', 'neg_act', 'neg_obj']" in proc.stderr


def test_bf16_autocast_accumulation_grad_checkpointing_and_val_data_keep_working(tmp_path):
    model, data, logs = tiny_model(tmp_path), demo_shards(tmp_path, 2, 16), tmp_path / "logs"
    # validation shards in plain open_clip format (no neg.json): the val pipeline must not need negatives
    rng = random.Random(5)
    val = [(f"v{i}", {k: v for k, v in sample_members(rng, "missing").items()}) for i in range(8)]
    write_shard(tmp_path / "val.tar", val)
    args = train_args(model, data, logs, "amp", "--loss", "ce_clip", "--precision", "amp_bf16",
                      "--accum-freq", "2", "--grad-checkpointing", "--val-data", str(tmp_path / "val.tar"),
                      "--val-num-samples", "8", samples=32, batch=4)
    proc = run([sys.executable, "-m", "open_clip_train.main", *args])
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (logs / "amp" / "out.log").read_text()
    lines = [l for l in log.splitlines() if "Train Epoch" in l]
    assert len(lines) == 4 and all("ce_threshold_obj" in l for l in lines)  # 32 / (4 * 2) optimizer steps
    assert re.search(r"Eval Epoch: 1 image_to_text_mean_rank: \S+", log)
    assert "missing neg.json" not in log  # validation never looked for negatives


def _csv_data(tmp_path, n=16):
    from openclip_ce.testing.toy_shards import make_sample

    rng = random.Random(3)
    rows = ["filepath\ttitle"]
    for i in range(n):
        caption, jpg, _ = make_sample(rng)
        (tmp_path / f"c{i}.jpg").write_bytes(jpg)
        rows.append(f"{tmp_path / f'c{i}.jpg'}\t{caption}")
    (tmp_path / "plain.csv").write_text("\n".join(rows) + "\n")
    return str(tmp_path / "plain.csv")


def _params(path):
    return dict(l.split(": ", 1) for l in path.read_text().splitlines() if ": " in l)


def test_plain_clip_run_with_the_package_installed_is_stock_open_clip(tmp_path):
    """--loss clip through torchrun with the hook active == the same run with the hook off."""
    model, data, logs = tiny_model(tmp_path), _csv_data(tmp_path), tmp_path / "logs"

    def args(name):
        a = train_args(model, data, logs, name, samples=16, batch=4)
        a[a.index("webdataset")] = "csv"
        return a

    ours = torchrun(1, ["-m", "open_clip_train.main", "--", *args("ours"), "--loss", "clip"])
    assert ours.returncode == 0, ours.stderr[-4000:]
    stock = torchrun(1, ["-m", "open_clip_train.main", "--", *args("stock")], OPENCLIP_CE_DISABLE="1")
    assert stock.returncode == 0, stock.stderr[-4000:]
    p_ours, p_stock = _params(logs / "ours" / "params.txt"), _params(logs / "stock" / "params.txt")
    differing = {k for k in p_ours.keys() | p_stock.keys() if p_ours.get(k) != p_stock.get(k)}
    assert differing == {"loss", "name", "log_path", "checkpoint_path"}, differing  # and only these
    assert p_ours["loss"] == "clip" and "loss" not in p_stock

    def train_lines(name):
        return [re.sub(r"Data \(t\).*?Batch \(t\)[^L]*", "", l.split(" | ", 1)[-1])
                for l in (logs / name / "out.log").read_text().splitlines() if "Train Epoch" in l]

    first_ours, first_stock = train_lines("ours")[0], train_lines("stock")[0]
    loss = re.compile(r"Loss: (\S+)")
    assert loss.search(first_ours).group(1) == loss.search(first_stock).group(1), (first_ours, first_stock)
    assert not re.search(r"\bce_(alpha|threshold|valid)", (logs / "ours" / "out.log").read_text())


def test_a_ce_clip_run_that_never_sees_a_negative_stops(tmp_path):
    args, logs = no_negatives_args(tmp_path), tmp_path / "logs"
    proc = run([sys.executable, "-m", "open_clip_train.main", *args])
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "no valid hard negative reached the loss in the first 50 optimizer steps" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--ce-allow-no-negatives" in (logs / "none" / "out.log").read_text()

    args[args.index("--name") + 1] = "allowed"
    proc = run([sys.executable, "-m", "open_clip_train.main", *args, "--ce-allow-no-negatives"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (logs / "allowed" / "checkpoints" / "epoch_1.pt").exists()


def test_a_model_with_a_nan_weight_stops_at_the_first_log_step_without_a_checkpoint(tmp_path):
    """One NaN weight: the loss is NaN from step 1; the run stops there in one line instead of training NaN
    to the end and writing a NaN checkpoint and a state file with a bare NaN (invalid JSON)."""
    model, data, logs = nan_model(tmp_path), demo_shards(tmp_path, 2, 8), tmp_path / "logs"
    args = train_args(model, data, logs, "nan", "--loss", "ce_clip", "--log-every-n-steps", "3", samples=16, batch=4)
    proc = run([sys.executable, "-m", "open_clip_train.main", *args])
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if "| ERROR |" in l]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "training loss is not finite (NaN or inf) since optimizer step 1; stopped at step 1" in errors[0]
    checkpoints = logs / "nan" / "checkpoints"
    assert not (checkpoints / "epoch_1.pt").exists() and not (checkpoints / "ce_plugin_state_epoch_1.json").exists()


def test_resume_latest_from_a_damaged_checkpoint_names_the_newest_whole_one(tmp_path):
    """A latest checkpoint cut short (a job killed while saving): one line naming it and the one to resume
    from, before anything is loaded, instead of torch's traceback at every restart of the job."""
    checkpoints = tmp_path / "logs" / "cut" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({"epoch": 1, "state_dict": {"w": torch.zeros(4)}}, checkpoints / "epoch_1.pt")
    torch.save({"epoch": 2, "state_dict": {"w": torch.zeros(4096)}}, checkpoints / "epoch_2.pt")
    whole = (checkpoints / "epoch_2.pt").read_bytes()
    (checkpoints / "epoch_2.pt").write_bytes(whole[:len(whole) // 2])
    (checkpoints / "epoch_10.pt").write_bytes(b"")  # open_clip picks epoch_10 last (natural order): damaged too
    args = train_args(tiny_model(tmp_path), demo_shards(tmp_path, 1, 8), tmp_path / "logs", "cut", "--loss", "ce_clip",
                      "--resume", "latest", samples=8, batch=4)
    proc = run([sys.executable, "-m", "open_clip_train.main", *args])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = next(l for l in proc.stderr.splitlines() if "--resume latest" in l)
    damaged = checkpoints / "epoch_10.pt"
    assert f"{damaged}, the checkpoint open_clip would resume from, is damaged (an empty file)" in line
    assert f"the newest whole checkpoint is {checkpoints / 'epoch_1.pt'}" in line


def test_packed_text_batches_give_the_unpacked_first_step_loss(tmp_path):
    """open_clip's main on the deterministic csv dataset: packed text rows == --ce-no-pack."""
    from openclip_ce.testing.tiny_clip import TINY_VIT_B_32_CFG, write_tiny_model_dir

    model = write_tiny_model_dir(tmp_path / "model77", TINY_VIT_B_32_CFG)  # 77-token causal tower, argmax pooling
    data, logs = csv_with_negatives(tmp_path), tmp_path / "logs"

    def first_step(name, *extra):
        args = train_args(model, data, logs, name, "--loss", "ce_clip", *extra, samples=8, batch=8)
        args[args.index("webdataset")] = "csv"
        proc = run([sys.executable, "-m", "open_clip_train.main", *args])
        assert proc.returncode == 0, proc.stderr[-4000:]
        log = (logs / name / "out.log").read_text()
        line = next(l for l in log.splitlines() if "Train Epoch" in l)
        values = {k: float(v) for k, v in re.findall(r"(Loss|Contrastive_loss|Imc_loss|Cmr_loss): ([-\d.e+]+)", line)}
        assert set(values) == {"Loss", "Contrastive_loss", "Imc_loss", "Cmr_loss"}, line
        return log, values

    # every term from step 1 (not the schedule of a run from random weights), so that IMC and CMR are compared too
    packed_log, packed = first_step("packed", "--ce-schedule", "off")
    full_log, full = first_step("notrim", "--ce-no-pack", "--ce-schedule", "off")
    assert "captions and valid negatives are packed into rows of the context length" in packed_log
    assert re.search(r"packed text batches padded to \d+ rows", packed_log)
    assert "one caption per row at the full context length: --ce-no-pack" in full_log
    assert re.search(r"rows text batches padded to \d+ rows", full_log) and "packed text batches" not in full_log
    for k in full:
        assert packed[k] == pytest.approx(full[k], rel=1e-4, abs=1e-6), (k, packed, full)
