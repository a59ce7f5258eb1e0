"""``openclip-ce interpolate``: WiSE-FT weight-space interpolation between a base and a fine-tuned model.

``theta(a) = (1 - a) * theta_base + a * theta_ft`` (Wortsman et al., CVPR 2022). Fine-tuning for
composition (CE-CLIP, NegCLIP) costs zero-shot accuracy; interpolating the weights buys most of it
back at a small compositional cost, with no retraining. ``openclip-ce sweep`` measures that
trade-off over a series of alphas; this command writes the checkpoint for the alpha one picks.

What happens to each tensor of the state dict (the same for every open_clip architecture):

* **floating-point tensors are interpolated**: every weight, ``logit_scale`` (and SigLIP's
  ``logit_bias``) and floating buffers such as BatchNorm running statistics (ResNet / timm towers).
  ``logit_scale`` is interpolated as stored, i.e. in log space, as WiSE-FT interpolates the whole
  state dict: no ``eval`` number depends on it (cosine similarities and argmaxes ignore the scale),
  but it is the temperature of the model's logits and of the loss if training continues from here,
  and in log space the result stays between the two models' temperatures.
* **integer and boolean tensors are copied from the fine-tuned checkpoint**: BatchNorm's
  ``num_batches_tracked`` counters and index buffers (``position_ids`` of HF text towers). They are
  counters or constants, not weights, and a weighted mean of a counter means nothing.
* Non-persistent buffers (open_clip's causal ``attn_mask``) are not in state dicts: both models
  rebuild them from the model config.

Arithmetic is float32 whatever the stored dtype (float64 if a checkpoint stores float64), so fp16
and bf16 checkpoints lose nothing to low-precision sums; the result is stored in the fine-tuned
checkpoint's dtype (the output stands in for that checkpoint). ``(1 - a) * b + a * f`` is exact at
the ends: alpha 0 and 1 give the base and fine-tuned tensors bit for bit.

Before anything is computed the two state dicts must have the same keys and shapes (and the base
must fit ``--model``); otherwise a one-line error names the first mismatching tensor.

QuickGELU: the activation is part of what the weights were trained with but not of the state dict.
Both sides are resolved as ``eval`` resolves them (:func:`openclip_ce.evaluate.models.resolve_quick_gelu`:
the pretrained tag's flag, or the ``params.txt`` of the run that wrote a checkpoint). Two different
known activations are refused unless ``--quickgelu on|off`` chooses one. The result is recorded in a
``params.txt`` next to the output (``model``, ``force_quick_gelu``, ``pretrained``), the file
``eval --checkpoint`` reads, so the interpolated checkpoint is evaluated with the right activation.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from .. import __version__
from ..errors import UserError
from ..fileio import write_atomic
from ..evaluate.models import (LoadedModel, check_pretrained_applies, checkpoint_state_dict, load_model,
                               model_config_quick_gelu, read_params_txt, require_device, resolve_quick_gelu,
                               training_run_quick_gelu)

log = logging.getLogger(__name__)

METADATA_KEY = "openclip_ce_interpolation"


class ArchitectureMismatch(UserError):
    """Two state dicts (or a state dict and ``--model``) do not have the same tensors."""


# --------------------------------------------------------------------------- arithmetic


def _shape(t: torch.Tensor) -> Tuple[int, ...]:
    return tuple(t.shape)


def first_mismatch(ref: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor],
                   ref_name: str, other_name: str) -> Optional[str]:
    """The first tensor (in ``ref``'s order, then ``other``'s extra keys) that differs in name, shape
    or kind (floating vs integer); None when the two have the same architecture."""
    for k, r in ref.items():
        if k not in other:
            return f"{other_name} lacks tensor {k!r} ({ref_name}: shape {_shape(r)})"
        o = other[k]
        if _shape(r) != _shape(o):
            return f"tensor {k!r}: {ref_name} {_shape(r)} vs {other_name} {_shape(o)}"
        if r.is_floating_point() != o.is_floating_point():
            return f"tensor {k!r}: {ref_name} {r.dtype} vs {other_name} {o.dtype}"
    for k, o in other.items():
        if k not in ref:
            return f"{other_name} has tensor {k!r} (shape {_shape(o)}) that {ref_name} lacks"
    return None


def interpolates(t: torch.Tensor) -> bool:
    """Whether a state-dict tensor is interpolated (floating point) or copied from the fine-tuned one."""
    return t.is_floating_point()


def interpolate_state_dicts(base: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor],
                            alpha: float) -> Dict[str, torch.Tensor]:
    """``(1 - alpha) * base + alpha * finetuned`` per floating tensor, in float32 (float64 if either side
    is float64), stored in the fine-tuned dtype; other tensors copied from ``finetuned`` (module docstring).
    The two must have the same keys and shapes (:func:`first_mismatch`); the result is on ``finetuned``'s device."""
    out: Dict[str, torch.Tensor] = {}
    for k, f in finetuned.items():
        if not interpolates(f):
            out[k] = f.clone()
            continue
        b = base[k].to(f.device)
        compute = torch.float64 if torch.float64 in (b.dtype, f.dtype) else torch.float32
        mixed = b.to(compute).mul(1.0 - alpha).add_(f.to(compute).mul(alpha))
        out[k] = mixed.to(f.dtype)
    return out


# --------------------------------------------------------------------------- QuickGELU


def pair_quick_gelu(model: str, pretrained: Optional[str], base: Optional[str], finetuned: str,
                    requested: str = "auto") -> Tuple[Optional[bool], str, List[str]]:
    """The activation to build the interpolated model with: ``(quick_gelu or None = config default, why, warnings)``.

    Each side is resolved as ``eval`` would resolve it alone; a disagreement between two known
    activations is an error unless ``requested`` (``--quickgelu on|off``) settles it."""
    b_params = read_params_txt(Path(base)) if base else None
    b_qg, b_src, warnings = resolve_quick_gelu(model, pretrained, b_params, "auto")
    f_qg, f_src, f_warn = resolve_quick_gelu(model, None, read_params_txt(Path(finetuned)), "auto")
    warnings = list(dict.fromkeys(warnings + f_warn))
    known = [(side, qg, src) for side, qg, src in (("base", b_qg, b_src), ("fine-tuned", f_qg, f_src)) if qg is not None]
    if requested in ("on", "off"):
        forced = requested == "on"
        for side, qg, src in known:
            if qg != forced:
                warnings.append(f"--quickgelu {requested} contradicts the {side} weights ({src} needs quick_gelu={qg})")
        return forced, "--quickgelu", warnings
    if len(known) == 2 and known[0][1] != known[1][1]:
        raise UserError(
            f"the base weights need quick_gelu={b_qg} ({b_src}) but the fine-tuned weights quick_gelu={f_qg} "
            f"({f_src}): no activation fits both; choose one with --quickgelu on|off")
    if known:
        return known[0][1], " and ".join(dict.fromkeys(src for _, _, src in known)), warnings
    return None, "model config (neither model's activation is recorded)", warnings


def activation_params(model: str, quick_gelu: Optional[bool], pretrained: Optional[str]) -> Dict[str, str]:
    """The ``params.txt`` lines through which ``eval --checkpoint`` builds ``quick_gelu`` for ``model``."""
    qg = quick_gelu if quick_gelu is not None else bool(model_config_quick_gelu(model))
    tag = pretrained if pretrained and not os.path.isfile(pretrained) else "None"
    return {"model": model, "force_quick_gelu": str(bool(qg)), "pretrained": tag}


def check_activation_record(out: Path, params: Dict[str, str]) -> Optional[Path]:
    """Where eval will read the activation of ``out`` from.

    Returns the ``params.txt`` to write (next to ``out``), or None when the one eval already reads
    (next to ``out``, or the run folder above it) says the same. A file that says otherwise is an
    error: it would make eval build the wrong activation, and it is not ours to overwrite."""
    existing = read_params_txt(out)
    want = training_run_quick_gelu(params)
    if existing is None:
        return out.parent / "params.txt"
    got = training_run_quick_gelu(existing)
    if existing.get("model") == params["model"] and got == want:
        return None
    raise UserError(
        f"{existing['__path__']} (read by `openclip-ce eval --checkpoint {out}`) describes model "
        f"{existing.get('model')} with quick_gelu={got}, but this checkpoint is {params['model']} with "
        f"quick_gelu={want}: choose an --out in another folder")


def params_text(params: Dict[str, str]) -> str:
    lines = [f"{k}: {v}" for k, v in params.items()]
    lines.append("written_by: openclip-ce interpolate (the activation of every interpolated checkpoint in this folder)")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the two models


@dataclass
class WeightPair:
    """The base and fine-tuned state dicts (same architecture, checked) and a model built for them."""

    model_name: str
    base: Dict[str, torch.Tensor]
    finetuned: Dict[str, torch.Tensor]
    template: LoadedModel
    quick_gelu: Optional[bool]
    quick_gelu_source: str
    base_source: str
    finetuned_source: str
    pretrained: Optional[str] = None
    warnings: List[str] = field(default_factory=list)

    def to(self, device: str) -> "WeightPair":
        """Both state dicts on ``device`` (moved once: a sweep interpolates there for every alpha)."""
        require_device(device)
        self.base = {k: v.to(device) for k, v in self.base.items()}
        self.finetuned = {k: v.to(device) for k, v in self.finetuned.items()}
        return self

    def weights(self, alpha: float) -> Dict[str, torch.Tensor]:
        return interpolate_state_dicts(self.base, self.finetuned, alpha)

    def info(self) -> Dict:
        return {"model": self.model_name, "base": self.base_source, "finetuned": self.finetuned_source,
                "quick_gelu": self.quick_gelu if self.quick_gelu is not None else model_config_quick_gelu(self.model_name),
                "quick_gelu_source": self.quick_gelu_source, "warnings": self.warnings}


def _existing_file(path: str, flag: str) -> Path:
    p = Path(os.path.expanduser(path))
    if not p.is_file():
        raise UserError(f"{flag} {p}: no such file")
    return p


def load_pair(model: str, pretrained: Optional[str], base: Optional[str], finetuned: str,
              quickgelu: str = "auto") -> WeightPair:
    """Resolve the activation, build ``model`` (with the base weights when ``pretrained`` is given),
    read both state dicts and check that they are one architecture. Everything stays on the CPU."""
    if bool(pretrained) == bool(base):
        raise UserError("give the base model as either --pretrained TAG or --base PATH")
    check_pretrained_applies(model, pretrained, "give the base weights as --base PATH")
    ft_path = _existing_file(finetuned, "--finetuned")
    base_path = _existing_file(base, "--base") if base else None
    qg, qg_source, warnings = pair_quick_gelu(model, pretrained, str(base_path) if base_path else None,
                                              str(ft_path), quickgelu)
    for w in warnings:
        log.warning("QuickGELU/model check: %s", w)
    flag = "auto" if qg is None else ("on" if qg else "off")
    template = load_model(model, pretrained=pretrained, device="cpu", quickgelu=flag)
    reference = {k: v.detach().clone() for k, v in template.model.state_dict().items()}
    if base_path is not None:
        base_sd = checkpoint_state_dict(base_path)
        problem = first_mismatch(reference, base_sd, f"--model {model}", "the base")
        if problem:
            raise ArchitectureMismatch(f"--base {base_path} does not fit --model {model}: {problem}")
        base_source = str(base_path)
    else:
        base_sd, base_source = reference, f"{model}:{pretrained}"
    ft_sd = checkpoint_state_dict(ft_path)
    problem = first_mismatch(base_sd, ft_sd, "base", "fine-tuned")
    if problem:
        raise ArchitectureMismatch(f"the base ({base_source}) and --finetuned {ft_path} are different "
                                   f"architectures: {problem}")
    return WeightPair(model, dict(base_sd), ft_sd, template, qg, qg_source, base_source, str(ft_path),
                      pretrained, warnings)


# --------------------------------------------------------------------------- command


def alpha_value(text: str) -> float:
    try:
        a = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"alpha must be a number in [0, 1], got {text!r}") from None
    if not (math.isfinite(a) and 0.0 <= a <= 1.0):
        raise argparse.ArgumentTypeError(f"alpha must be in [0, 1] (0 = base, 1 = fine-tuned), got {text}")
    return a


def add_pair_arguments(g) -> None:
    """``--model``, the base (``--pretrained TAG`` or ``--base PATH``), ``--finetuned PATH``, ``--quickgelu``."""
    g.add_argument("--model", required=True, help="open_clip model name of both models (ViT-B-32, local-dir:DIR, ...)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--pretrained", default=None, help="base model: open_clip pretrained tag (openai, laion2b_...) or weights file")
    src.add_argument("--base", default=None, help="base model: a checkpoint (open_clip training checkpoint or state dict)")
    g.add_argument("--finetuned", required=True, help="fine-tuned checkpoint (logs/NAME/checkpoints/epoch_K.pt)")
    g.add_argument("--quickgelu", choices=("auto", "on", "off"), default="auto",
                   help="activation: auto = what both models' weights were trained with (pretrained tag, runs' "
                        "params.txt); on/off force it when they disagree")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.epilog = ("Writes OUT (a checkpoint that `openclip-ce eval --checkpoint OUT` and open_clip's "
                "`pretrained=OUT` load) and, next to it, the params.txt through which eval builds the right activation.")
    add_pair_arguments(p.add_argument_group("models"))
    p.add_argument("--alpha", type=alpha_value, required=True,
                   help="weight of the fine-tuned model: 0 = base, 1 = fine-tuned, 0.5 = their average")
    p.add_argument("--out", required=True, help="output checkpoint (.pt)")


def _same_file(a: Path, b: Optional[str]) -> bool:
    return b is not None and Path(os.path.expanduser(b)).resolve() == a.resolve()


def run(args) -> int:
    out = Path(os.path.expanduser(args.out))
    if out.suffix == ".safetensors":
        raise UserError(f"--out {out}: write a torch checkpoint (.pt); eval --checkpoint reads torch files")
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name (e.g. {out / 'wise_ft.pt'})")
    if _same_file(out, args.finetuned) or _same_file(out, args.base):
        raise UserError(f"--out {out} would overwrite an input checkpoint")
    pair = load_pair(args.model, args.pretrained, args.base, args.finetuned, args.quickgelu)
    params = activation_params(args.model, pair.quick_gelu, args.pretrained)
    params_file = check_activation_record(out, params)
    if pair.quick_gelu is False and training_run_quick_gelu(params):
        log.warning("%s's config uses QuickGELU but these weights need GELU: evaluate %s with --quickgelu off",
                    args.model, out)
    sd = pair.weights(args.alpha)
    copied = [k for k, v in pair.finetuned.items() if not interpolates(v)]
    meta = {"alpha": args.alpha, "formula": "(1 - alpha) * base + alpha * finetuned (float32 arithmetic)",
            "model": args.model, "base": pair.base_source, "finetuned": pair.finetuned_source,
            "quick_gelu": params["force_quick_gelu"] == "True", "quick_gelu_source": pair.quick_gelu_source,
            "interpolated_tensors": len(sd) - len(copied), "copied_from_finetuned": copied,
            "stored_dtypes": sorted({str(v.dtype) for v in sd.values()}), "openclip_ce": __version__}
    buf = io.BytesIO()
    torch.save({"state_dict": sd, METADATA_KEY: meta}, buf)
    if params_file is not None:
        write_atomic(params_file, params_text(params))
    write_atomic(out, buf.getvalue())
    log.info("wrote %s (alpha=%g: %d tensors interpolated, %d copied from the fine-tuned checkpoint; quick_gelu=%s, "
             "recorded in %s)", out, args.alpha, meta["interpolated_tensors"], len(copied), meta["quick_gelu"],
             params_file or read_params_txt(out)["__path__"])
    return 0
