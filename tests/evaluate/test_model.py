"""Model loading (QuickGELU, training checkpoints) and the real scorer against a direct computation."""


import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from openclip_ce.evaluate.common import Case, ImageRef
from openclip_ce.evaluate.models import ModelLoadError, load_model, resolve_quick_gelu
from openclip_ce.evaluate.scorer import ClipScorer, load_image
from openclip_ce.testing.tiny_clip import TINY_MODEL_CFG, write_tiny_model_dir, write_training_run

from openclip_ce.testing.eval_benchmarks import write_image


def test_openai_weights_into_gelu_config_get_quickgelu():
    qg, source, warnings = resolve_quick_gelu("ViT-B-32", "openai", None, "auto")
    assert qg is True and "openai" in source
    assert len(warnings) == 1 and "quick_gelu=False" in warnings[0]
    qg, _, warnings = resolve_quick_gelu("ViT-B-32-quickgelu", "openai", None, "auto")
    assert qg is True and warnings == []
    qg, _, warnings = resolve_quick_gelu("ViT-B-32", "laion2b_s34b_b79k", None, "auto")
    assert qg is False and warnings == []
    qg, source, warnings = resolve_quick_gelu("ViT-B-32", "openai", None, "off")
    assert qg is False and source == "--quickgelu" and "contradicts" in warnings[0]


def test_checkpoint_follows_the_training_run_activation():
    params = {"model": "ViT-B-32", "force_quick_gelu": "True", "pretrained": "openai", "__path__": "p/params.txt"}
    qg, source, warnings = resolve_quick_gelu("ViT-B-32", None, params, "auto")
    assert qg is True and "p/params.txt" in source and any("quick_gelu=False" in w for w in warnings)
    params = {"model": "ViT-B-32", "force_quick_gelu": "False", "pretrained": "openai", "__path__": "p/params.txt"}
    qg, _, warnings = resolve_quick_gelu("ViT-B-32", None, params, "auto")
    assert qg is False and any("fine-tuned 'openai'" in w for w in warnings)
    params = {"model": "ViT-B-16", "force_quick_gelu": "False", "pretrained": "None", "__path__": "p/params.txt"}
    _, _, warnings = resolve_quick_gelu("ViT-B-32", None, params, "auto")
    assert any("differs from the training run's model ViT-B-16" in w for w in warnings)


def _training_checkpoint(tmp_path, model, force_quick_gelu=False):
    """What open_clip_train writes: logs/NAME/checkpoints/epoch_K.pt (module. prefixes + optimizer) + params.txt."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 3, 32, 32), torch.zeros(1, 32, dtype=torch.long))[0].sum().backward()
    opt.step()
    return write_training_run(tmp_path / "logs", "run1", model.state_dict(), epoch=3, optimizer=opt.state_dict(),
                              params={"force_quick_gelu": force_quick_gelu, "model": "tiny", "pretrained": None})


def test_training_checkpoint_loads_directly(tmp_path):
    name = write_tiny_model_dir(tmp_path / "model")
    trained, _, _ = open_clip.create_model_and_transforms(name)
    ckpt = _training_checkpoint(tmp_path, trained)
    loaded = load_model(name, checkpoint=str(ckpt))
    for k, v in trained.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    assert not loaded.model.training
    assert loaded.info["checkpoint_epoch"] == 3 and loaded.info["training_params"].endswith("params.txt")


def test_training_checkpoint_with_quickgelu_builds_quickgelu(tmp_path, caplog):
    name = write_tiny_model_dir(tmp_path / "model")
    trained, _, _ = open_clip.create_model_and_transforms(name, quick_gelu=True)
    ckpt = _training_checkpoint(tmp_path, trained, force_quick_gelu=True)
    loaded = load_model(name, checkpoint=str(ckpt))
    assert loaded.info["quick_gelu"] is True
    assert any(isinstance(m, open_clip.transformer.QuickGELU) for m in loaded.model.modules())


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    name = write_tiny_model_dir(tmp_path / "model")
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(name, checkpoint=str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"junk\.pt: cannot load checkpoint"):
        load_model(name, checkpoint=str(tmp_path / "junk.pt"))
    other = dict(TINY_MODEL_CFG, embed_dim=16)
    wrong, _, _ = open_clip.create_model_and_transforms(write_tiny_model_dir(tmp_path / "other", other))
    torch.save({"state_dict": wrong.state_dict()}, tmp_path / "wrong.pt")
    with pytest.raises(ModelLoadError, match=r"wrong\.pt: state_dict does not fit"):
        load_model(name, checkpoint=str(tmp_path / "wrong.pt"))


def test_scorer_matches_direct_computation_and_truncates(tmp_path):
    name = write_tiny_model_dir(tmp_path / "model")
    loaded = load_model(name)
    write_image(tmp_path / "a.png", size=(40, 30), color=(10, 200, 30), fmt="PNG")
    write_image(tmp_path / "b.png", size=(20, 20), color=(200, 10, 30), fmt="PNG")
    long_text = " ".join(["word"] * 200)  # far beyond the 32-token context
    cases = [Case(ImageRef(str(tmp_path / "a.png"), (0, 0, 20, 15)), ("a red cup", long_text)),
             Case(ImageRef(str(tmp_path / "b.png")), ("a blue cup", "a red cup")),
             Case(ImageRef(str(tmp_path / "a.png")), ("a blue cup", "a green cup"))]
    scorer = ClipScorer(loaded.model, loaded.preprocess, loaded.tokenizer, "cpu", batch_size=2, workers=0)
    got = scorer.score(cases, "t")
    m = loaded.model
    with torch.no_grad():
        for i, c in enumerate(cases):
            img = F.normalize(m.encode_image(loaded.preprocess(load_image(c.image))[None]), dim=-1)
            txt = F.normalize(m.encode_text(loaded.tokenizer(list(c.texts))), dim=-1)
            np.testing.assert_allclose(got[i], (img @ txt.T)[0].numpy(), rtol=1e-5, atol=1e-6)
    assert loaded.tokenizer([long_text]).shape == (1, 32)
