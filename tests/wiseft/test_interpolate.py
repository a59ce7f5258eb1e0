"""`openclip-ce interpolate`: WiSE-FT weights, their loading by eval and open_clip, architecture and QuickGELU checks."""

import json

import open_clip
import pytest
import torch

from openclip_ce.cli import main
from openclip_ce.wiseft.interpolate import (METADATA_KEY, first_mismatch, interpolate_state_dicts,
                                              pair_quick_gelu)
from openclip_ce.evaluate.models import load_model
from openclip_ce.errors import UserError
from openclip_ce.testing.tiny_clip import TINY_MODEL_CFG, write_tiny_model_dir, write_training_run

from openclip_ce.testing.eval_benchmarks import build_imagefolder

REGISTERED = "openclip-ce-tiny-interp"  # a built-in open_clip name: open_clip ignores `pretrained` for local-dir:


def _tiny(tmp_path, name="model", cfg=None, quick_gelu=False, seed=0):
    model_name = write_tiny_model_dir(tmp_path / name, cfg)
    torch.manual_seed(seed)
    model = open_clip.create_model(model_name, quick_gelu=quick_gelu)
    return model_name, model.eval()


def _finetune(model, seed=1, scale=0.05):
    """A "fine-tuned" copy: every weight moved a little (logit_scale too)."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: (v + scale * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
          for k, v in model.state_dict().items()}
    return sd


def _save_run(tmp_path, run, sd, force_quick_gelu=None, model="tiny", dtype=None):
    """Like open_clip_train: logs/RUN/checkpoints/epoch_1.pt with DDP's module. prefix, and params.txt."""
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v) for k, v in sd.items()}
    params = None if force_quick_gelu is None else {"force_quick_gelu": force_quick_gelu, "model": model, "pretrained": None}
    return write_training_run(tmp_path / "logs", run, sd, params=params)


def _inputs():
    g = torch.Generator().manual_seed(7)
    return torch.randn(3, 3, 32, 32, generator=g), torch.randint(1, 49000, (3, 32), generator=g)


def _outputs(model):
    img, txt = _inputs()
    with torch.no_grad():
        return model.encode_image(img), model.encode_text(txt)


def _interpolate(model_name, base, ft, alpha, out, *extra):
    return main(["interpolate", "--model", model_name, "--base", str(base), "--finetuned", str(ft),
                 "--alpha", str(alpha), "--out", str(out), *extra])


@pytest.fixture
def pair(tmp_path):
    name, base = _tiny(tmp_path)
    ft_sd = _finetune(base)
    return name, base, ft_sd, _save_run(tmp_path, "base", base.state_dict()), _save_run(tmp_path, "ft", ft_sd)


def test_alpha_0_and_1_reproduce_both_models_exactly(pair, tmp_path):
    name, base, ft_sd, base_ckpt, ft_ckpt = pair
    ft = open_clip.create_model(name).eval()
    ft.load_state_dict(ft_sd)
    for alpha, ref in ((0, base), (1, ft)):
        out = tmp_path / "wise" / f"a{alpha}.pt"
        assert _interpolate(name, base_ckpt, ft_ckpt, alpha, out) == 0
        loaded = load_model(name, checkpoint=str(out)).model  # what `openclip-ce eval --checkpoint` builds
        for k, v in ref.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), (alpha, k)
        for got, want in zip(_outputs(loaded), _outputs(ref)):
            assert torch.equal(got, want), alpha
    # and the two models really differ, so the test above could fail
    assert not torch.equal(_outputs(base)[0], _outputs(ft)[0])


def test_alpha_half_is_the_average_of_the_weights(pair, tmp_path):
    name, base, ft_sd, base_ckpt, ft_ckpt = pair
    out = tmp_path / "wise" / "half.pt"
    assert _interpolate(name, base_ckpt, ft_ckpt, 0.5, out) == 0
    ckpt = torch.load(out, weights_only=True)
    sd, meta = ckpt["state_dict"], ckpt[METADATA_KEY]
    assert set(sd) == set(ft_sd)
    for k, b in base.state_dict().items():
        assert torch.equal(sd[k], (b + ft_sd[k]) / 2), k
    assert sd["logit_scale"] != base.state_dict()["logit_scale"]  # interpolated, not copied
    assert meta["alpha"] == 0.5 and meta["copied_from_finetuned"] == [] and meta["interpolated_tensors"] == len(sd)
    avg = open_clip.create_model(name).eval()
    avg.load_state_dict({k: (b + ft_sd[k]) / 2 for k, b in base.state_dict().items()})
    for got, want in zip(_outputs(load_model(name, checkpoint=str(out)).model), _outputs(avg)):
        assert torch.equal(got, want)


def test_buffers_floats_interpolated_integers_copied():
    base = {"bn.running_var": torch.tensor([1.0, 3.0]), "bn.num_batches_tracked": torch.tensor(10),
            "text.position_ids": torch.arange(4), "logit_scale": torch.tensor(2.0)}
    ft = {"bn.running_var": torch.tensor([3.0, 5.0]), "bn.num_batches_tracked": torch.tensor(250),
          "text.position_ids": torch.arange(4), "logit_scale": torch.tensor(4.0)}
    out = interpolate_state_dicts(base, ft, 0.25)
    assert torch.equal(out["bn.running_var"], torch.tensor([1.5, 3.5]))
    assert out["logit_scale"].item() == 2.5
    assert out["bn.num_batches_tracked"].item() == 250 and out["bn.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(out["text.position_ids"], torch.arange(4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fp32_arithmetic_stored_in_the_finetuned_dtype(pair, tmp_path, dtype):
    name, base, ft_sd, base_ckpt, _ = pair
    ft_ckpt = _save_run(tmp_path, f"ft_{dtype}".replace("torch.", ""), ft_sd, dtype=dtype)
    out = tmp_path / "low.pt"
    assert _interpolate(name, base_ckpt, ft_ckpt, 0.3, out) == 0
    sd = torch.load(out, weights_only=True)["state_dict"]
    differs_from_low_precision_sums = False
    for k, b in base.state_dict().items():
        f = ft_sd[k].to(dtype)
        want = (b * 0.7 + f.float() * 0.3).to(dtype)
        assert sd[k].dtype == dtype and torch.equal(sd[k], want), k
        naive = b.to(dtype) * 0.7 + f * 0.3
        differs_from_low_precision_sums |= not torch.equal(sd[k], naive)
    assert differs_from_low_precision_sums
    # eval still loads it (into its fp32 model)
    assert load_model(name, checkpoint=str(out)).model.logit_scale.dtype == torch.float32


def test_output_loads_in_open_clip_and_eval(pair, tmp_path):
    name, base, ft_sd, base_ckpt, ft_ckpt = pair
    cfg_file = tmp_path / "cfgs" / f"{REGISTERED}.json"
    cfg_file.parent.mkdir()
    cfg_file.write_text(json.dumps(TINY_MODEL_CFG))
    open_clip.add_model_config(cfg_file)
    out = tmp_path / "wise" / "a05.pt"
    assert _interpolate(REGISTERED, base_ckpt, ft_ckpt, 0.5, out) == 0
    want = torch.load(out, weights_only=True)["state_dict"]
    model, _, preprocess = open_clip.create_model_and_transforms(REGISTERED, pretrained=str(out))
    for k, v in want.items():
        assert torch.equal(model.state_dict()[k], v), k
    via_eval_pretrained = load_model(REGISTERED, pretrained=str(out)).model
    assert all(torch.equal(via_eval_pretrained.state_dict()[k], v) for k, v in want.items())
    build_imagefolder(tmp_path / "bench")
    res = tmp_path / "r.json"
    assert main(["eval", "--model", REGISTERED, "--checkpoint", str(out), "--data-root", str(tmp_path / "bench"),
                 "--benchmarks", "zeroshot", "--zeroshot-datasets", "folder:toy", "--workers", "0",
                 "--out", str(res)]) == 0
    results = json.loads(res.read_text())
    assert results["model"]["checkpoint"] == str(out) and 0 <= results["summary"]["zeroshot/toy/acc1"] <= 1


def test_mismatched_architectures_are_refused_naming_the_first_tensor(pair, tmp_path, capsys):
    name, base, ft_sd, base_ckpt, _ = pair
    _, other = _tiny(tmp_path, "other", dict(TINY_MODEL_CFG, embed_dim=16))
    wrong = _save_run(tmp_path, "wrong", other.state_dict())
    out = tmp_path / "x" / "out.pt"
    assert _interpolate(name, base_ckpt, wrong, 0.5, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("openclip-ce interpolate: error: ")
    assert "different architectures: tensor 'text_projection': base (64, 32) vs fine-tuned (64, 16)" in err
    assert not out.parent.exists()
    # a missing tensor, then an extra one
    missing = _save_run(tmp_path, "missing", {k: v for k, v in ft_sd.items() if k != "logit_scale"})
    assert _interpolate(name, base_ckpt, missing, 0.5, out) == 2
    assert "fine-tuned lacks tensor 'logit_scale' (base: shape ())" in capsys.readouterr().err
    extra = _save_run(tmp_path, "extra", {**ft_sd, "visual.extra_head": torch.zeros(2, 2)})
    assert _interpolate(name, base_ckpt, extra, 0.5, out) == 2
    assert "fine-tuned has tensor 'visual.extra_head' (shape (2, 2)) that base lacks" in capsys.readouterr().err
    # both the same, but not the architecture of --model
    other_ft = _save_run(tmp_path, "wrong2", other.state_dict())
    assert _interpolate(name, wrong, other_ft, 0.5, out) == 2
    assert f"--base {wrong} does not fit --model {name}: tensor 'text_projection'" in capsys.readouterr().err
    assert not out.parent.exists()


def test_first_mismatch_order():
    a = {"x": torch.zeros(2), "y": torch.zeros(3)}
    assert first_mismatch(a, dict(a), "A", "B") is None
    assert first_mismatch(a, {"x": torch.zeros(2), "y": torch.zeros(4)}, "A", "B") == "tensor 'y': A (3,) vs B (4,)"
    assert "tensor 'x': A torch.float32 vs B torch.int64" in first_mismatch(a, {"x": torch.zeros(2, dtype=torch.long),
                                                                                "y": torch.zeros(3)}, "A", "B")


def test_quickgelu_is_recorded_and_eval_builds_it(tmp_path):
    name, base = _tiny(tmp_path, quick_gelu=True)
    assert any(isinstance(m, open_clip.transformer.QuickGELU) for m in base.modules())
    ft_sd = _finetune(base)
    base_ckpt = _save_run(tmp_path, "base", base.state_dict(), force_quick_gelu=True, model=name)
    ft_ckpt = _save_run(tmp_path, "ft", ft_sd, force_quick_gelu=True, model=name)
    out = tmp_path / "wise" / "a0.pt"
    assert _interpolate(name, base_ckpt, ft_ckpt, 0, out) == 0
    params = (tmp_path / "wise" / "params.txt").read_text()
    assert "force_quick_gelu: True" in params and f"model: {name}" in params
    assert torch.load(out, weights_only=True)[METADATA_KEY]["quick_gelu"] is True
    loaded = load_model(name, checkpoint=str(out))
    assert loaded.info["quick_gelu"] is True and str(tmp_path / "wise" / "params.txt") in loaded.info["quick_gelu_source"]
    for got, want in zip(_outputs(loaded.model), _outputs(base)):
        assert torch.equal(got, want)
    gelu = open_clip.create_model(name).eval()  # the same weights with the config's GELU give other outputs
    gelu.load_state_dict(base.state_dict())
    assert not torch.equal(_outputs(gelu)[0], _outputs(base)[0])
    # a second alpha into the same folder agrees with the params.txt already there
    assert _interpolate(name, base_ckpt, ft_ckpt, 1, tmp_path / "wise" / "a1.pt") == 0
    assert (tmp_path / "wise" / "params.txt").read_text() == params


def test_quickgelu_disagreement_needs_a_choice(tmp_path, capsys):
    name, base = _tiny(tmp_path)
    base_ckpt = _save_run(tmp_path, "base", base.state_dict(), force_quick_gelu=False, model=name)
    ft_ckpt = _save_run(tmp_path, "ft", _finetune(base), force_quick_gelu=True, model=name)
    out = tmp_path / "wise" / "a.pt"
    assert _interpolate(name, base_ckpt, ft_ckpt, 0.5, out) == 2
    err = capsys.readouterr().err
    assert "base weights need quick_gelu=False" in err and "fine-tuned weights quick_gelu=True" in err
    assert "--quickgelu on|off" in err and not out.exists()
    assert _interpolate(name, base_ckpt, ft_ckpt, 0.5, out, "--quickgelu", "on") == 0
    assert load_model(name, checkpoint=str(out)).info["quick_gelu"] is True


def test_pair_quickgelu_with_a_pretrained_tag(tmp_path):
    ft = tmp_path / "logs" / "r" / "checkpoints" / "epoch_1.pt"
    ft.parent.mkdir(parents=True)
    ft.write_bytes(b"")
    (tmp_path / "logs" / "r" / "params.txt").write_text("force_quick_gelu: True\nmodel: ViT-B-32\npretrained: openai\n")
    qg, source, _ = pair_quick_gelu("ViT-B-32", "openai", None, str(ft))
    assert qg is True and "openai" in source and "params.txt" in source
    (tmp_path / "logs" / "r" / "params.txt").write_text("force_quick_gelu: False\nmodel: ViT-B-32\npretrained: openai\n")
    with pytest.raises(UserError, match="base weights need quick_gelu=True"):
        pair_quick_gelu("ViT-B-32", "openai", None, str(ft))
    qg, source, warnings = pair_quick_gelu("ViT-B-32", "openai", None, str(ft), "off")
    assert qg is False and source == "--quickgelu" and any("contradicts the base weights" in w for w in warnings)


def test_a_conflicting_params_txt_is_not_overwritten(pair, tmp_path, capsys):
    name, _, _, base_ckpt, ft_ckpt = pair
    (tmp_path / "wise").mkdir()
    (tmp_path / "wise" / "params.txt").write_text("force_quick_gelu: True\nmodel: ViT-B-32\n")
    assert _interpolate(name, base_ckpt, ft_ckpt, 0.5, tmp_path / "wise" / "a.pt") == 2
    err = capsys.readouterr().err
    assert "wise/params.txt (read by `openclip-ce eval --checkpoint" in err and "another folder" in err
    assert not (tmp_path / "wise" / "a.pt").exists()
    assert (tmp_path / "wise" / "params.txt").read_text() == "force_quick_gelu: True\nmodel: ViT-B-32\n"


def test_bad_arguments(pair, tmp_path, capsys):
    name, _, _, base_ckpt, ft_ckpt = pair
    assert _interpolate(name, base_ckpt, ft_ckpt, 0.5, ft_ckpt) == 2
    assert "would overwrite an input checkpoint" in capsys.readouterr().err
    assert main(["interpolate", "--model", name, "--pretrained", "openai", "--finetuned", str(ft_ckpt),
                 "--alpha", "0.5", "--out", str(tmp_path / "o.pt")]) == 2
    assert "ignores --pretrained" in capsys.readouterr().err
    assert _interpolate(name, base_ckpt, tmp_path / "nope.pt", 0.5, tmp_path / "o.pt") == 2
    assert f"--finetuned {tmp_path / 'nope.pt'}: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _interpolate(name, base_ckpt, ft_ckpt, 1.5, tmp_path / "o.pt")
    assert "alpha must be in [0, 1]" in capsys.readouterr().err
