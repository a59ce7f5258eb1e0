"""Length-grouped text trimming: the plan, the order, and exactness against the full-length path."""

import argparse
import copy
import itertools
import logging
import random

import pytest
import torch

from openclip_ce.training.adapter import adapt_model, last_text_plan, text_trim_of
from openclip_ce.training.data import PLACEHOLDER_TOKEN
from openclip_ce.training.loss import CeClipLoss
from openclip_ce.training.plugin import plugin
from openclip_ce.training.trim import TrimSettings, encode_in_length_groups, plan_groups, rounded_lengths
from openclip_ce.testing.tiny_clip import TINY_VIT_B_32_CFG

SOT, EOT = 49406, 49407


# ----------------------------------------------------------------------------- the plan
def _brute_force(histogram, full, settings):
    """Min over every split of the present lengths into <= max_groups contiguous groups (with the penalty)."""
    present = [(t, n) for t, n in enumerate(histogram) if n]
    rows = sum(n for _, n in present)
    best = None
    for g in range(1, min(settings.max_groups, len(present)) + 1):
        for cuts in itertools.combinations(range(1, len(present)), g - 1):
            bounds = (0, *cuts, len(present))
            cost = sum(sum(n for _, n in present[a:b]) * present[b - 1][0] for a, b in zip(bounds, bounds[1:]))
            cost += (g - 1) * settings.min_gain * rows * full
            best = cost if best is None else min(best, cost)
    return best


def test_plan_is_optimal_covers_every_row_and_respects_the_group_limit():
    rng = random.Random(0)
    for trial in range(200):
        full = 77
        settings = TrimSettings(max_groups=rng.choice([1, 2, 3, 4]), min_gain=rng.choice([0.0, 0.02, 0.1]))
        hist = [0] * (full + 1)
        for t in rng.sample([8, 16, 24, 32, 40, 48, 56, 64, 72, 77], rng.randint(1, 6)):
            hist[t] = rng.randint(1, 300)
        plan = plan_groups(hist, full, settings)
        assert 1 <= len(plan.groups) <= settings.max_groups
        assert plan.rows == sum(hist)
        lengths = [t for t, _ in plan.groups]
        assert lengths == sorted(set(lengths)) and lengths[-1] == max(t for t, n in enumerate(hist) if n)
        # every row fits its group: the rows of the k shortest groups are exactly those of length <= that group's
        covered = 0
        for t, n in plan.groups:
            covered += n
            assert covered == sum(hist[: t + 1])
        penalty = (len(plan.groups) - 1) * settings.min_gain * plan.rows * full
        assert plan.tokens + penalty == pytest.approx(_brute_force(hist, full, settings)), (trial, hist, plan)


def test_a_group_that_saves_little_is_not_split_off():
    hist = [0] * 78
    hist[16], hist[24] = 100, 100  # splitting saves 100 * 8 = 800 tokens = 5% of 200 * 77
    assert plan_groups(hist, 77, TrimSettings(min_gain=0.02)).groups == ((16, 100), (24, 100))
    assert plan_groups(hist, 77, TrimSettings(min_gain=0.06)).groups == ((24, 200),)


def test_rounded_lengths_are_multiples_capped_at_the_context():
    needed = torch.tensor([1, 8, 9, 16, 70, 72, 73, 77])
    assert rounded_lengths(needed, 77, 8).tolist() == [8, 8, 16, 16, 72, 72, 77, 77]


@pytest.mark.parametrize("groups", [3, 1])
def test_grouped_encoding_restores_the_row_order_and_cuts_each_row_to_its_group(groups):
    g = torch.Generator().manual_seed(0)
    needed = torch.randint(2, 60, (50,), generator=g)
    text = torch.zeros(50, 77, dtype=torch.long)
    for i, n in enumerate(needed.tolist()):
        text[i, :n] = torch.randint(1, 1000, (n,), generator=g)
    calls = []

    def encode(t):  # a row's token sum (zeros beyond `needed` do not change it) and the length it was cut to
        calls.append(t.shape)
        return torch.stack([t.sum(1).float(), torch.full((t.shape[0],), float(t.shape[1]))], 1)

    feats, plan = encode_in_length_groups(text, needed, encode, TrimSettings(max_groups=groups, min_gain=0.0))
    assert len(calls) == len(plan.groups) == groups and [c[1] for c in calls] == [t for t, _ in plan.groups]
    torch.testing.assert_close(feats[:, 0], text.sum(1).float())  # same rows, same order
    assert (feats[:, 1] >= needed).all() and (feats[:, 1] % 8 == 0).all()
    assert plan.tokens == int(feats[:, 1].sum()) < 50 * 77


# ----------------------------------------------------------------------------- exactness on open_clip's towers
def _model(kind):
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = copy.deepcopy(TINY_VIT_B_32_CFG)
    torch.manual_seed(0)
    if kind == "clip":  # ViT-B-32's text tower: causal, argmax pooling, projection matrix
        return CLIP(**cfg, output_dict=True)
    if kind == "custom_text_eos":  # CustomTextCLIP's TextTransformer, eos pooling, projection with bias
        cfg["text_cfg"].update(pool_type="eos", eos_id=EOT, proj_bias=True)
        return CustomTextCLIP(**cfg, output_dict=True)
    if kind == "custom_block_qknorm":  # open_clip's custom attention blocks (qk norm)
        cfg["text_cfg"].update(qk_norm=True)
        return CLIP(**cfg, output_dict=True)
    raise ValueError(kind)


def _tokens(b=12, k=4, seed=0):
    """``[B, 1 + K, 77]`` with realistic lengths, one caption at the full context (truncated), ~25% placeholders."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.full((b, 1 + k, 77), PLACEHOLDER_TOKEN, dtype=torch.long)

    def row(n):
        t = torch.zeros(77, dtype=torch.long)
        t[0], t[n - 1] = SOT, EOT
        t[1:n - 1] = torch.randint(1, SOT, (n - 2,), generator=g)
        return t

    for i in range(b):
        n = 77 if i == 5 else rng.choice([6, 9, 11, 12, 13, 14, 15, 17, 19, 24, 31, 45])
        tokens[i, 0] = row(n)
        for j in range(k):
            if rng.random() < 0.75:
                tokens[i, 1 + j] = row(max(4, min(77, n + rng.choice([-1, 0, 1]))))
    return tokens


def _tower_calls(model):
    """Record the sequence length of every call into the model's text transformer."""
    tower = model.transformer if hasattr(model, "transformer") else model.text.transformer
    calls = []
    tower.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(args[0].shape[1]), with_kwargs=True)
    return calls


def _run(model, images, tokens):
    loss = CeClipLoss()
    out = model(images, tokens)
    losses = loss(**out, output_dict=True)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, losses, grads


# open_clip 3.3's custom blocks fail under grad checkpointing on their own (checkpoint passes them 4
# positional arguments), trimmed or not: that combination is left out
@pytest.mark.parametrize("kind, grad_checkpointing", [
    ("clip", False), ("clip", True), ("custom_text_eos", False), ("custom_text_eos", True),
    ("custom_block_qknorm", False)])
def test_trimmed_features_loss_and_gradients_equal_the_full_length_path(kind, grad_checkpointing):
    base = _model(kind)
    base.set_grad_checkpointing(grad_checkpointing)
    images, tokens = torch.randn(12, 3, 32, 32), _tokens()
    full, trimmed = copy.deepcopy(base), copy.deepcopy(base)
    adapt_model(full, trim=False)
    adapt_model(trimmed, trim=True, settings=TrimSettings(min_gain=0.0))
    full_calls, trimmed_calls = _tower_calls(full), _tower_calls(trimmed)

    out_f, loss_f, grad_f = _run(full, images, tokens)
    out_t, loss_t, grad_t = _run(trimmed, images, tokens)

    # the trimmed path really ran several shorter calls (and the full-length caption at 77)
    assert full_calls == [77] and last_text_plan(full) is None
    plan = last_text_plan(trimmed)
    assert trimmed_calls == [t for t, _ in plan.groups] and len(trimmed_calls) >= 3
    assert trimmed_calls[0] <= 16 and trimmed_calls[-1] == 77
    assert plan.rows == 12 + int(tokens[:, 1:, 0].ne(PLACEHOLDER_TOKEN).sum())  # positives + valid negatives
    for key in ("image_features", "text_features", "neg_text_features", "neg_mask", "logit_scale"):
        torch.testing.assert_close(out_t[key], out_f[key], rtol=1e-5, atol=1e-6, msg=key)
    assert loss_t.keys() == loss_f.keys()
    for key in loss_f:
        torch.testing.assert_close(loss_t[key], loss_f[key], rtol=1e-5, atol=1e-6, msg=key)
    assert grad_t.keys() == grad_f.keys() and len(grad_f) > 20
    for name in grad_f:  # tensor-wise: float noise of a different summation order, ~1e-6 of the gradient's scale
        err, scale = (grad_t[name] - grad_f[name]).abs().max().item(), grad_f[name].abs().max().item()
        assert err <= 1e-5 * scale + 1e-7, (name, err, scale)
    pos = "text.positional_embedding" if kind == "custom_text_eos" else "positional_embedding"
    assert grad_f[pos][60:].abs().sum() > 0  # the caption at full length reached the last positions


def test_plain_text_batches_keep_the_models_own_forward():
    """Validation / zero-shot ([B, L] text) never take the trimmed path."""
    model = _model("clip")
    adapt_model(model, trim=True)
    calls = _tower_calls(model)
    out = model(torch.randn(3, 3, 32, 32), _tokens(3)[:, 0])
    assert calls == [77] and set(out) == {"image_features", "text_features", "logit_scale"}


# ----------------------------------------------------------------------------- when not to trim
def _untrimmable():
    from open_clip.model import CLIP, CustomTextCLIP

    def clip(**text):
        cfg = copy.deepcopy(TINY_VIT_B_32_CFG)
        cfg["text_cfg"].update(text)
        return CLIP(**cfg, output_dict=True)

    hf_like = CustomTextCLIP(**copy.deepcopy(TINY_VIT_B_32_CFG), output_dict=True)

    class HFTextEncoder(torch.nn.Module):  # stands in for open_clip's Hugging Face tower (no download here)
        def forward(self, text):
            return torch.zeros(text.shape[0], 32)

    hf_like.text = HFTextEncoder()

    class OwnEncodeText(CLIP):
        def encode_text(self, text, normalize=False):
            return super().encode_text(text, normalize)

    class OwnForward(CLIP):  # whatever it does to the text features would be bypassed by the trimmed path
        def forward(self, image=None, text=None):
            return super().forward(image, text)

    return {
        "bidirectional": (clip(no_causal_mask=True), "bidirectional"),
        "last-token pooling": (clip(pool_type="last"), "pooling 'last'"),
        "hugging face tower": (hf_like, "text tower HFTextEncoder"),
        "encode_text overridden": (OwnEncodeText(**copy.deepcopy(TINY_VIT_B_32_CFG), output_dict=True),
                                   "overrides CLIP.encode_text"),
        "forward overridden": (OwnForward(**copy.deepcopy(TINY_VIT_B_32_CFG), output_dict=True),
                               "OwnForward overrides CLIP.forward"),
    }


@pytest.mark.parametrize("case", ["bidirectional", "last-token pooling", "hugging face tower", "encode_text overridden",
                                  "forward overridden"])
def test_towers_where_trimming_is_not_exact_run_at_full_length_and_say_so_once(case, caplog):
    from openclip_ce.integration.text_trim import trim_support

    model, why = _untrimmable()[case]
    assert why in trim_support(model)
    with caplog.at_level(logging.INFO, logger="openclip_ce.adapter"):
        for _ in range(3):  # the wiring adapts once per epoch
            adapt_model(model, trim=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "openclip_ce.adapter"]
    assert len(lines) == 1 and "not trimmed" in lines[0] and why in lines[0], lines
    assert text_trim_of(model) is None
    if case != "hugging face tower":
        calls = _tower_calls(model)
        out = model(torch.randn(2, 3, 32, 32), _tokens(2))
        assert calls == [77] and out["neg_text_features"].shape == (2, 4, 32)


def test_coca_and_unknown_model_classes_are_not_trimmed():
    from openclip_ce.integration.text_trim import trim_support

    class CoCa(torch.nn.Module):
        pass

    assert "model class CoCa" in trim_support(CoCa())


def test_ce_no_trim_flag_turns_trimming_off(caplog):
    parser = argparse.ArgumentParser()
    plugin.add_arguments(parser)
    on, off = _model("clip"), _model("clip")
    with caplog.at_level(logging.INFO, logger="openclip_ce.adapter"):
        plugin.adapt_model(parser.parse_args([]), on)
        plugin.adapt_model(parser.parse_args(["--ce-no-trim"]), off)
    assert text_trim_of(on) is not None and text_trim_of(off) is None
    lines = [r.getMessage() for r in caplog.records if r.name == "openclip_ce.adapter"]
    assert "length groups" in lines[0] and "not trimmed: --ce-no-trim" in lines[1]
    calls = _tower_calls(off)
    off(torch.randn(2, 3, 32, 32), _tokens(2))
    assert calls == [77]
    assert set(on.state_dict()) == set(_model("clip").state_dict())  # adapting adds nothing to checkpoints
