"""The packed text layout: the CPU packer, the row capacity, and exactness against encoding each caption alone."""

import argparse
import copy
import logging

import pytest
import torch

from openclip_ce.training.adapter import adapt_model, pack_spec_of
from openclip_ce.training.loss import CeClipLoss
from openclip_ce.training.packing import (PLACEHOLDER_TOKEN, CeTextBatch, PackSpec, RowCapacity, TextLayoutCollate,
                                          layout_text_batch)
from openclip_ce.training.plugin import plugin
from openclip_ce.testing.tiny_clip import TINY_VIT_B_32_CFG
from openclip_ce.testing.text_batches import SOT, EOT, text_batch


# ----------------------------------------------------------------------------- the packer
@pytest.mark.parametrize("seed", range(5))
def test_packer_places_every_caption_once_whole_and_pooled_where_open_clip_pools(seed):
    tokens = text_batch(b=40, seed=seed)
    laid = layout_text_batch(tokens, PackSpec("argmax"))
    b, slots, width = tokens.shape
    flat = tokens.reshape(-1, width)
    valid = flat[:, 0] != PLACEHOLDER_TOKEN
    lengths = flat.argmax(1) + 1                               # up to the end-of-text token (argmax pooling)
    assert laid.packed and laid.tokens.shape[1] == width
    assert torch.equal(laid.valid, valid.reshape(b, slots)[:, 1:])
    seen = torch.zeros_like(laid.tokens, dtype=torch.long)
    for slot in torch.nonzero(valid).flatten().tolist():
        end = int(laid.index.reshape(-1)[slot])                # flat index of the pooled token
        row, last = divmod(end, width)
        n = int(lengths[slot])
        start = last - n + 1
        assert start >= 0
        assert torch.equal(laid.tokens[row, start:last + 1], flat[slot, :n])        # the caption, whole
        assert laid.positions[row, start:last + 1].tolist() == list(range(n))      # its own positions
        assert len(set(laid.segments[row, start:last + 1].tolist())) == 1          # one segment
        seen[row, start:last + 1] += 1
    assert seen.max() == 1                                     # no two captions share a token
    assert (laid.segments[seen == 0] == -1).all()              # the rest is padding
    assert (laid.index.reshape(-1)[~valid] == 0).all()
    # best fit decreasing is close to the bound of a perfect packing
    assert laid.tokens.shape[0] <= int(lengths[valid].sum()) // width + 2


def test_packer_follows_eos_and_first_pooling():
    tokens = text_batch(b=6, seed=1)
    eos = layout_text_batch(tokens, PackSpec("eos", eos_id=EOT))
    first = layout_text_batch(tokens, PackSpec("first"))
    assert torch.equal(eos.tokens, layout_text_batch(tokens, PackSpec("argmax")).tokens)  # EOT is the largest id
    assert first.tokens.shape[0] == 1 and (first.tokens[0, :int(first.valid.sum()) + 6] == SOT).all()


def test_rows_layout_keeps_valid_captions_only_and_a_missing_caption_is_an_error():
    tokens = text_batch(b=5, seed=2)
    rows = layout_text_batch(tokens, None)
    flat = tokens.reshape(-1, 77)
    valid = flat[:, 0] != PLACEHOLDER_TOKEN
    assert not rows.packed and torch.equal(rows.tokens, flat[valid])
    assert torch.equal(rows.tokens[rows.index.reshape(-1)[valid]], flat[valid])
    tokens[3, 0] = PLACEHOLDER_TOKEN
    with pytest.raises(ValueError, match="sample 3 of the batch has no caption"):
        layout_text_batch(tokens, None)


def test_row_capacity_pads_to_a_fixed_shape_grows_when_needed_and_can_be_fixed(caplog):
    cap = RowCapacity(headroom=0.1, multiple=8)
    with caplog.at_level(logging.INFO, logger="openclip_ce.training.packing"):
        assert cap.rows_for("packed", 50, 500) == 56
        assert [cap.rows_for("packed", n, 500) for n in (40, 56, 3)] == [56, 56, 56]
        assert cap.rows_for("packed", 57, 500) == 64
        assert cap.rows_for("rows", 100, 100) == 100          # never above one caption per row
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and "raised from 56 to 64" in lines[1]
    cap.configure(32)
    assert cap.rows_for("packed", 10, 500) == 32 and cap.rows_for("packed", 31, 500) == 32

    tokens = text_batch(b=8, seed=3)
    laid = layout_text_batch(tokens, PackSpec("argmax"))
    moved = laid.to("cpu")                                     # through the process-wide capacity
    assert moved.tokens.shape[0] >= laid.tokens.shape[0] and moved.tokens.shape[0] % 8 == 0
    extra = moved.tokens.shape[0] - laid.tokens.shape[0]
    assert extra == 0 or torch.equal(moved.tokens[-1], laid.tokens[0])
    assert torch.equal(moved.index, laid.index)


def test_collate_lays_out_the_text_column_and_pickles():
    import pickle

    from webdataset.filters import default_collation_fn

    tokens = text_batch(b=4, seed=4)
    collate = pickle.loads(pickle.dumps(TextLayoutCollate(default_collation_fn, PackSpec("argmax"))))
    images, texts = collate([(torch.zeros(3), tokens[i]) for i in range(4)])
    assert images.shape == (4, 3) and isinstance(texts, CeTextBatch) and texts.packed
    assert torch.equal(texts.tokens, layout_text_batch(tokens, PackSpec("argmax")).tokens)


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


def _tower_calls(model):
    """Record the shape of every call into the model's text transformer."""
    tower = model.transformer if hasattr(model, "transformer") else model.text.transformer
    calls = []
    tower.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(tuple(args[0].shape[:2])), with_kwargs=True)
    return calls


def _run(model, images, text):
    loss = CeClipLoss()
    out = model(images, text)
    losses = loss(**out, output_dict=True)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, losses, grads


def _alone(model, images, tokens):
    """The reference: every caption encoded on its own, at the full context length, by open_clip itself."""
    b, slots, width = tokens.shape
    valid = tokens[:, 1:, 0] != PLACEHOLDER_TOKEN
    rows = [tokens[i, j] if j == 0 or valid[i, j - 1] else tokens[i, 0] for i in range(b) for j in range(slots)]
    feats = model.encode_text(torch.stack(rows), normalize=True).reshape(b, slots, -1)  # rows are independent
    out = {"image_features": model.encode_image(images, normalize=True), "text_features": feats[:, 0],
           "neg_text_features": torch.where(valid[..., None], feats[:, 1:], 0.0), "neg_mask": valid,
           "logit_scale": model.logit_scale.exp()}
    losses = CeClipLoss()(**out, output_dict=True)
    sum(losses.values()).backward()
    return out, losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# open_clip 3.3's custom blocks fail under grad checkpointing on their own (checkpoint passes them 4
# positional arguments), packed or not: that combination is left out
@pytest.mark.parametrize("kind, grad_checkpointing", [
    ("clip", False), ("clip", True), ("custom_text_eos", False), ("custom_text_eos", True),
    ("custom_block_qknorm", False)])
def test_packed_rows_and_dense_layouts_equal_each_caption_encoded_alone(kind, grad_checkpointing):
    base = _model(kind).double()
    base.set_grad_checkpointing(grad_checkpointing)
    images, tokens = torch.randn(12, 3, 32, 32, dtype=torch.float64), text_batch(b=12, seed=0)
    ref_out, ref_loss, ref_grad = _alone(copy.deepcopy(base), images, tokens)
    packed, rows = copy.deepcopy(base), copy.deepcopy(base)
    spec = adapt_model(packed, pack=True)
    assert spec == (PackSpec("eos", EOT) if kind == "custom_text_eos" else PackSpec("argmax"))
    assert adapt_model(rows, pack=False) is None
    dense = copy.deepcopy(rows)
    calls = {k: _tower_calls(m) for k, m in (("packed", packed), ("rows", rows), ("dense", dense))}
    results = {"packed": _run(packed, images, layout_text_batch(tokens, spec)),
               "rows": _run(rows, images, layout_text_batch(tokens, None)),
               "dense": _run(dense, images, tokens)}
    n_valid = 12 + int((tokens[:, 1:, 0] != PLACEHOLDER_TOKEN).sum())
    assert calls["rows"] == [(n_valid, 77)] and calls["dense"] == [(60, 77)]
    assert len(calls["packed"]) == 1 and calls["packed"][0][0] < n_valid / 3  # one pass, far fewer rows
    for name, (out, losses, grads) in results.items():
        for key in ("image_features", "text_features", "neg_text_features", "neg_mask", "logit_scale"):
            torch.testing.assert_close(out[key], ref_out[key], rtol=1e-10, atol=1e-12, msg=f"{name} {key}")
        for key in ref_loss:
            torch.testing.assert_close(losses[key], ref_loss[key], rtol=1e-10, atol=1e-12, msg=f"{name} {key}")
        assert grads.keys() == ref_grad.keys() and len(ref_grad) > 20
        for p in ref_grad:
            torch.testing.assert_close(grads[p], ref_grad[p], rtol=1e-9, atol=1e-12, msg=f"{name} {p}")
    pos = "text.positional_embedding" if kind == "custom_text_eos" else "positional_embedding"
    assert ref_grad[pos][60:].abs().sum() > 0  # the caption at full length reached the last positions


def test_plain_text_batches_keep_the_models_own_forward():
    """Validation / zero-shot ([B, L] text) take open_clip's forward unchanged."""
    model = _model("clip")
    adapt_model(model)
    calls = _tower_calls(model)
    out = model(torch.randn(3, 3, 32, 32), text_batch(3)[:, 0])
    assert calls == [(3, 77)] and set(out) == {"image_features", "text_features", "logit_scale"}


def test_a_packed_batch_for_a_model_that_does_not_pack_is_an_error():
    model = _model("clip")
    adapt_model(model, pack=False)
    with pytest.raises(ValueError, match="disagree on the layout"):
        model(torch.randn(2, 3, 32, 32), layout_text_batch(text_batch(2), PackSpec("argmax")))


# ----------------------------------------------------------------------------- when not to pack
def _unpackable():
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

    class OwnForward(CLIP):  # whatever it does to the text features would be bypassed by the packed path
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
def test_towers_where_packing_is_not_exact_get_one_caption_per_row_and_say_so_once(case, caplog):
    from openclip_ce.integration.text_packing import pack_support

    model, why = _unpackable()[case]
    assert why in pack_support(model)
    with caplog.at_level(logging.INFO, logger="openclip_ce.training.adapter"):
        for _ in range(3):  # adapting is idempotent
            assert adapt_model(model, pack=True) is None
    lines = [r.getMessage() for r in caplog.records if r.name == "openclip_ce.training.adapter"]
    assert len(lines) == 1 and "one caption per row" in lines[0] and why in lines[0], lines
    assert pack_spec_of(model) is None
    tokens = text_batch(2)
    out = model(torch.randn(2, 3, 32, 32), layout_text_batch(tokens, None))
    assert out["neg_text_features"].shape == (2, 4, 32)
    assert torch.equal(out["neg_mask"], tokens[:, 1:, 0] != PLACEHOLDER_TOKEN)


def test_coca_and_unknown_model_classes_are_not_packed():
    from openclip_ce.integration.text_packing import pack_support

    class CoCa(torch.nn.Module):
        pass

    assert "model class CoCa" in pack_support(CoCa())


def test_ce_no_pack_flag_turns_packing_off_for_the_model_and_the_data(caplog):
    parser = argparse.ArgumentParser()
    plugin.add_arguments(parser)
    on, off = _model("clip"), _model("clip")
    with caplog.at_level(logging.INFO, logger="openclip_ce.training.adapter"):
        plugin.adapt_model(parser.parse_args([]), on)
        assert plugin.train_collate(parser.parse_args([]), list).spec == PackSpec("argmax")
        plugin.adapt_model(parser.parse_args(["--ce-no-pack"]), off)
        assert plugin.train_collate(parser.parse_args(["--ce-no-pack"]), list).spec is None
    assert pack_spec_of(on) == PackSpec("argmax") and pack_spec_of(off) is None
    lines = [r.getMessage() for r in caplog.records if r.name == "openclip_ce.training.adapter"]
    assert "packed into rows" in lines[0] and "one caption per row at the full context length: --ce-no-pack" in lines[1]
    assert set(on.state_dict()) == set(_model("clip").state_dict())  # adapting adds nothing to checkpoints
    assert parser.parse_args(["--ce-no-trim"]).ce_no_pack  # the flag's earlier name stays an alias
    assert not parser.parse_args([]).ce_no_pack
