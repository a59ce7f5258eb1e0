import math

import pytest
import torch

from openclip_ce.training.loss import CeClipLoss
from openclip_ce.testing.loss_reference import random_batch, reference_ce_clip, reference_next_thresholds

TYPES = ("rel", "att", "act", "obj")


def _loss(**kw):
    return CeClipLoss(neg_types=TYPES, **kw)


@pytest.mark.parametrize("mode", ["global", "own"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_values_and_gradients(mode, seed):
    img, txt, scale, neg, mask = random_batch(seed=seed)
    mask[seed] = False  # a sample without a valid negative: IMC is a mean over the samples that have one
    assert mask.any(dim=1).sum() < len(mask)
    th = [0.5, 0.0, 2.0, 1.25]
    loss = _loss(itc_negatives=mode, alpha=0.3, beta=0.7)
    loss.load_threshold_dict(dict(zip(TYPES, th)))

    leaves = [t.clone().requires_grad_(True) for t in (img, txt, neg)]
    out = loss(leaves[0], leaves[1], scale, leaves[2], mask, output_dict=True)
    total = sum(out.values())
    total.backward()

    ref_leaves = [t.clone().requires_grad_(True) for t in (img, txt, neg)]
    itc, imc, cmr, _ = reference_ce_clip(ref_leaves[0], ref_leaves[1], scale, ref_leaves[2], mask, th,
                                         itc_negatives=mode)
    ref_total = itc + 0.3 * imc + 0.7 * cmr
    ref_total.backward()

    torch.testing.assert_close(out["contrastive_loss"], itc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["imc_loss"], 0.3 * imc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["cmr_loss"], 0.7 * cmr, rtol=1e-5, atol=1e-6)
    for a, b in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_global_and_own_differ_when_other_samples_have_negatives():
    img, txt, scale, neg, mask = random_batch(seed=3, p_valid=1.0)
    g = _loss(itc_negatives="global")(img, txt, scale, neg, mask, output_dict=True)["contrastive_loss"]
    o = _loss(itc_negatives="own")(img, txt, scale, neg, mask, output_dict=True)["contrastive_loss"]
    assert g > o  # more columns in every image's denominator


def test_thresholds_update_to_previous_step_gap_and_clamp():
    img, txt, scale, neg, mask = random_batch(seed=4)
    mask[:, 2] = False  # no valid 'act' negative in this step: its threshold must be kept
    loss = _loss(threshold_max=10.0)
    loss.load_threshold_dict({"act": 3.5})
    before = loss.threshold_dict()
    out1 = loss(img, txt, scale, neg, mask, output_dict=True)
    _, _, _, gaps = reference_ce_clip(img, txt, scale, neg, mask, list(before.values()))
    expected = reference_next_thresholds(gaps, list(before.values()), u=10.0)
    got = list(loss.threshold_dict().values())
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert got[2] == 3.5
    # the thresholds used in a step are those of the previous step: the first call used `before`
    ref_itc, ref_imc, ref_cmr, _ = reference_ce_clip(img, txt, scale, neg, mask, list(before.values()))
    torch.testing.assert_close(out1["cmr_loss"], 0.4 * ref_cmr, rtol=1e-5, atol=1e-6)

    # clamping: a huge positive gap is capped at u, a negative gap floors at 0
    big = img.clone()
    txt2 = img.clone()                      # S(I,T) = scale (max)
    neg2 = -img[:, None, :].expand_as(neg)  # S(I,T_k) = -scale
    loss2 = _loss()  # u = 10 by default
    loss2(big, txt2, torch.tensor(100.0), neg2.contiguous(), torch.ones_like(mask))
    assert list(loss2.threshold_dict().values()) == [10.0] * 4
    # restored thresholds are clamped like updated ones: a resumed run with a smaller u starts within it
    restored = _loss(threshold_max=3.0)
    assert restored.load_threshold_dict({"rel": 50.0, "att": -1.0, "act": 2.5}) is True
    assert list(restored.threshold_dict().values()) == [3.0, 0.0, 2.5, 0.0]
    loss3 = _loss()
    loss3(img, -img, torch.tensor(100.0), img[:, None, :].expand_as(neg).contiguous(), torch.ones_like(mask))
    assert list(loss3.threshold_dict().values()) == [0.0] * 4


def test_threshold_update_only_once_per_accumulated_step():
    img, _, scale, neg, mask = random_batch(seed=5, p_valid=1.0)
    txt = torch.nn.functional.normalize(img + 0.3 * torch.randn(img.shape, generator=torch.Generator().manual_seed(5)), dim=-1)
    _, _, _, gaps = reference_ce_clip(img, txt, scale, neg, mask, [0.0] * 4)
    expected = reference_next_thresholds(gaps, [0.0] * 4)
    assert min(expected) > 0  # every type's mean gap is positive: an update would show
    loss = _loss(accum_freq=2)
    loss(img, txt, scale, neg, mask)
    assert list(loss.threshold_dict().values()) == [0.0] * 4  # mid-step: not yet
    loss(img, txt, scale, neg, mask)
    assert list(loss.threshold_dict().values()) == pytest.approx(expected, rel=1e-5)
    loss(img, -txt, scale, neg, mask)  # the next step's first call: its (negative) gaps change nothing yet
    assert list(loss.threshold_dict().values()) == pytest.approx(expected, rel=1e-5)


def test_detached_imc_positive_moves_only_the_texts():
    """From random weights IMC may keep S(I,T) out of its gradient: same value, no gradient to the image."""
    img, txt, scale, neg, mask = random_batch(seed=9, p_valid=1.0)
    grads = {}
    for detach in (False, True):
        leaves = [t.clone().requires_grad_(True) for t in (img, txt, neg)]
        out = _loss(imc_detach_positive=detach)(*leaves[:2], scale, leaves[2], mask, output_dict=True)
        out["imc_loss"].backward()
        grads[detach] = (out["imc_loss"].item(), *(leaf.grad for leaf in leaves))
    assert grads[True][0] == pytest.approx(grads[False][0], rel=1e-6)
    no_grad = grads[True][1]
    assert grads[False][1].abs().sum() > 0 and (no_grad is None or not no_grad.any())
    assert grads[True][2].abs().sum() > 0 and not torch.allclose(grads[True][2], grads[False][2])


def test_eval_mode_does_not_update_thresholds():
    img, txt, scale, neg, mask = random_batch(seed=6, p_valid=1.0)
    loss = _loss().eval()
    loss(img, txt, scale, neg, mask)
    assert list(loss.threshold_dict().values()) == [0.0] * 4


def test_fixed_threshold_is_used_and_never_changes():
    img, txt, scale, neg, mask = random_batch(seed=7)
    loss = _loss(fixed_threshold=5.0)
    out = loss(img, txt, scale, neg, mask, output_dict=True)
    _, _, cmr, _ = reference_ce_clip(img, txt, scale, neg, mask, [5.0] * 4)
    torch.testing.assert_close(out["cmr_loss"], 0.4 * cmr, rtol=1e-5, atol=1e-6)
    assert list(loss.threshold_dict().values()) == [5.0] * 4
    assert "ce_gap_rel" in loss.metrics()  # the gap is still reported
    # resuming an adaptive run with --ce-fixed-threshold: the flag wins over the checkpoint's thresholds
    assert loss.load_threshold_dict({"rel": 0.7, "att": 0.1}) is False
    assert list(loss.threshold_dict().values()) == [5.0] * 4
    adaptive = _loss()
    assert adaptive.load_threshold_dict({"rel": 0.5, "att": 0.25}) is True
    assert list(adaptive.threshold_dict().values()) == [0.5, 0.25, 0.0, 0.0]


def test_placeholders_take_no_part():
    img, txt, scale, neg, mask = random_batch(seed=8)
    garbage = neg.clone()
    garbage[~mask] = torch.randn_like(garbage[~mask]) * 50
    a_leaf = neg.clone().requires_grad_(True)
    b_leaf = garbage.clone().requires_grad_(True)
    la, lb = _loss(), _loss()
    out_a = la(img, txt, scale, a_leaf, mask, output_dict=True)
    out_b = lb(img, txt, scale, b_leaf, mask, output_dict=True)
    for key in out_a:
        torch.testing.assert_close(out_a[key], out_b[key])
    sum(out_a.values()).backward()
    sum(out_b.values()).backward()
    torch.testing.assert_close(a_leaf.grad, b_leaf.grad)
    assert torch.count_nonzero(a_leaf.grad[~mask]) == 0
    assert la.threshold_dict() == lb.threshold_dict()


def test_all_placeholders_reduces_to_clip_and_zero_extra_terms():
    img, txt, scale, neg, mask = random_batch(seed=9)
    mask[:] = False
    out = _loss()(img, txt, scale, neg, mask, output_dict=True)
    assert float(out["imc_loss"]) == 0.0 and float(out["cmr_loss"]) == 0.0
    itc, _, _, _ = reference_ce_clip(img, txt, scale, neg, mask, [0] * 4, use_itc_negatives=False)
    torch.testing.assert_close(out["contrastive_loss"], itc, rtol=1e-5, atol=1e-6)


def test_equals_open_clip_cliploss_when_extras_are_off():
    open_clip = pytest.importorskip("open_clip")
    img, txt, scale, neg, mask = random_batch(n=10, seed=10)
    a = img.clone().requires_grad_(True)
    b = img.clone().requires_grad_(True)
    ours = _loss(alpha=0.0, beta=0.0, use_itc_negatives=False)(a, txt, scale, neg, mask)
    theirs = open_clip.ClipLoss()(b, txt, scale)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_switches_remove_terms():
    img, txt, scale, neg, mask = random_batch(seed=11)
    out = _loss(use_imc=False, use_cmr=False, use_itc_negatives=False)(img, txt, scale, neg, mask, output_dict=True)
    assert set(out) == {"contrastive_loss"}
    out = _loss(use_imc=False)(img, txt, scale, neg, mask, output_dict=True)
    assert set(out) == {"contrastive_loss", "cmr_loss"}


def test_subset_of_types_and_shape_check():
    img, txt, scale, neg, mask = random_batch(seed=12, k=2)
    loss = CeClipLoss(neg_types=("rel", "obj"))
    out = loss(img, txt, scale, neg, mask, output_dict=True)
    _, imc, _, _ = reference_ce_clip(img, txt, scale, neg, mask, [0.0, 0.0])
    torch.testing.assert_close(out["imc_loss"], 0.2 * imc, rtol=1e-5, atol=1e-6)
    assert set(loss.threshold_dict()) == {"rel", "obj"}
    with pytest.raises(ValueError, match=r"\[B, 4, D\]"):
        _loss()(img, txt, scale, neg, mask)


def test_fp32_under_autocast():
    img, txt, scale, neg, mask = random_batch(seed=13)
    ref = _loss()(img, txt, scale, neg, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _loss()(img.bfloat16(), txt.bfloat16(), scale, neg.bfloat16(), mask)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)  # inputs were rounded to bf16


def test_metrics_report_valid_share_and_no_learnable_parameters():
    img, txt, scale, neg, mask = random_batch(n=8, seed=14)
    loss = _loss()
    assert list(loss.parameters()) == []
    loss(img, txt, scale, neg, mask)
    m = loss.metrics()
    for i, t in enumerate(TYPES):
        assert m[f"ce_valid_{t}"] == pytest.approx(float(mask[:, i].float().mean()))
        assert m[f"ce_threshold_{t}"] == loss.threshold_dict()[t]
    assert not math.isnan(sum(m.values()))


def _steps_until_stop(loss, masks):
    """Call the loss once per mask (one optimizer step each); the 1-based step that raised, or None."""
    from openclip_ce.training.loss import NoNegativesError

    img, txt, scale, neg, _ = random_batch(seed=0)
    for step, mask in enumerate(masks, start=1):
        try:
            loss(img, txt, scale, neg, mask)
        except NoNegativesError as e:
            assert "--ce-allow-no-negatives" in str(e) and "make-shards" in str(e)
            return step
    return None


def test_no_negatives_guard_stops_a_run_that_would_be_plain_clip():
    _, _, _, _, mask = random_batch(seed=0)
    none = torch.zeros_like(mask)
    assert _steps_until_stop(_loss(no_negatives_steps=5), [none] * 8) == 5
    # one valid negative in step 4 is enough: the run goes on for good
    assert _steps_until_stop(_loss(no_negatives_steps=5), [none] * 3 + [mask] + [none] * 8) is None
    assert _steps_until_stop(_loss(no_negatives_steps=None), [none] * 60) is None  # --ce-allow-no-negatives
    # with gradient accumulation a step is accum_freq calls
    assert _steps_until_stop(_loss(no_negatives_steps=2, accum_freq=3), [none] * 8) == 6
    # evaluation calls (eval mode) never count
    assert _steps_until_stop(_loss(no_negatives_steps=2).eval(), [none] * 8) is None


def test_missing_negative_features_count_as_placeholders():
    """A model output without negatives (data stage not attached) gives plain CLIP, not a crash."""
    img, txt, scale, neg, mask = random_batch(seed=1)
    plain = _loss(alpha=0.0, beta=0.0, use_itc_negatives=False)(img, txt, scale, output_dict=True)
    masked = _loss(alpha=0.0, beta=0.0, use_itc_negatives=False)(img, txt, scale, neg, torch.zeros_like(mask),
                                                               output_dict=True)
    torch.testing.assert_close(plain["contrastive_loss"], masked["contrastive_loss"])


def test_collapsed_features_are_counted_and_warned_about_once(caplog):
    """Every feature the same point: the contrastive loss sits at its chance value; after COLLAPSE_STEPS
    optimizer steps the plugin warns (once), and a step off chance resets the count."""
    import logging

    from openclip_ce.training.plugin import COLLAPSE_STEPS, plugin

    img, txt, scale, neg, mask = random_batch(seed=8)
    point = torch.nn.functional.normalize(torch.ones(img.shape[1]), dim=0)
    same = point.expand_as(img).contiguous()
    loss = _loss()
    with caplog.at_level(logging.WARNING, logger="openclip_ce.training"):
        for step in range(COLLAPSE_STEPS + 3):
            out = loss(same, same, scale, point.expand_as(neg).contiguous(), mask, output_dict=True)
            n_cols = img.shape[0] + int(mask.sum())
            assert float(out["contrastive_loss"]) == pytest.approx((math.log(n_cols) + math.log(img.shape[0])) / 2)
            plugin.metrics(loss)
            assert loss.steps_at_chance() == step + 1
            warned = [r for r in caplog.records if "collapsed to one point" in r.getMessage()]
            assert len(warned) == (1 if step + 1 >= COLLAPSE_STEPS else 0)
    loss(img, txt, scale, neg, mask)  # learning features: off chance
    assert loss.steps_at_chance() == 0


def test_a_non_finite_loss_stops_at_the_next_check_step_or_at_the_end_of_the_epoch():
    """The flag is set on the device at the first non-finite step and read on the host at steps 1, 1 + every,
    ... (open_clip's log steps) and at the end of the epoch; the thresholds never take a NaN."""
    from openclip_ce.training.loss import NonFiniteLossError

    img, txt, scale, neg, mask = random_batch(seed=0)
    bad = img.clone()
    bad[0, 0] = float("nan")

    def run(loss, batches, end_epoch=False):
        for step, x in enumerate(batches, start=1):
            try:
                loss(x, txt, scale, neg, mask)
            except NonFiniteLossError as e:
                return step, str(e)
        if end_epoch:
            try:
                loss.end_epoch()
            except NonFiniteLossError as e:
                return "end", str(e)
        return None, ""

    loss = _loss()
    loss.watch_finite(4)
    step, message = run(loss, [img, img, bad, img, img])
    assert step == 5 and "since optimizer step 3; stopped at step 5" in message
    assert torch.isfinite(loss.thresholds).all()
    # between two checks at the epoch's end: no checkpoint of these weights is written
    where, message = run(_reset(loss), [img, bad, img], end_epoch=True)
    assert where == "end" and "since optimizer step 2; stopped at the end of the epoch" in message
    # steps counted on from a resumed run; accumulated steps count once
    loss = _loss(accum_freq=2)
    loss.watch_finite(1)
    loss.step_offset = 100
    assert run(loss, [img, img, img, bad])[1].startswith("--loss ce_clip: the training loss is not finite (NaN or "
                                                          "inf) since optimizer step 102; stopped at step 102")
    # fp16 GradScaler skips non-finite steps: only a non-finite loss that lasts until a check stops the run
    loss = _loss()
    loss.watch_finite(4, skipped_steps=True)
    assert run(loss, [img, bad, img, img, img], end_epoch=True) == (None, "")
    assert run(_reset(loss), [img, img, bad, bad, bad])[0] == 5
    # evaluation calls never count
    assert run(_loss().eval(), [bad] * 3, end_epoch=True) == (None, "")


def _reset(loss):
    """The same settings, fresh state."""
    fresh = _loss(accum_freq=loss.accum_freq)
    fresh.watch_finite(loss.finite_check_every, skipped_steps=loss.nonfinite_skipped)
    return fresh


def test_thresholds_from_a_state_are_restored_only_when_finite():
    loss = _loss()
    assert loss.load_threshold_dict({"rel": float("nan"), "att": 1.5, "act": None, "obj": float("inf")})
    assert loss.threshold_dict() == {"rel": 0.0, "att": 1.5, "act": 0.0, "obj": 0.0}
