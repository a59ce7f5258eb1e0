"""Counting, on a CPU, the operations that would make a GPU wait for the host.

On a GPU, reading a value back (``.item()``, ``.tolist()``, ``bool(t)``) or an operation whose
output shape depends on the data (``nonzero``, boolean-mask indexing, ``unique``, ``bincount``,
``repeat_interleave`` without an output size, ``torch.equal``) drains the device queue: the kernels
after it wait for the CPU that issues them. On a CPU these cost nothing, so a CPU benchmark cannot
see them; this counter can. :func:`count_host_reads` runs a function under a dispatch mode that
records such operations (and the Python-side reads, which bypass the dispatcher on CPU tensors).
"""

from __future__ import annotations

import collections
import contextlib
from typing import Callable, Counter, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_ALWAYS = {
    "aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique", "aten::_unique2",
    "aten::unique_dim", "aten::unique_consecutive", "aten::bincount", "aten::equal", "aten::is_nonzero",
    "aten::argwhere", "aten::allclose", "aten::histc",
}
_BOOL_INDEX = {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"}


def _name(func) -> str:
    return func._schema.name


class _HostReadCounter(TorchDispatchMode):
    def __init__(self, counts: Counter):
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = _name(func)
        if name in _ALWAYS:
            self.counts[name] += 1
        elif name == "aten::repeat_interleave" and (kwargs or {}).get("output_size") is None and \
                isinstance(args[0], torch.Tensor) and len(args) == 1:
            self.counts[name] += 1
        elif name in _BOOL_INDEX:
            indices = args[1] if len(args) > 1 else ()
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (indices or ())):
                self.counts[f"{name} (boolean mask)"] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _python_reads(counts: Counter):
    """``tolist``/``numpy`` read CPU tensors without the dispatcher: count them at the Python level."""
    originals = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}

    def wrap(name, fn):
        def counted(self, *a, **kw):
            counts[f"Tensor.{name}"] += 1
            return fn(self, *a, **kw)
        return counted

    try:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, wrap(name, fn))
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def count_host_reads(fn: Callable, *args, **kwargs) -> Tuple[object, Counter]:
    """``(fn(*args, **kwargs), counts)``: the operations in ``fn`` that would wait for the device on a GPU."""
    counts: Counter = collections.Counter()
    with _python_reads(counts), _HostReadCounter(counts):
        result = fn(*args, **kwargs)
    return result, counts
