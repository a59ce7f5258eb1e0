"""A tiny, randomly initialised open_clip model config, for the tests and the scripts' smoke modes.

Nothing here downloads: the model is built by open_clip from ``DIR/open_clip_config.json``
(``--model local-dir:DIR``), with open_clip's bundled BPE tokenizer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict

TINY_MODEL_CFG: Dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}

# ViT-B-32's structure (77-token context, causal text tower with argmax pooling and a learned
# positional embedding, projection matrices, several layers) at tiny widths: for tests whose result
# depends on that structure (e.g. whether packing captions into rows is exact) rather than on the sizes.
TINY_VIT_B_32_CFG: Dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
}

# A small model for CPU benchmarks with ViT-B-32's proportions (50 image tokens, 77 text tokens, vision :
# text width 3 : 2, so that a caption costs 2/3 of an image as in ViT-B-32) at 4 layers and 3/8 of its widths.
SMALL_VIT_B_32_CFG: Dict[str, Any] = {
    "embed_dim": 192,
    "vision_cfg": {"image_size": 224, "layers": 4, "width": 288, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 192, "heads": 3, "layers": 4},
}


def write_tiny_model_dir(path: str | os.PathLike, model_cfg: Dict[str, Any] | None = None) -> str:
    """Write ``open_clip_config.json`` into ``path``; return the ``local-dir:`` model name."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = {
        "model_cfg": model_cfg or TINY_MODEL_CFG,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }
    (path / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
    return f"local-dir:{path}"


def write_training_run(logs, run: str, state_dict, epoch: int = 1, params: Dict[str, Any] | None = None,
                       **extra) -> Path:
    """What open_clip_train writes for a run: ``logs/RUN/checkpoints/epoch_K.pt`` (the weights under DDP's
    ``module.`` prefix, ``extra`` entries such as ``optimizer`` beside them) and, with ``params``,
    ``logs/RUN/params.txt`` (``key: value`` lines). Returns the checkpoint's path."""
    import torch

    run_dir = Path(logs) / run
    (run_dir / "checkpoints").mkdir(parents=True)
    path = run_dir / "checkpoints" / f"epoch_{epoch}.pt"
    torch.save({"epoch": epoch, "name": run, "state_dict": {f"module.{k}": v for k, v in state_dict.items()}, **extra},
               path)
    if params is not None:
        (run_dir / "params.txt").write_text("".join(f"{k}: {v}\n" for k, v in params.items()))
    return path
