"""Which device each make-shards worker's masked LM runs on, decided before any shard is touched.

Why a module of its own: the assignment is a pure function (:func:`assign_devices`) so that it can be
tested without a GPU, and the checks that a job's GPUs exist must run first, in seconds, for both
engines; a job that asked for 8 GPUs and found 2 must not start writing shards on the wrong ones.

Rules (local engine): with ``--device cuda`` every GPU in use holds one masked-LM process, and worker
``i`` sends its fills to the one of ``cuda:<gpus[i % n]>``, where ``gpus`` is ``--devices`` or every
visible GPU and ``n = min(workers, len(gpus))`` (a GPU no worker feeds is left alone, with a warning);
``--device cuda:N`` is ``--devices N``. Workers hold no model, so any number of them may share a GPU:
``--workers`` is sized to the CPU cores, not to the GPUs.

Test hook: the environment variable :data:`FAKE_GPUS_ENV` (``OPENCLIP_CE_FAKE_GPUS=N``) makes this
machine report ``N`` visible GPUs and makes every masked LM that was assigned a ``cuda`` device run
on the CPU instead. It is read here and nowhere else (:func:`visible_gpu_count`, :func:`filler_device`),
so tests on a CPU-only machine exercise the real GPU code paths (assignment, Ray's GPU resources,
actor placement) with the real filler. Never set it for a real job.
"""

from __future__ import annotations

import os
import re
from typing import List, Optional, Sequence, Tuple

from ..errors import UserError

FAKE_GPUS_ENV = "OPENCLIP_CE_FAKE_GPUS"

_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


def fake_gpus() -> Optional[int]:
    """The test hook's GPU count, or None when it is not set."""
    value = os.environ.get(FAKE_GPUS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise UserError(f"{FAKE_GPUS_ENV}={value!r}: expected a number of GPUs")
    return int(value)


def parse_device(device: str) -> Tuple[str, Optional[int]]:
    """``"cuda:2"`` -> ``("cuda", 2)``, ``"cuda"`` -> ``("cuda", None)``, ``"cpu"`` -> ``("cpu", None)``."""
    m = _CUDA_RE.match(device.strip())
    if m:
        return "cuda", (int(m.group(1)) if m.group(1) is not None else None)
    if device.strip() in ("cpu", "mps"):
        return device.strip(), None
    raise UserError(f"--device {device!r}: expected cpu, cuda, cuda:N or mps")


def is_cuda(device: str) -> bool:
    return parse_device(device)[0] == "cuda"


def parse_devices(spec: Optional[str]) -> Optional[Tuple[int, ...]]:
    """``--devices 0,1,3`` -> ``(0, 1, 3)``; None or empty -> None (every visible GPU)."""
    if spec is None or not str(spec).strip():
        return None
    try:
        ids = tuple(int(p) for p in str(spec).replace(" ", "").split(",") if p != "")
    except ValueError:
        raise UserError(f"--devices {spec!r}: expected GPU indices such as 0,1,2") from None
    if not ids or any(i < 0 for i in ids):
        raise UserError(f"--devices {spec!r}: expected GPU indices such as 0,1,2")
    if len(set(ids)) != len(ids):
        raise UserError(f"--devices {spec!r} names a GPU twice")
    return ids


def visible_gpu_count() -> int:
    """CUDA GPUs this process can use (honours ``CUDA_VISIBLE_DEVICES`` and the test hook)."""
    fake = fake_gpus()
    if fake is not None:
        return fake
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def no_gpu_message(flag: str = "--device cuda") -> str:
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f" (CUDA_VISIBLE_DEVICES={cvd!r})" if cvd is not None else ""
    return (f"{flag}: no CUDA GPU is visible on this machine{where}; run on a GPU node, "
            f"or use --device cpu")


def assign_devices(device: str, workers: int, visible: int, devices: Optional[Sequence[int]] = None) -> List[str]:
    """The masked-LM device of each of ``workers`` local workers (pure: ``visible`` is the GPU count).

    Raises :class:`UserError` when the GPUs asked for are not there (no GPU, an index beyond the
    visible ones).
    """
    kind, index = parse_device(device)
    if kind != "cuda":
        if devices:
            raise UserError(f"--devices needs --device cuda (got --device {device})")
        return [device] * workers
    if index is not None:
        if devices:
            raise UserError(f"give the GPUs either as --device {device} or as --devices, not both")
        devices = (index,)
    if visible < 1:
        raise UserError(no_gpu_message(f"--device {device}"))
    gpus = list(devices) if devices else list(range(visible))
    missing = [g for g in gpus if g >= visible]
    if missing:
        asked = f"--device {device}" if index is not None else f"--devices {','.join(map(str, gpus))}"
        raise UserError(f"{asked}: GPU {', '.join(map(str, missing))} not visible; this machine has "
                        f"{visible} GPU(s), 0..{visible - 1}")
    return [f"cuda:{gpus[i % len(gpus)]}" for i in range(workers)]


def filler_devices(assignment: Sequence[str]) -> List[str]:
    """The devices that get a masked-LM process: each GPU of the assignment once, in order of first use."""
    return list(dict.fromkeys(d for d in assignment if is_cuda(d)))


def idle_gpus(assignment: Sequence[str], visible: int, devices: Optional[Sequence[int]] = None) -> List[int]:
    """GPUs that were offered (``devices`` or all visible) but got no worker: worth a warning."""
    offered = list(devices) if devices else list(range(visible))
    used = {parse_device(d)[1] for d in assignment if is_cuda(d)}
    return [g for g in offered if g not in used]


def filler_device(device: str) -> str:
    """The torch device a masked LM assigned ``device`` really uses: itself, or the CPU under the test hook."""
    if fake_gpus() is not None and is_cuda(device):
        return "cpu"
    return device


def bind_process_gpu(device: str) -> None:
    """Make ``device`` this process's current CUDA device, so that nothing lands on ``cuda:0`` by default
    (a stray allocation there would cost every worker a CUDA context on the first GPU)."""
    kind, index = parse_device(filler_device(device))
    if kind == "cuda" and index is not None:
        import torch

        torch.cuda.set_device(index)


def gpu_peak_mib(device: str) -> Optional[float]:
    """Peak GPU memory this process's allocator reserved on ``device`` (MiB); None off-GPU. The CUDA
    context (a few hundred MiB per process) comes on top."""
    real = filler_device(device)
    if parse_device(real)[0] != "cuda":
        return None
    import torch

    return round(torch.cuda.max_memory_reserved(torch.device(real)) / 2 ** 20, 1)
