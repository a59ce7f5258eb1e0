"""The CPU DDP fix: open_clip passes ``device_ids=[device]`` to DDP even for a CPU device, which DDP
rejects, so a multi-rank CPU run fails outright without it. Installed in that process only, once a run's
device is known to be the CPU: after parsing (``--device cpu``, :mod:`.parser_hook`) or, in a plugin run,
after open_clip resolved the device (:func:`wrap_init_distributed_device`); it changes nothing elsewhere."""

from __future__ import annotations

import functools


def wrap_init_distributed_device(original):
    """open_clip resolves the device here (``--device`` left at ``cuda`` falls back to the CPU on a
    machine without CUDA): a plugin run whose device is the CPU gets the CPU DDP fix."""

    @functools.wraps(original)
    def init_distributed_device(args):
        device = original(args)
        if str(getattr(args, "device", "")).startswith("cpu"):
            install_cpu_ddp_fix()
        return device

    return init_distributed_device


def install_cpu_ddp_fix() -> None:
    """DDP with ``device_ids=None`` for CPU modules (open_clip passes ``device_ids=[device]`` even for a
    CPU device, which DDP rejects: a multi-rank CPU run fails outright without this)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if getattr(DistributedDataParallel, "_openclip_ce_cpu_safe", False):
        return

    class CpuSafeDistributedDataParallel(DistributedDataParallel):
        """open_clip passes ``device_ids=[device]`` even for CPU devices, which DDP rejects; drop them there."""

        _openclip_ce_cpu_safe = True

        def __init__(self, module, device_ids=None, *args, **kwargs):
            if device_ids and all(torch.device(d).type == "cpu" for d in device_ids):
                device_ids = None
            super().__init__(module, device_ids, *args, **kwargs)

    CpuSafeDistributedDataParallel.__name__ = "DistributedDataParallel"
    CpuSafeDistributedDataParallel.__qualname__ = "DistributedDataParallel"
    torch.nn.parallel.DistributedDataParallel = CpuSafeDistributedDataParallel
