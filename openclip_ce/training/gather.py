"""All-gather of features across ranks, as open_clip's ``gather_features`` does, one tensor at a time.

Kept apart from the loss so the distributed communication is explicit and testable on its own
(``tests/dist`` runs it under ``torchrun`` on gloo).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient for the local slice.

    ``torch.distributed.nn.all_gather`` on gloo emulates reduce-scatter with scatters that read
    non-contiguous gradient views wrongly (seen with torch 2.14: wrong gradients, no error), so
    the backward here makes the gradient contiguous and uses reduce-scatter only where the backend
    has it (NCCL), all-reduce otherwise.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, rank: int, world_size: int):
        ctx.rank, ctx.world_size, ctx.rows = rank, world_size, tensor.shape[0]
        out = tensor.new_empty((world_size * tensor.shape[0], *tensor.shape[1:]))
        dist.all_gather_into_tensor(out, tensor.contiguous())
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        if dist.get_backend() == "nccl":
            local = grad.new_empty((ctx.rows, *grad.shape[1:]))
            dist.reduce_scatter_tensor(local, grad)
        else:
            grad = grad.clone()
            dist.all_reduce(grad)
            local = grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]
        return local, None, None


def gather_tensor(
    tensor: torch.Tensor,
    rank: int,
    world_size: int,
    gather_with_grad: bool = False,
    keep_local_grad: bool = True,
) -> torch.Tensor:
    """All-gather ``tensor`` along dim 0, as open_clip's ``gather_features`` does for one tensor.

    ``gather_with_grad``: gradients flow to every rank's slot (``torch.distributed.nn.all_gather``).
    Otherwise the gathered copies carry no gradient; with ``keep_local_grad`` the local slot is the
    local tensor itself, so the gradient w.r.t. local features is kept.
    """
    if gather_with_grad:
        return AllGatherWithGrad.apply(tensor, rank, world_size)
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor.contiguous())
    if keep_local_grad:
        parts[rank] = tensor
    return torch.cat(parts, dim=0)




def all_reduce_sum(t: torch.Tensor, world_size: int) -> torch.Tensor:
    """Sum ``t`` in place over every rank (a no-op on one rank); returns ``t``."""
    if world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
