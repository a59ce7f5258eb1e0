"""All-gather of features across ranks, as open_clip's ``gather_features`` does, one tensor at a time.

Kept apart from the loss so the distributed communication is explicit and testable on its own
(``tests/training/dist`` runs it under ``torchrun`` on gloo).
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
        if grad.is_cuda and "nccl" in str(dist.get_backend()):  # also a mixed backend, e.g. "cpu:gloo,cuda:nccl"
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


def all_reduce_min(t: torch.Tensor, world_size: int) -> torch.Tensor:
    """The minimum of ``t`` over every rank, in place (a no-op on one rank); returns ``t``."""
    if world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


# ---------------------------------------------------------------- CE-SigLIP: exchange of one block per hop
# open_clip's SigLipLoss passes text features around the ring (``--loss-dist-impl`` bidir / shift) or
# broadcasts them with an all-reduce / all-gather (reduce / gather). CE-SigLIP passes the *image* features
# instead (see :mod:`.siglip_loss`); these are the same four patterns, written here for one tensor, with
# backwards that send each gradient back to the rank whose tensor produced it.


def _empty(like: torch.Tensor) -> torch.Tensor:
    return torch.empty(like.shape, dtype=like.dtype, device=like.device)  # contiguous, whatever like's strides


def _exchange(ops):
    for req in dist.batch_isend_irecv(ops):
        req.wait()


def neighbour_exchange(from_rank: int, to_rank: int, tensor: torch.Tensor) -> torch.Tensor:
    """Send ``tensor`` to ``to_rank``, receive the same-shaped tensor ``from_rank`` sent (no gradient)."""
    recv = _empty(tensor)
    _exchange([dist.P2POp(dist.isend, tensor.contiguous(), to_rank), dist.P2POp(dist.irecv, recv, from_rank)])
    return recv


def neighbour_exchange_bidir(left: int, right: int, to_left: torch.Tensor, to_right: torch.Tensor):
    """Send ``to_left`` left and ``to_right`` right; return ``(from_right, from_left)`` (no gradient)."""
    from_left, from_right = _empty(to_right), _empty(to_left)
    _exchange([
        dist.P2POp(dist.isend, to_left.contiguous(), left),
        dist.P2POp(dist.isend, to_right.contiguous(), right),
        dist.P2POp(dist.irecv, from_left, left),
        dist.P2POp(dist.irecv, from_right, right),
    ])
    return from_right, from_left


class NeighbourExchangeWithGrad(torch.autograd.Function):
    """:func:`neighbour_exchange` whose backward returns the received tensor's gradient to its sender."""

    @staticmethod
    def forward(ctx, from_rank: int, to_rank: int, tensor: torch.Tensor):
        ctx.from_rank, ctx.to_rank = from_rank, to_rank
        return neighbour_exchange(from_rank, to_rank, tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, neighbour_exchange(ctx.to_rank, ctx.from_rank, grad)


class NeighbourExchangeBidirWithGrad(torch.autograd.Function):
    """:func:`neighbour_exchange_bidir` whose backward returns each received tensor's gradient to its sender."""

    @staticmethod
    def forward(ctx, left: int, right: int, to_left: torch.Tensor, to_right: torch.Tensor):
        ctx.left, ctx.right = left, right
        return neighbour_exchange_bidir(left, right, to_left, to_right)

    @staticmethod
    def backward(ctx, grad_from_right: torch.Tensor, grad_from_left: torch.Tensor):
        # what came from the right goes back right, and what came from the left goes back left
        grad_to_right, grad_to_left = neighbour_exchange_bidir(ctx.left, ctx.right, grad_from_left, grad_from_right)
        return None, None, grad_to_left, grad_to_right


class AllReduceSumWithGrad(torch.autograd.Function):
    """Sum over ranks; the backward sums the gradients over ranks (every rank used the sum)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor):
        out = tensor.clone().contiguous()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone().contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad
