"""Which matrix multiply spaCy's tagger runs on: chosen by measurement, kept only if the tags do not change.

About three quarters of tagging time is the tagger's matrix multiplies (thinc's ``Ops.gemm``). thinc's
default CPU ops send them to ``blis``; on many CPUs numpy's BLAS (OpenBLAS) or torch's (MKL, oneDNN)
is several times faster on the same shapes. The candidates (:data:`OPS`):

* ``blis``: thinc's default ``NumpyOps``;
* ``numpy``: the same ops with ``use_blis=False`` (thinc's own switch: ``numpy.dot``);
* ``torch``: the same ops with the multiply done by ``torch.matmul`` on the same arrays (no copy).

They compute the same products in different summation orders, so the scores differ in the last bits;
a tag could only change where two tags tie to that precision. :func:`choose_ops` (``--tagging-ops
auto``) tags probe captions with each, keeps those whose tags equal the default's, and picks the
fastest of them; what it measured is recorded in ``--out/.make-shards/config.json``. On 10,222
sentences (187,881 tokens) of this project's README, the CE-CLIP paper and ``transformers`` docstrings,
``numpy`` and ``torch`` gave the default's tags for every token.

The choice is made once per run, by the command, and every worker uses it: which worker tags a
caption never decides which multiply tagged it. A measurement is kept per machine (CPU, library
versions, threads) in ``~/.cache/openclip-ce/tagging_ops.json`` (``$OPENCLIP_CE_CACHE`` or
``$XDG_CACHE_HOME`` move it), so only the first run on a machine pays the few seconds it takes.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

from .probe_captions import PROBE_CAPTIONS

log = logging.getLogger(__name__)

OPS = ("blis", "numpy", "torch")
DEFAULT_OPS = "blis"


def make_ops(name: str):
    """The thinc ``Ops`` object of a candidate name."""
    from thinc.api import NumpyOps

    if name == "blis":
        return NumpyOps()
    if name == "numpy":
        return NumpyOps(use_blis=False)
    if name == "torch":
        return _torch_ops_class()()
    raise ValueError(f"unknown tagging ops {name!r}; expected one of {', '.join(OPS)}")


_TORCH_OPS = None


def _torch_ops_class():
    global _TORCH_OPS
    if _TORCH_OPS is None:
        import torch
        from thinc.api import NumpyOps

        class TorchGemmOps(NumpyOps):
            """thinc's numpy ops with ``gemm`` through ``torch.matmul`` (zero-copy views of the arrays)."""

            def gemm(self, x, y, *, out=None, trans1=False, trans2=False):
                a, b = torch.from_numpy(x), torch.from_numpy(y)
                if trans1:
                    a = a.T
                if trans2:
                    b = b.T
                if out is None:
                    return torch.matmul(a, b).numpy()
                torch.matmul(a, b, out=torch.from_numpy(out))
                return out

        _TORCH_OPS = TorchGemmOps
    return _TORCH_OPS


def apply_ops(nlp, name: str) -> None:
    """Run every thinc model of ``nlp``'s pipes on the ops ``name``."""
    ops = make_ops(name)
    for _, pipe in nlp.pipeline:
        model = getattr(pipe, "model", None)
        if model is not None and hasattr(model, "walk"):
            for node in model.walk():
                node.ops = ops


def probe_captions(n: int = 256) -> Sequence[str]:
    """Varied captions for the probe (the probe captions and pairs of them)."""
    caps = list(PROBE_CAPTIONS)
    i = 0
    while len(caps) < n:
        a, b = PROBE_CAPTIONS[i % len(PROBE_CAPTIONS)], PROBE_CAPTIONS[(7 * i + 3) % len(PROBE_CAPTIONS)]
        caps.append(a.rstrip(".") + " and " + b[0].lower() + b[1:])
        i += 1
    return caps[:n]


def choose_ops(tagger, candidates: Sequence[str] = OPS, texts: Optional[Sequence[str]] = None,
               rounds: int = 2) -> Dict[str, object]:
    """Measure each candidate on ``tagger`` (probe captions, CPU seconds of this process, best of
    ``rounds``), keep those with the default's tags, pick the fastest; the tagger is left on it.

    Returns ``{"ops": chosen, "captions_per_s": {name: rate}, "same_tags": {name: bool}, "probe_captions": n}``.
    """
    texts = list(texts or probe_captions())
    rates: Dict[str, float] = {}
    same: Dict[str, bool] = {}
    reference = None
    for name in [DEFAULT_OPS] + [c for c in candidates if c != DEFAULT_OPS]:
        try:
            tagger.set_ops(name)
        except Exception as e:  # noqa: BLE001 - a candidate that cannot run here is not a candidate
            log.info("tagging ops %s unavailable: %s", name, e)
            continue
        tags = tagger.tag(texts[:32])  # warm-up
        best = float("inf")
        for _ in range(rounds):
            t0 = time.process_time()
            tags = tagger.tag(texts)
            best = min(best, time.process_time() - t0)
        rates[name] = round(len(texts) / max(best, 1e-9), 1)
        if reference is None:
            reference = tags
        same[name] = tags == reference
    chosen = max((n for n in rates if same[n]), key=lambda n: rates[n])
    tagger.set_ops(chosen)
    log.info("tagging ops: %s (%s captions/s on %d probe captions; %s)", chosen,
             ", ".join(f"{n} {r:,.0f}" for n, r in rates.items()), len(texts),
             "same tags as blis: " + ", ".join(f"{n} {'yes' if s else 'NO'}" for n, s in same.items()))
    return {"ops": chosen, "captions_per_s": rates, "same_tags": same, "probe_captions": len(texts)}


# ----------------------------------------------------------------------------- the per-machine record
def cache_path() -> Path:
    root = os.environ.get("OPENCLIP_CE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "openclip-ce")
    return Path(root) / "tagging_ops.json"


def machine_key(spacy_model: str, threads: int) -> str:
    """What a measurement depends on: the CPU, the libraries doing the multiply, the model, the threads."""
    import numpy
    import spacy
    import thinc

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        torch_version = None
    return json.dumps([cpu, os.cpu_count(), threads, spacy_model, spacy.__version__, thinc.__version__,
                       numpy.__version__, torch_version])


def cached_choice(key: str) -> Optional[Dict[str, object]]:
    try:
        with open(cache_path(), encoding="utf-8") as f:
            entry = json.load(f).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return entry if isinstance(entry, dict) and entry.get("ops") in OPS else None


def store_choice(key: str, info: Dict[str, object]) -> None:
    """Keep a measurement for the next run on this machine (best effort: a read-only home is fine)."""
    from ..fileio import write_json_atomic

    path = cache_path()
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
        table = table if isinstance(table, dict) else {}
    except (OSError, ValueError):
        table = {}
    table[key] = info
    try:
        write_json_atomic(path, table)
    except OSError as e:
        log.info("tagging ops: could not keep the measurement in %s (%s)", path, e)
