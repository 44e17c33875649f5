"""FIFO memory queue of negative keys (MoCo [0]).

References:
    - [0] MoCo, He et al. 2020, https://arxiv.org/abs/1911.05722
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F


def gather_from_all_ranks(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every DDP rank along dim 0 (no gradient); identity when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class MemoryQueue(nn.Module):
    """A ring buffer of ``size`` keys of dimension ``dim`` (initialised L2-normalised; the keys put in are stored
    as given, and :func:`~rspretrain.losses.info_nce.info_nce` normalises the negatives it reads).

    :meth:`enqueue` takes every key tensor produced in one step at once and gathers them across
    DDP ranks in a single collective, so each key enters the queue exactly once per step
    (CMID's official code enqueues duplicates under DDP; this does not). Batches that do not
    divide ``size`` wrap around the end. The buffers are saved in checkpoints, so a resumed run
    continues with the same negatives.

    Args:
        size: number of keys K.
        dim: key dimension.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError("queue size must be >= 1")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def forward(self) -> torch.Tensor:
        """The current negatives ``(K, dim)``; a detached clone, safe to use after an enqueue."""
        return self.keys.clone().detach()

    @torch.no_grad()
    def enqueue(self, *key_batches: torch.Tensor) -> None:
        """Insert this step's keys (from every rank) at the pointer, oldest first out."""
        keys = gather_from_all_ranks(torch.cat([k.detach() for k in key_batches], dim=0))
        n = keys.shape[0]
        if n >= self.size:  # more keys than slots: keep the newest K
            self.keys.copy_(keys[-self.size :])
            self.pointer.zero_()
            return
        start = int(self.pointer)
        idx = (torch.arange(n, device=keys.device) + start) % self.size
        self.keys[idx] = keys.to(self.keys.dtype)
        self.pointer.fill_((start + n) % self.size)
