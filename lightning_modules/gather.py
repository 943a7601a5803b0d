"""All-gather with gradients, for contrastive losses with negatives from every rank.

`torch.distributed.nn.functional.all_gather` (what Lightning's `all_gather(sync_grads=True)` uses)
sums the incoming gradients over ranks in its backward, so each rank's loss on its local rows against
the global columns, averaged by DDP, has the gradient of the loss of one process on the whole batch.
Every rank must pass the same shape (use drop_last in training loaders).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (B, ...) from all ranks in rank order -> (world * B, ...); `x` itself without DDP."""
    if world_size() == 1:
        return x
    return torch.cat(dist_fn.all_gather(x.contiguous()), dim=0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Like `gather_with_grad` for tensors that need no gradient (labels)."""
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)
