"""Shuffling BatchNorm for momentum encoders (MoCo [0] §3.3).

With BatchNorm, a key encoder that sees the same samples in the same BN group as the query
encoder can "cheat" through batch statistics. MoCo shuffles the key batch across GPUs before
the key encoder and unshuffles after. :func:`shuffled_forward` does exactly that under DDP, and
on a single device emulates it by permuting the batch and running the key encoder on
``groups`` separate chunks, so each chunk's BN statistics mix samples as they would across
``groups`` GPUs.

References:
    - [0] MoCo, He et al. 2020, https://arxiv.org/abs/1911.05722
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from rspretrain.nn.memory_queue import gather_from_all_ranks


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def shuffled_forward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """``fn(x)`` with shuffle-BN: across ranks under DDP, else over ``groups`` local chunks.

    The result is in the original sample order. Requires equal per-rank batch sizes under DDP.
    """
    if _distributed():
        world, rank = dist.get_world_size(), dist.get_rank()
        all_x = gather_from_all_ranks(x)
        perm = torch.randperm(all_x.shape[0], device=x.device)
        dist.broadcast(perm, src=0)
        local = perm.view(world, -1)[rank]
        out = fn(all_x[local])
        all_out = gather_from_all_ranks(out)
        inverse = torch.argsort(perm)
        return all_out[inverse.view(world, -1)[rank]]
    if groups <= 1 or x.shape[0] < 2 * groups:
        return fn(x)
    perm = torch.randperm(x.shape[0], device=x.device)
    out = torch.cat([fn(chunk) for chunk in x[perm].chunk(groups)], dim=0)
    return out[torch.argsort(perm)]
