"""Load the model to evaluate: an open_clip name + pretrained tag/file, or a checkpoint of our training runs.

The QuickGELU trap: OpenAI's CLIP weights were trained with QuickGELU, but open_clip's plain
``ViT-B-32`` config uses nn.GELU. open_clip 3.3 only *warns* when ``--pretrained openai`` is put
into such a config (``pretrained_cfg['quick_gelu']`` vs the model config) and keeps the wrong
activation, which costs accuracy. Here the activation follows the weights by default:

* ``--pretrained TAG``: the tag's ``quick_gelu`` flag (open_clip's pretrained registry) decides;
* ``--checkpoint PATH``: the activation the training run used, read from the run's ``params.txt``
  (``model`` and ``force_quick_gelu``), when that file is next to the checkpoint;

``--quickgelu on|off`` overrides and is warned about when it contradicts what the weights need.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..errors import UserError, reason

log = logging.getLogger(__name__)


class ModelLoadError(UserError):
    """The model or checkpoint cannot be built or loaded (message names the file and why)."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class LoadedModel:
    model: Any
    preprocess: Any
    tokenizer: Any
    info: Dict[str, Any] = field(default_factory=dict)


def model_config_quick_gelu(name: str) -> Optional[bool]:
    """``quick_gelu`` of an open_clip model config (built-in or ``local-dir:``); None if unknown."""
    import open_clip

    try:
        cfg = open_clip.get_model_config(name)
    except Exception:  # hf-hub names need the network
        cfg = None
    if cfg is None:
        return None
    return bool(cfg.get("quick_gelu", False))


def pretrained_tag_quick_gelu(name: str, tag: str) -> Optional[bool]:
    """``quick_gelu`` the weights of a pretrained tag were trained with; None if not a registry tag."""
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(name.replace("/", "-"), tag)
    if not cfg:
        return None
    return bool(cfg.get("quick_gelu", False))


def read_params_txt(checkpoint: Path) -> Optional[Dict[str, str]]:
    """``params.txt`` of the open_clip run that wrote ``checkpoint`` (``logs/NAME/checkpoints/x.pt``)."""
    for cand in (checkpoint.parent.parent / "params.txt", checkpoint.parent / "params.txt"):
        if cand.is_file():
            params = {}
            for line in cand.read_text(encoding="utf-8", errors="replace").splitlines():
                key, sep, value = line.partition(": ")
                if sep:
                    params[key.strip()] = value.strip()
            params["__path__"] = str(cand)
            return params
    return None


def training_run_quick_gelu(params: Dict[str, str]) -> Optional[bool]:
    if params.get("force_quick_gelu") == "True":
        return True
    model = params.get("model")
    return model_config_quick_gelu(model) if model else None


def resolve_quick_gelu(model_name: str, pretrained: Optional[str], params: Optional[Dict[str, str]],
                       requested: str) -> tuple[Optional[bool], str, List[str]]:
    """Decide the activation: ``(quick_gelu or None = config default, why, warnings)``."""
    warnings: List[str] = []
    cfg_qg = model_config_quick_gelu(model_name)
    needed, source = None, "model config"
    if pretrained and not os.path.isfile(pretrained):
        needed = pretrained_tag_quick_gelu(model_name, pretrained)
        source = f"pretrained tag {pretrained!r}"
    elif params is not None:
        needed = training_run_quick_gelu(params)
        source = f"training run {params['__path__']}"
        run_model = params.get("model")
        if run_model and run_model != model_name:
            warnings.append(f"--model {model_name} differs from the training run's model {run_model} ({params['__path__']})")
        run_tag = params.get("pretrained")
        if run_model and run_tag and run_tag != "None":
            init_qg = pretrained_tag_quick_gelu(run_model, run_tag)
            if init_qg is not None and needed is not None and init_qg != needed:
                warnings.append(
                    f"the training run fine-tuned {run_tag!r} weights (trained with quick_gelu={init_qg}) in a "
                    f"quick_gelu={needed} model ({params['__path__']}); evaluating with the activation it was trained with"
                )
    if requested in ("on", "off"):
        forced = requested == "on"
        if needed is not None and forced != needed:
            warnings.append(f"--quickgelu {requested} contradicts the weights ({source} needs quick_gelu={needed})")
        return forced, "--quickgelu", warnings
    if needed is None:
        return None, "model config (weights' activation unknown)", warnings
    if cfg_qg is not None and cfg_qg != needed:
        warnings.append(
            f"{model_name} config has quick_gelu={cfg_qg} but {source} needs quick_gelu={needed}: "
            f"building the model with quick_gelu={needed} (use the matching '-quickgelu' model name to silence this)"
        )
    return needed, source, warnings


def _checkpoint_epoch(path: Path) -> Optional[int]:
    """Check that ``path`` is a torch checkpoint with weights (one-line error if not); its epoch if recorded.

    Memory-mapped where the file allows it, so a checkpoint carrying optimizer state is not read
    into memory twice (open_clip's loader reads the weights next)."""
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: cannot load checkpoint (an empty file, 0 bytes)")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) torch files cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or pickled objects weights_only refuses
        raise ModelLoadError(f"{path}: cannot load checkpoint ({_unloadable(path, e)})") from e
    weights = obj.get("state_dict") if isinstance(obj, dict) and "state_dict" in obj else obj
    if not isinstance(weights, dict) or not weights:
        raise ModelLoadError(f"{path}: no state_dict in checkpoint")
    epoch = obj.get("epoch") if isinstance(obj, dict) and "state_dict" in obj else None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def _unloadable(path: Path, exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in words that fit the file (torch's own text advises
    ``weights_only=False`` for any file it cannot read, a text file included)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return "a damaged or cut-off torch zip file: its end is missing"
    if head != b"PK\x03\x04" and head[:1] != b"\x80":
        return "not a PyTorch file: neither torch.save's zip format nor a pickle"
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    if found:
        return (f"it holds Python objects besides tensors ({found.group(1)}), which are not unpickled, for "
                "safety; save the model's state_dict alone")
    if "Weights only load failed" in str(exc):
        return "a pickle that torch's safe loader refuses: not written by torch.save, or not weights alone"
    return reason(exc)


def checkpoint_state_dict(path: Path) -> Dict[str, Any]:
    """The weights of an open_clip training checkpoint or a bare state_dict (``state_dict`` key and DDP's
    ``module.`` prefix handled by open_clip's own ``load_state_dict``; safetensors too). One-line errors."""
    import open_clip.factory as open_clip_factory

    if not str(path).endswith(".safetensors"):
        _checkpoint_epoch(path)  # one-line error for a file that is not a checkpoint with weights
    try:
        sd = open_clip_factory.load_state_dict(str(path), weights_only=True)
    except Exception as e:
        raise ModelLoadError(f"{path}: cannot load checkpoint ({reason(e)})") from e
    if not isinstance(sd, dict) or not sd:
        raise ModelLoadError(f"{path}: no state_dict in checkpoint")
    return sd


def load_checkpoint_weights(model, path: Path, model_name: str) -> Optional[int]:
    """Load an open_clip training checkpoint (or a bare state_dict) into ``model`` with open_clip's own
    ``load_checkpoint`` (``state_dict`` key, DDP ``module.`` prefix, safetensors, position-embedding
    resizing, strict key check); returns the checkpoint's epoch if recorded. One-line errors."""
    import open_clip

    epoch = None if str(path).endswith(".safetensors") else _checkpoint_epoch(path)
    try:
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except Exception as e:
        first = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = " ".join(first[:3])[:400] or type(e).__name__
        if isinstance(e, RuntimeError) and ("state_dict" in str(e) or "size mismatch" in str(e)):
            raise ModelLoadError(f"{path}: state_dict does not fit --model {model_name}: {detail}") from e
        raise ModelLoadError(f"{path}: cannot load checkpoint into --model {model_name} ({type(e).__name__}: {detail})") from e
    return epoch


def require_device(device: str) -> str:
    """``device`` if this machine has it; else a one-line error (not torch's driver traceback)."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r}: not a torch device (cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {device}: no CUDA GPU on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= count:
            raise UserError(f"--device {device}: this machine has {count} GPU(s) (cuda:0..cuda:{count - 1})")
    return device


def check_pretrained_applies(model_name: str, pretrained: Optional[str], instead: str) -> None:
    """open_clip ignores ``pretrained`` for a ``local-dir:`` or ``hf-hub:`` model (the weights come with the
    name; it only logs that), so a weights file given that way would silently not be loaded."""
    if pretrained and model_name.startswith(("local-dir:", "hf-hub:")):
        raise ModelLoadError(f"open_clip takes the weights of {model_name} from the name itself and ignores "
                             f"--pretrained {pretrained}; {instead}")


def load_model(model_name: str, pretrained: Optional[str] = None, checkpoint: Optional[str] = None,
               device: str = "cpu", quickgelu: str = "auto") -> LoadedModel:
    import open_clip

    if pretrained and checkpoint:
        raise ModelLoadError("give either --pretrained or --checkpoint, not both")
    check_pretrained_applies(model_name, pretrained, "give other weights as --checkpoint PATH")
    ckpt = Path(os.path.expanduser(checkpoint)) if checkpoint else None
    if ckpt is not None and not ckpt.is_file():
        raise ModelLoadError(f"--checkpoint {ckpt}: no such file")
    params = read_params_txt(ckpt) if ckpt else None
    qg, qg_source, warnings = resolve_quick_gelu(model_name, pretrained, params, quickgelu)
    for w in warnings:
        log.warning("QuickGELU/model check: %s", w)

    kwargs = {} if qg is None else {"quick_gelu": qg}
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device="cpu", **kwargs)
    except Exception as e:
        raise ModelLoadError(f"cannot create {model_name} (pretrained={pretrained}): {e}") from e
    info: Dict[str, Any] = {
        "model": model_name, "pretrained": pretrained, "checkpoint": str(ckpt) if ckpt else None,
        "quick_gelu": qg if qg is not None else model_config_quick_gelu(model_name),
        "quick_gelu_source": qg_source, "warnings": warnings,
    }
    if ckpt is not None:
        info["checkpoint_epoch"] = load_checkpoint_weights(model, ckpt, model_name)
        info["checkpoint_loader"] = "open_clip.load_checkpoint (strict)"
        if params is not None:
            info["training_params"] = params["__path__"]
    model = model.to(require_device(device)).eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    info["context_length"] = int(getattr(tokenizer, "context_length", 0) or 0) or None
    info["label"] = model_label(model_name, pretrained, ckpt)
    return LoadedModel(model, preprocess, tokenizer, info)


def model_label(name: str, pretrained: Optional[str], ckpt: Optional[Path]) -> str:
    if ckpt is not None:
        run = ckpt.parent.parent.name if ckpt.parent.name == "checkpoints" else ckpt.parent.name
        return f"{name}:{run}/{ckpt.stem}"
    if name.startswith("local-dir:"):
        return Path(name[len("local-dir:"):]).name or name
    return f"{name}:{pretrained}" if pretrained else name
