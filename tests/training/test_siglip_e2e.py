"""End to end, as a user runs it: open_clip's own training main with --siglip --loss ce_clip (CE-SigLIP)."""

import json
import re

import pytest
import torch

from openclip_ce.testing.proc import torchrun
from openclip_ce.testing.training_runs import TRAIN_LINE, demo_shards, parse_many, tiny_model, train_args

pytestmark = pytest.mark.slow


def test_torchrun_two_ranks_trains_ce_siglip_with_accumulation_and_logs_its_terms(tmp_path):
    model, data, logs = tiny_model(tmp_path), demo_shards(tmp_path), tmp_path / "logs"
    args = train_args(model, data, logs, "ces", "--loss", "ce_clip", "--siglip", "--loss-dist-impl", "shift",
                      "--accum-freq", "2", "--dist-backend", "gloo", "--save-frequency", "1")
    proc = torchrun(2, ["-m", "open_clip_train.main", "--", *args])
    assert proc.returncode == 0, proc.stderr[-5000:]
    log = (logs / "ces" / "out.log").read_text()
    assert "world_size: 2" in log and "siglip: True" in log and "loss: ce_clip" in log
    assert "ce_clip with --siglip: CE-SigLIP" in log and "--loss-dist-impl shift" in log
    lines = [l for l in log.splitlines() if "Train Epoch" in l]
    assert len(lines) == 2 and all(TRAIN_LINE.search(l) for l in lines), lines
    assert "Logit Scale: 10.000" in lines[0]  # open_clip's SigLIP initialisation, log(10)
    state = json.loads((logs / "ces" / "checkpoints" / "ce_plugin_state_epoch_1.json").read_text())
    assert set(state["state"]["thresholds"]) == {"rel", "att", "act", "obj"}
    sd = torch.load(logs / "ces" / "checkpoints" / "epoch_1.pt", map_location="cpu", weights_only=False)["state_dict"]
    # the bias was trained: a softmax (CE-CLIP) loss is blind to it, only the sigmoid ITC moves it
    assert float(sd["module.logit_bias"]) != -10.0


def test_siglip_is_accepted_and_its_dist_impl_checked():
    base = ["--model", "ViT-B-32", "--train-data", "x.tar", "--loss", "ce_clip", "--siglip"]
    ok, gather, bad = parse_many([base, base + ["--loss-dist-impl", "gather"], base + ["--loss-dist-impl", "ring"]])
    assert ok["ok"] and ok["loss"] == "ce_clip" and gather["ok"] and gather["dist"] == "gather"
    assert not bad["ok"] and bad["code"] == 2
    assert re.search(r"--loss-dist-impl ring is not one of SigLIP's: bidir, shift, reduce, gather", bad["err"])


def test_demo_siglip_compares_siglip_with_ce_siglip(tmp_path):
    """`openclip-ce demo --siglip` (--quick sizes): both runs train with open_clip's --siglip, the report
    puts SigLIP and CE-SigLIP side by side, eval loads the checkpoints (with their logit_bias) strictly."""
    from openclip_ce.demo import scenes
    from openclip_ce.testing.proc import cli, run

    out = tmp_path / "d"
    proc = run(cli() + ["demo", "--quick", "--siglip", "--out", str(out)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    stages = [l for l in proc.stderr.splitlines() if re.match(r"[1-5]/5 ", l)]
    assert "3/5 training SigLIP (--loss clip --siglip): done" in "\n".join(stages)
    assert "3/5 training CE-SigLIP (--loss ce_clip --siglip): done" in "\n".join(stages)
    for name, loss in (("siglip", "loss: clip"), ("ce-siglip", "loss: ce_clip")):
        log = (out / "runs" / name / "out.log").read_text()
        assert loss in log and "siglip: True" in log and "Train Epoch" in log
    assert "ce_clip with --siglip: CE-SigLIP" in (out / "runs" / "ce-siglip" / "out.log").read_text()
    for png in ("training_siglip.png", "training_ce_siglip.png", "compare.png", "analysis.png"):
        assert (out / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    report = (out / "report.md").read_text()
    assert report.startswith("# openclip-ce demo: SigLIP vs CE-SigLIP")
    assert "| SigLIP | CE-SigLIP | CE-SigLIP - SigLIP | p |" in report
    base = json.loads((out / "results" / "siglip.json").read_text())["summary"]
    ce = json.loads((out / "results" / "ce-siglip.json").read_text())["summary"]
    for split in scenes.SPLITS:
        row = next(l for l in report.splitlines() if l.startswith(f"| {split} |"))
        assert f"| {100 * base['sugarcrepe/' + split]:.1f} | {100 * ce['sugarcrepe/' + split]:.1f} |" in row
    assert "[report/training_ce_siglip.png]" in report


def test_open_clip_train_step_is_the_reference_objective_and_accumulates_exactly(tmp_path):
    """open_clip's own train_one_epoch with --siglip --loss ce_clip: one SGD step equals a hand-made step
    on the loop-form reference loss, and --accum-freq 2 gives the same step (bias and scale included)."""
    import copy
    import math

    import open_clip
    from openclip_ce.training.data import NegativesTokenizer
    from openclip_ce.training.plugin import plugin
    from openclip_ce.testing.siglip_reference import reference_ce_siglip
    from openclip_ce.testing.training_runs import toy_batch_texts, train_full_and_accumulated, train_step_args

    name = tiny_model(tmp_path)
    torch.manual_seed(0)
    base = open_clip.create_model(name, output_dict=True, init_logit_scale=math.log(10), init_logit_bias=-10)
    tok = NegativesTokenizer(open_clip.get_tokenizer(name))
    images, tokens = torch.randn(8, 3, 32, 32), tok(toy_batch_texts())  # one sample without any negative

    def siglip_args(accum, batch):
        args = train_step_args(accum, batch)
        args.siglip, args.loss_dist_impl = True, None
        return args

    def is_ce_siglip(loss):
        assert type(loss).__name__ == "CeSigLipLoss"

    results = train_full_and_accumulated(base, images, tokens, siglip_args, check_loss=is_ce_siglip)

    # the same step by hand, on the loop-form reference
    model = copy.deepcopy(base)
    plugin.adapt_model(siglip_args(1, 8), model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out = model(images, tokens)
    itc, imc, cmr, _ = reference_ce_siglip(out["image_features"], out["text_features"], out["logit_scale"],
                                           out["logit_bias"], out["neg_text_features"], out["neg_mask"], [0.0] * 4)
    (itc + 0.2 * imc + 0.4 * cmr).backward()
    opt.step()
    by_hand = dict(model.named_parameters())

    p1, th1 = results[1]
    p2, th2 = results[2]
    moved = 0
    for k in p1:
        torch.testing.assert_close(p1[k], by_hand[k], rtol=1e-5, atol=1e-6, msg=f"parameter {k} vs reference")
        torch.testing.assert_close(p2[k], p1[k], rtol=1e-5, atol=1e-6, msg=f"parameter {k} with --accum-freq 2")
        moved += int(not torch.equal(p1[k], dict(base.named_parameters())[k]))
    assert moved > 10 and not torch.equal(p1["logit_bias"], base.logit_bias)  # the step moved the model and bias
    assert th1 == th2 and any(v != 0 for v in th1.values())  # one threshold update, from the whole batch
