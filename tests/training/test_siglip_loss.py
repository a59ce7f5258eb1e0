"""CE-SigLIP (``--loss ce_clip --siglip``) against its loop-form reference, open_clip's SigLipLoss and CE-CLIP."""

import argparse

import pytest
import torch

from openclip_ce.training.loss import CeClipLoss
from openclip_ce.training.siglip_loss import CeSigLipLoss
from openclip_ce.testing.loss_reference import random_batch, reference_next_thresholds
from openclip_ce.testing.siglip_reference import reference_ce_siglip

TYPES = ("rel", "att", "act", "obj")


def _loss(**kw):
    return CeSigLipLoss(neg_types=TYPES, **kw)


def _leaves(*tensors):
    return [t.clone().requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("mode", ["global", "own", "none"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_values_and_gradients(mode, seed):
    img, txt, scale, neg, mask = random_batch(seed=seed)
    scale, bias = torch.tensor(7.0 + seed), torch.tensor(-4.0 + seed)
    th = [0.5, 0.0, 2.0, 1.25]
    kw = dict(itc_negatives="global" if mode == "none" else mode, use_itc_negatives=mode != "none")
    loss = _loss(alpha=0.3, beta=0.7, **kw)
    loss.load_threshold_dict(dict(zip(TYPES, th)))

    leaves = _leaves(img, txt, neg, scale, bias)
    out = loss(leaves[0], leaves[1], leaves[3], leaves[2], mask, logit_bias=leaves[4], output_dict=True)
    sum(out.values()).backward()

    ref_leaves = _leaves(img, txt, neg, scale, bias)
    itc, imc, cmr, gaps = reference_ce_siglip(ref_leaves[0], ref_leaves[1], ref_leaves[3], ref_leaves[4],
                                              ref_leaves[2], mask, th, **kw)
    (itc + 0.3 * imc + 0.7 * cmr).backward()

    torch.testing.assert_close(out["contrastive_loss"], itc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["imc_loss"], 0.3 * imc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["cmr_loss"], 0.7 * cmr, rtol=1e-5, atol=1e-6)
    for a, b in zip(leaves, ref_leaves):  # features, logit_scale and logit_bias
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    # the next step's thresholds: the gaps of this one, as in CE-CLIP
    assert list(loss.threshold_dict().values()) == pytest.approx(
        reference_next_thresholds(gaps, th, u=10.0), rel=1e-5, abs=1e-6)


def test_equals_open_clip_siglip_loss_when_extras_are_off():
    from open_clip.loss import SigLipLoss

    img, txt, scale, neg, mask = random_batch(n=10, seed=10)
    ours_in, theirs_in = _leaves(img, txt, scale, torch.tensor(-10.0)), _leaves(img, txt, scale, torch.tensor(-10.0))
    ours = _loss(use_imc=False, use_cmr=False, use_itc_negatives=False)(
        ours_in[0], ours_in[1], ours_in[2], neg, mask, logit_bias=ours_in[3])
    theirs = SigLipLoss()(theirs_in[0], theirs_in[1], theirs_in[2], theirs_in[3])
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    ours.backward()
    theirs.backward()
    for a, b in zip(ours_in, theirs_in):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    # with every negative a placeholder the hard-negative ITC is SigLIP's too
    out = _loss()(img, txt, scale, neg, torch.zeros_like(mask), logit_bias=torch.tensor(-10.0), output_dict=True)
    torch.testing.assert_close(out["contrastive_loss"], theirs.detach(), rtol=1e-6, atol=1e-6)
    assert float(out["imc_loss"]) == 0.0 and float(out["cmr_loss"]) == 0.0


def test_imc_and_cmr_are_ce_clip_terms_at_the_same_scale_whatever_the_bias():
    """The decision documented in docs/training.md (CE-SigLIP): IMC stays a softmax; the bias cancels in IMC and CMR."""
    img, txt, scale, neg, mask = random_batch(seed=3)
    ce = CeClipLoss(TYPES)(img, txt, scale, neg, mask, output_dict=True)
    for bias in (-10.0, 0.0, 3.5):
        loss = _loss()
        out = loss(img, txt, scale, neg, mask, logit_bias=torch.tensor(bias), output_dict=True)
        torch.testing.assert_close(out["imc_loss"], ce["imc_loss"], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(out["cmr_loss"], ce["cmr_loss"], rtol=1e-6, atol=1e-7)
        assert loss.threshold_dict() == pytest.approx(_thresholds_after_one_step(img, txt, scale, neg, mask), rel=1e-6)
    # and the ITC does depend on the bias (a sigmoid loss is not shift-invariant)
    a = _loss()(img, txt, scale, neg, mask, logit_bias=torch.tensor(-10.0), output_dict=True)["contrastive_loss"]
    b = _loss()(img, txt, scale, neg, mask, logit_bias=torch.tensor(0.0), output_dict=True)["contrastive_loss"]
    assert abs(float(a - b)) > 1.0


def _thresholds_after_one_step(img, txt, scale, neg, mask):
    loss = CeClipLoss(TYPES)
    loss(img, txt, scale, neg, mask)
    return loss.threshold_dict()


def test_global_negatives_pair_with_every_image_own_with_their_own():
    img, txt, scale, neg, mask = random_batch(seed=4, p_valid=1.0)
    bias = torch.tensor(-2.0)
    plain = _loss(use_itc_negatives=False)(img, txt, scale, neg, mask, logit_bias=bias, output_dict=True)
    g = _loss(itc_negatives="global")(img, txt, scale, neg, mask, logit_bias=bias, output_dict=True)
    o = _loss(itc_negatives="own")(img, txt, scale, neg, mask, logit_bias=bias, output_dict=True)
    # every hard negative adds positive terms: global adds n times as many pairs as own
    assert g["contrastive_loss"] > o["contrastive_loss"] > plain["contrastive_loss"]


def test_placeholders_take_no_part():
    img, txt, scale, neg, mask = random_batch(seed=8)
    garbage = neg.clone()
    garbage[~mask] = torch.randn_like(garbage[~mask]) * 50
    results = []
    for negs in (neg, garbage):
        for mode in ("global", "own"):
            leaf = negs.clone().requires_grad_(True)
            loss = _loss(itc_negatives=mode)
            out = loss(img, txt, scale, leaf, mask, logit_bias=torch.tensor(-5.0), output_dict=True)
            sum(out.values()).backward()
            assert torch.count_nonzero(leaf.grad[~mask]) == 0
            results.append((out, leaf.grad, loss.threshold_dict()))
    for (out_a, grad_a, th_a), (out_b, grad_b, th_b) in zip(results[:2], results[2:]):
        for key in out_a:
            torch.testing.assert_close(out_a[key], out_b[key])
        torch.testing.assert_close(grad_a, grad_b)
        assert th_a == th_b


def test_needs_the_bias_and_a_known_dist_impl():
    img, txt, scale, neg, mask = random_batch(seed=5)
    with pytest.raises(ValueError, match="logit_bias.*--siglip"):
        _loss()(img, txt, scale, neg, mask)
    with pytest.raises(ValueError, match="dist_impl"):
        _loss(dist_impl="ring")
    assert _loss().dist_impl == "bidir" and _loss(dist_impl="gather").dist_impl == "gather"


def test_accumulation_counts_bias_and_scale_gradients_once_per_step():
    img, txt, scale, neg, mask = random_batch(seed=6)
    grads = []
    for accum in (1, 3):
        s, b = _leaves(scale, torch.tensor(-3.0))
        _loss(accum_freq=accum)(img, txt, s, neg, mask, logit_bias=b).backward()
        grads.append((s.grad, b.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0] / 3)
    torch.testing.assert_close(grads[1][1], grads[0][1] / 3)


def test_fp32_under_autocast():
    img, txt, scale, neg, mask = random_batch(seed=13)
    ref = _loss()(img, txt, scale, neg, mask, logit_bias=torch.tensor(-10.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _loss()(img.bfloat16(), txt.bfloat16(), scale, neg.bfloat16(), mask,
                      logit_bias=torch.tensor(-10.0, dtype=torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)  # inputs were rounded to bf16


def _loss_args(**kw):
    from openclip_ce.negatives import NEG_TYPES

    base = dict(ce_neg_types=NEG_TYPES, ce_alpha=0.2, ce_beta=0.4, ce_threshold_max=10.0, ce_fixed_threshold=None,
                ce_itc_negatives="global", ce_no_itc_negatives=False, ce_no_imc=False, ce_no_cmr=False,
                local_loss=False, gather_with_grad=False, rank=0, world_size=1, accum_freq=1,
                ce_allow_no_negatives=False, device="cpu", siglip=True, loss_dist_impl=None, model="ViT-B-32")
    base.update(kw)
    return argparse.Namespace(**base)


def test_plugin_builds_ce_siglip_with_siglip_and_checks_the_dist_impl():
    from openclip_ce.training.plugin import plugin

    plugin.check_args(_loss_args())
    loss = plugin.create_loss(_loss_args(loss_dist_impl="shift", ce_itc_negatives="own", ce_no_imc=True))
    assert type(loss) is CeSigLipLoss and loss.dist_impl == "shift" and loss.itc_negatives == "own"
    assert not loss.use_imc and loss.use_cmr
    assert type(plugin.create_loss(_loss_args(siglip=False))) is CeClipLoss
    with pytest.raises(ValueError, match="--loss-dist-impl ring.*bidir, shift, reduce, gather"):
        plugin.check_args(_loss_args(loss_dist_impl="ring"))


def test_benchmark_scripts_smoke(tmp_path):
    """bench_loss.py and bench_train_step.py --siglip run and report CE-SigLIP against CE-CLIP (figures not asserted)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from openclip_ce.testing.tiny_clip import TINY_VIT_B_32_CFG, write_tiny_model_dir

    scripts = Path(__file__).resolve().parents[2] / "scripts"
    proc = subprocess.run([sys.executable, str(scripts / "benchmarks" / "bench_loss.py"), "--batch", "8", "--dim", "16", "--iters", "1",
                           "--rounds", "1", "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for mode in ("global", "own"):
        assert re.search(rf"CeSigLipLoss {mode} .*ratio to SigLipLoss +[\d.]+x +ratio to CeClipLoss {mode} +[\d.]+x",
                         proc.stdout), proc.stdout
    model = write_tiny_model_dir(tmp_path / "m", TINY_VIT_B_32_CFG)
    proc = subprocess.run([sys.executable, str(scripts / "benchmarks" / "bench_train_step.py"), "--model", model, "--batch-size", "4",
                           "--steps", "1", "--warmup", "0", "--device", "cpu", "--siglip"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = re.findall(r"^(plain CLIP|plain SigLIP|CE-CLIP packed|CE-SigLIP packed) +[\d.]+ +[\d.]+x", proc.stdout, re.M)
    assert names == ["plain CLIP", "CE-CLIP packed", "plain SigLIP", "CE-SigLIP packed"], proc.stdout
    assert re.search(r"CE-SigLIP step time / CE-CLIP step time: [\d.]+", proc.stdout)


def test_collapsed_features_are_counted_as_at_chance():
    """Every feature the same point: every score equal, the collapse counter runs; learning features reset it."""
    img, txt, scale, neg, mask = random_batch(seed=9)
    point = torch.nn.functional.normalize(torch.ones(img.shape[1]), dim=0)
    same = point.expand_as(img).contiguous()
    loss = CeSigLipLoss()
    bias = torch.tensor(-10.0)
    for step in range(3):
        loss(same, same, scale, point.expand_as(neg).contiguous(), mask, logit_bias=bias)
        assert loss.steps_at_chance() == step + 1
    loss(img, txt, scale, neg, mask, logit_bias=bias)
    assert loss.steps_at_chance() == 0
