"""The CE terms' schedule (--ce-schedule): the gate and the ramp, as CE-CLIP and CE-SigLIP train with them; the
same decision on every rank; no host read and one compiled graph; the defaults (from random weights: gated;
fine-tuning: the paper's, unchanged) and their log line; --resume on open_clip 3.3 and main; the plot."""

import argparse
import copy
import json
import logging
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from openclip_ce.training.loss import CeClipLoss
from openclip_ce.training.schedule import EMA, TermSchedule, sigmoid_chance
from openclip_ce.training.siglip_loss import CeSigLipLoss
from openclip_ce.testing.loss_reference import random_batch

TYPES = ("rel", "att", "act", "obj")


def _call(loss, batch, **kw):
    img, txt, scale, neg, mask = batch
    extra = {"logit_bias": torch.tensor(-3.0)} if isinstance(loss, CeSigLipLoss) else {}
    return loss(img, txt, scale, neg, mask, output_dict=True, **extra, **kw)


# ----------------------------------------------------------------------------- the gate and the ramp
def test_gate_opens_after_patience_steps_at_or_below_the_fraction_then_ramps_and_stays_open():
    s = TermSchedule(enabled=True, fraction=0.5, patience=3, ramp=4)
    ratios = [0.6, 0.1, 0.1, 0.1, 0.1, 0.1] + [0.9] * 8  # below 0.5 from the fourth step; back up once open
    ema, below, opened, factors = None, 0, None, []
    for step, r in enumerate(ratios):  # the documented rule, step by step
        factors.append(0.0 if opened is None else min(1.0, (step - opened + 1) / 4))
        assert float(s.factor()) == pytest.approx(factors[-1])
        s.advance(torch.tensor(r), None, s.factor())
        ema = r if ema is None else EMA * ema + (1 - EMA) * r
        below = below + 1 if ema <= 0.5 else 0
        if opened is None and below >= 3:
            opened = step + 1
        assert float(s.progress) == pytest.approx(ema)
    assert opened is not None and 0 < factors.index(0.25) and factors[-1] == 1.0  # opened, ramped, never closed
    assert factors[factors.index(0.25):factors.index(0.25) + 4] == [0.25, 0.5, 0.75, 1.0]
    m = s.metrics(0.2, 0.4)
    assert m["ce_gate_open_step"] == opened + 1 == factors.index(0.25) + 1  # counted from 1, as the metrics file
    assert m["ce_imc_weight"] == pytest.approx(0.2) and m["ce_cmr_weight"] == pytest.approx(0.4)
    assert s.state() == {"mode": "gate", "step": len(ratios), "open_step": opened, "below": 0,
                         "progress": pytest.approx(ema)}


@pytest.mark.parametrize("cls", [CeClipLoss, CeSigLipLoss])
def test_imc_and_cmr_train_with_the_schedules_share_and_nothing_before_the_gate(cls):
    batch = random_batch(seed=3, p_valid=0.8)
    paper = cls(TYPES)
    gated = cls(TYPES, schedule=TermSchedule(enabled=True, fraction=100.0, patience=2, ramp=2))
    no_extras = cls(TYPES, use_imc=False, use_cmr=False)
    for step, share in enumerate([0.0, 0.0, 0.5, 1.0, 1.0]):
        leaves = [[t.clone().requires_grad_(True) for t in (batch[0], batch[1], batch[3])] for _ in range(3)]
        outs = [_call(loss, (a, b, batch[2], c, batch[4])) for loss, (a, b, c) in zip((paper, gated, no_extras), leaves)]
        for out in outs:
            sum(out.values()).backward()
        full, got, bare = outs
        for k in ("imc_loss", "cmr_loss"):
            torch.testing.assert_close(got[k], share * full[k], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(got["contrastive_loss"], full["contrastive_loss"])
        assert gated.schedule_metrics()["ce_imc_weight"] == pytest.approx(0.2 * share)
        if share == 0.0:  # gate closed: the gradients are the contrastive loss's alone
            for a, b in zip(leaves[1], leaves[2]):
                torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7)
    assert gated.schedule_metrics()["ce_gate_open_step"] == 3
    assert "ce_gate_open_step" not in paper.schedule_metrics()  # no schedule: weights as given, from step 1
    assert paper.schedule_metrics()["ce_imc_weight"] == pytest.approx(0.2)


def test_progress_is_one_when_every_pair_scores_alike():
    """Progress = contrastive loss / chance, chance = the lowest loss of constant scores: CE-CLIP's softmax
    and CE-SigLIP's sigmoid (whose best constant is sigmoid(S) = 1/n over n columns) both sit at 1 there."""
    n_cols = torch.arange(2.0, 40.0)
    c = torch.linspace(-12, 4, 20001)[:, None]
    brute = (F.softplus(-c) + (n_cols - 1) * F.softplus(c)).min(0).values  # sum of -log sigmoid(z c) over columns
    torch.testing.assert_close(sigmoid_chance(n_cols), brute, rtol=1e-5, atol=1e-5)

    img, _, scale, neg, mask = random_batch(seed=5, p_valid=0.7)
    point = F.normalize(torch.ones(img.shape[1]), dim=0)
    same, same_neg = point.expand_as(img).contiguous(), point.expand_as(neg).contiguous()
    for mode in ("global", "own"):
        loss = CeClipLoss(TYPES, itc_negatives=mode)
        loss(same, same, scale, same_neg, mask)
        assert loss.schedule_metrics()["ce_progress"] == pytest.approx(1.0, rel=1e-6)
    b, valid = img.shape[0], int(mask.sum())
    n = b + valid  # global negatives: every image has every text and valid negative as its columns
    bias = math.log(1 / (n - 1)) - float(scale)  # S = scale * 1 + bias: sigmoid(S) = 1/n
    loss = CeSigLipLoss(TYPES)
    loss(same, same, scale, same_neg, mask, logit_bias=torch.tensor(bias))
    assert loss.schedule_metrics()["ce_progress"] == pytest.approx(1.0, rel=1e-5)


def test_accum_freq_advances_the_schedule_once_per_optimizer_step():
    batch = random_batch(seed=2)
    one = CeClipLoss(TYPES, schedule=TermSchedule(enabled=True, fraction=100.0, patience=1, ramp=3))
    two = CeClipLoss(TYPES, accum_freq=2, schedule=TermSchedule(enabled=True, fraction=100.0, patience=1, ramp=3))
    for _ in range(4):
        got_one = _call(one, batch)
        for _ in range(2):  # open_clip calls the loss accum_freq times per step, with the whole accumulated batch
            got_two = _call(two, batch)
        torch.testing.assert_close(got_two["imc_loss"], got_one["imc_loss"])
        assert two.schedule.state() == one.schedule.state()
    assert one.schedule.state()["step"] == 4 and one.schedule.state()["open_step"] == 1


@pytest.mark.slow
def test_every_rank_takes_the_global_batchs_decision(tmp_path):
    """torchrun, 2 gloo ranks: halves of one batch whose own progress would decide differently; every rank
    follows the single-process schedule of the whole batch, step by step (CE-CLIP modes, --accum-freq 2,
    CE-SigLIP)."""
    from openclip_ce.testing.proc import torchrun_results

    ranks = torchrun_results(Path(__file__).parent / "dist" / "schedule_ranks.py", 2, tmp_path)
    assert len(ranks[0]) == 6
    opened = 0
    for case0, case1 in zip(*ranks):
        own = [h <= case0["fraction"] for h in case0["halves"]]
        whole = case0["whole"] <= case0["fraction"]
        assert any(o != whole for o in own)  # one rank's own loss would decide otherwise
        for got in (case0["this_rank"], case1["this_rank"]):
            assert [s["open_step"] for s in got] == [s["open_step"] for s in case0["reference"]], case0["options"]
            assert [s["step"] for s in got] == list(range(1, 7))  # optimizer steps (--accum-freq 2: 12 calls)
            for s, ref in zip(got, case0["reference"]):
                assert s["progress"] == pytest.approx(ref["progress"], rel=1e-5)
                assert s["ce_imc_weight"] == pytest.approx(ref["ce_imc_weight"])
        opened += case0["reference"][-1]["open_step"] is not None
    assert 0 < opened < 6  # both decisions occur


# ----------------------------------------------------------------------------- on a GPU's terms
def _gated():
    return CeClipLoss(TYPES, schedule=TermSchedule(enabled=True, fraction=100.0, patience=1, ramp=2))


def test_a_gated_step_reads_nothing_back_and_compiles_to_one_graph_while_the_gate_opens():
    from openclip_ce.testing.compiled_steps import compiled_against_eager, step, tiny_clip
    from openclip_ce.testing.host_sync import count_host_reads
    from openclip_ce.training.packing import CAPACITY, layout_text_batch
    from openclip_ce.testing.text_batches import text_batch

    model, spec = tiny_clip()
    batches = [layout_text_batch(text_batch(8, seed=seed), spec) for seed in range(4)]
    CAPACITY.configure(max(b.tokens.shape[0] for b in batches))
    eager_model, eager_loss, loss = copy.deepcopy(model), _gated(), _gated()

    counts = []
    for batch in batches[:3]:  # eagerly: after the first step, no host read, also as the gate opens and ramps
        counts.append(count_host_reads(lambda: step(eager_model, eager_loss, torch.randn(8, 3, 32, 32),
                                                    batch.to("cpu")).backward())[1])
    assert counts[1:] == [{}, {}] and eager_loss.schedule.state()["open_step"] == 1
    assert count_host_reads(eager_loss.schedule_metrics)[1] == {"Tensor.tolist": 1}  # at log steps: one read

    eager_model, eager_loss = copy.deepcopy(model), _gated()
    weights = []

    def same_schedule():
        assert loss.schedule.state() == eager_loss.schedule.state()
        weights.append(loss.schedule_metrics()["ce_imc_weight"])

    counter = compiled_against_eager(model, loss, eager_model, eager_loss, batches, after_step=same_schedule)
    assert weights == pytest.approx([0.0, 0.1, 0.2, 0.2])  # closed, opened, ramped: inside the compiled graph
    assert counter.frame_count == 1
    CAPACITY.configure(None)


# ----------------------------------------------------------------------------- defaults, log line
def _plugin_args(*argv, **fields):
    from openclip_ce.training.plugin import CeClipPlugin

    parser = argparse.ArgumentParser()
    CeClipPlugin().add_arguments(parser)
    args = parser.parse_args(list(argv))
    base = dict(rank=0, world_size=1, accum_freq=1, local_loss=False, gather_with_grad=False, device="cpu",
                siglip=False, loss_dist_impl=None, logs=None, name=None, pretrained="", resume=None, model="ViT-B-32")
    for k, v in {**base, **fields}.items():
        setattr(args, k, v)
    return args


@pytest.mark.parametrize("argv, fields, gated, why", [
    ((), {}, True, "training from random weights (no --pretrained, no --resume)"),
    ((), {"pretrained": "openai"}, False, "fine-tuning from --pretrained openai"),
    ((), {"resume": "/ckpt/epoch_3.pt"}, False, "resuming a checkpoint"),
    ((), {"pretrained_image": True}, True, "training from random weights"),  # the text tower starts random
    (("--ce-schedule", "off"), {}, False, "--ce-schedule off"),
    (("--ce-schedule", "gate"), {"pretrained": "openai"}, True, "--ce-schedule gate"),
    ((), {"siglip": True}, True, "training from random weights"),
    ((), {"model": "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"}, False, "fine-tuning the weights of --model hf-hub:"),
    ((), {"model": "local-dir:WEIGHTS"}, False, "fine-tuning the weights of --model local-dir:"),  # a folder with weights
    ((), {"model": "local-dir:CONFIG"}, True, "training from random weights"),  # a config alone: random weights
])
def test_defaults_gate_a_run_from_random_weights_only_and_say_so_in_one_line(caplog, tmp_path, argv, fields, gated, why):
    from openclip_ce.testing.tiny_clip import write_tiny_model_dir
    from openclip_ce.training.plugin import CeClipPlugin

    if fields.get("model", "").startswith("local-dir:"):
        folder = Path(write_tiny_model_dir(tmp_path / "m")[len("local-dir:"):])
        if fields["model"] == "local-dir:WEIGHTS":
            (folder / "open_clip_model.safetensors").write_bytes(b"")
        fields = {**fields, "model": f"local-dir:{folder}"}
    with caplog.at_level(logging.INFO, logger="openclip_ce.training"):
        loss = CeClipPlugin().create_loss(_plugin_args(*argv, **fields))
    assert loss.schedule.enabled is gated and isinstance(loss, CeSigLipLoss) is bool(fields.get("siglip"))
    assert loss.imc_detach_positive is gated  # --ce-imc-detach-positive auto: with the gate, from random weights
    lines = [r.getMessage() for r in caplog.records if "schedule" in r.getMessage()]
    assert len(lines) == 1 and why in lines[0], lines
    if gated:
        assert "IMC and CMR at weight 0 until" in lines[0] and "IMC with S(I,T) out of its gradient" in lines[0]
        assert "--ce-schedule off trains the paper's objective" in lines[0]
    else:
        assert "every CE term at full weight from step 0" in lines[0] and "the paper's IMC" in lines[0]
        assert "--ce-schedule gate" in lines[0]


def test_flags_have_help_and_refuse_bad_values():
    from openclip_ce.training.plugin import CeClipPlugin

    parser = argparse.ArgumentParser()
    CeClipPlugin().add_arguments(parser)
    text = parser.format_help()
    for flag in ("--ce-schedule {auto,gate,off}", "--ce-gate-fraction F", "--ce-gate-patience N", "--ce-ramp-steps N"):
        assert flag in text, flag
    args = parser.parse_args([])
    assert (args.ce_schedule, args.ce_gate_fraction, args.ce_gate_patience, args.ce_ramp_steps) == ("auto", 0.5, 10, 100)
    assert args.ce_imc_detach_positive == "auto"
    assert parser.parse_args(["--ce-imc-detach-positive"]).ce_imc_detach_positive == "on"  # the flag alone
    for argv, fields, detach in ((["--ce-imc-detach-positive", "off"], {}, False),  # from random weights, paper's IMC
                                 (["--ce-imc-detach-positive"], {"pretrained": "openai"}, True)):  # fine-tuning, detached
        assert CeClipPlugin().create_loss(_plugin_args(*argv, **fields)).imc_detach_positive is detach
    for bad in (["--ce-gate-fraction", "0"], ["--ce-gate-patience", "0"], ["--ce-ramp-steps", "-1"],
                ["--ce-schedule", "later"], ["--ce-imc-detach-positive", "maybe"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_fine_tuning_trains_the_papers_objective_from_step_one_to_twenty():
    """A pretrained start (--pretrained) with the default flags: 20 steps of a tiny model with the plugin's loss
    give the losses of the same 20 steps with the loop reference of the paper's objective (every term at full
    weight from step 1, thresholds from the previous step), at the first step and at the twentieth."""
    from openclip_ce.training.plugin import CeClipPlugin
    from openclip_ce.testing.loss_reference import reference_ce_clip, reference_next_thresholds

    g = torch.Generator().manual_seed(0)
    d_in, d, n = 12, 8, 6
    data = [(torch.randn(n, d_in, generator=g), torch.randn(n, d_in, generator=g), torch.randn(n, 4, d_in, generator=g),
             torch.rand(n, 4, generator=g) < 0.7) for _ in range(20)]

    def train(loss_fn):
        torch.manual_seed(0)
        enc_i, enc_t = torch.nn.Linear(d_in, d), torch.nn.Linear(d_in, d)
        opt = torch.optim.AdamW([*enc_i.parameters(), *enc_t.parameters()], lr=1e-2)
        losses = []
        for x_i, x_t, x_n, mask in data:
            img, txt, neg = (F.normalize(e(x), dim=-1) for e, x in ((enc_i, x_i), (enc_t, x_t), (enc_t, x_n)))
            total = loss_fn(img, txt, torch.tensor(10.0), neg, mask)
            opt.zero_grad()
            total.backward()
            opt.step()
            losses.append(float(total.detach()))
        return losses

    plugin_loss = CeClipPlugin().create_loss(_plugin_args(pretrained="/weights/base.pt"))
    got = train(lambda *a: sum(plugin_loss(*a, output_dict=True).values()))
    thresholds = [0.0] * 4

    def reference(img, txt, scale, neg, mask):
        itc, imc, cmr, gaps = reference_ce_clip(img, txt, scale, neg, mask, thresholds)
        thresholds[:] = reference_next_thresholds([[float(x) for x in gk] for gk in gaps], thresholds)
        return itc + 0.2 * imc + 0.4 * cmr

    want = train(reference)
    assert got[0] == pytest.approx(want[0], rel=1e-5) and got[19] == pytest.approx(want[19], rel=1e-5)
    assert got == pytest.approx(want, rel=1e-5)


# ----------------------------------------------------------------------------- --resume, metrics, plot
@pytest.mark.parametrize("flag, restored", [((), True), (("--ce-imc-detach-positive", "off"), False)])
def test_resume_keeps_the_imc_the_run_was_trained_with_unless_a_flag_says_otherwise(caplog, flag, restored):
    """A resumed run's --ce-schedule auto decides 'off' (and with it the paper's IMC): the checkpoint's gate and
    its detached IMC are restored, so a from-scratch run does not change objective at a resume."""
    from openclip_ce.training.plugin import CeClipPlugin

    plugin = CeClipPlugin()
    loss = plugin.create_loss(_plugin_args(*flag, resume="/ckpt/epoch_3.pt"))
    assert loss.imc_detach_positive is False and not loss.schedule.enabled
    gated = CeClipPlugin().create_loss(_plugin_args())
    with caplog.at_level(logging.INFO, logger="openclip_ce.training"):
        plugin.load_state_dict(loss, CeClipPlugin().state_dict(gated))
    assert loss.schedule.enabled and loss.imc_detach_positive is restored
    assert any("resume: IMC of the checkpoint restored" in r.getMessage() for r in caplog.records) is restored


def _resume_run(tmp_path, main_cmd, **env):
    from openclip_ce.metrics_file import read_metrics
    from openclip_ce.testing.tiny_clip import write_tiny_model_dir
    from openclip_ce.training.plots import gate_opened, plot_training_log
    from openclip_ce.testing.proc import run
    from openclip_ce.testing.training_runs import csv_with_negatives, train_args

    model = write_tiny_model_dir(tmp_path / "model")
    data, logs = csv_with_negatives(tmp_path, n=12), tmp_path / "logs"
    args = train_args(model, data, logs, "g", "--loss", "ce_clip", "--ce-schedule", "gate", "--ce-gate-fraction", "5",
                      "--ce-gate-patience", "2", "--ce-ramp-steps", "4", samples=12, batch=4)
    args[args.index("webdataset")] = "csv"
    proc = run([*main_cmd, *args], timeout=600, **env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (logs / "g" / "out.log").read_text()
    assert "ce_clip schedule (--ce-schedule gate): IMC and CMR at weight 0 until" in log
    args[args.index("--epochs") + 1] = "2"
    proc = run([*main_cmd, *args, "--resume", "latest"], timeout=600, **env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (logs / "g" / "out.log").read_text()
    assert "resume: CE schedule of the checkpoint restored: IMC and CMR at weight 0 until" in log
    assert "; gate opened at step 3" in log
    records = read_metrics(logs / "g")
    # the gate opens after two steps at or below 5 x chance; IMC trains from step 3 at 1/4 of alpha, then ramps on
    # across the resume (a fresh gate would be closed again, at 0)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["ce_imc_weight"] for r in records] == pytest.approx([0, 0, 0.05, 0.1, 0.15, 0.2])
    assert [r["ce_cmr_weight"] for r in records] == pytest.approx([0, 0, 0.1, 0.2, 0.3, 0.4])
    assert [r.get("ce_gate_open_step") for r in records] == [None, 3, 3, 3, 3, 3]
    assert [r["imc_loss"] > 0 for r in records] == [False, False, True, True, True, True]
    assert all(0 < r["ce_progress"] < 2 for r in records)
    assert "ce_imc_weight: 0.05" in log and "ce_gate_open_step: 3" in log  # the log line (TensorBoard alike)
    assert gate_opened(logs / "g") == (3, 8)  # step 3, after 8 samples
    png = plot_training_log(logs / "g", tmp_path / "t.png")
    assert Path(png).read_bytes()[:4] == b"\x89PNG"
    state = json.loads((logs / "g" / "checkpoints" / "ce_plugin_state_epoch_2.json").read_text())["state"]
    assert state["imc_detach_positive"] is True  # the gate's IMC, saved with the schedule
    assert state["schedule"] == {"mode": "gate", "step": 6, "open_step": 2, "below": 6,
                                 "progress": pytest.approx(records[-1]["ce_progress"], rel=1e-5)}
    return log


@pytest.mark.slow
def test_resume_restores_the_schedule_on_open_clip_3_3(tmp_path):
    _resume_run(tmp_path, [sys.executable, "-m", "open_clip_train.main"])


@pytest.mark.slow
def test_resume_restores_the_schedule_on_open_clip_main(main_src, tmp_path):
    from openclip_ce.testing.open_clip_main import pythonpath

    log = _resume_run(tmp_path, [sys.executable, "-m", "open_clip_train.main"], PYTHONPATH=pythonpath(main_src))
    assert re.search(r"\| open_clip_train\.train \| Train Epoch: 1 .*ce_imc_weight: 0\.2", log)
