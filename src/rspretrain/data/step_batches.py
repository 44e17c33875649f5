"""Batches that are drawn, not read: batch ``s`` is ``draw(numpy.random.default_rng([seed, s, rank]))``.

The dense tasks train on random crops of a few large images (a crop's position, its dihedral transform and the
image it comes from are all random), so a batch is a draw, not a slice of a list. Keying each draw on the global
step makes it a pure function of ``(seed, step, rank)``, as :class:`~rspretrain.data.step_indexed_sampler.
StepIndexedBatchSampler` does for read datasets:

- ``--resume`` continues with exactly the batches the uninterrupted run would have drawn, with no generator state
  in the checkpoint (the restored global step is the position);
- under DDP every rank draws its own crops (the rank is part of the key), so ``devices`` ranks see ``devices``
  times the crops of one process per step;
- the batches do not depend on the global torch / numpy RNG, so model initialisation and crops do not interfere.

A Lightning epoch is ``steps_per_epoch`` draws; an iterator runs from the trainer's current step to the end of that
step's epoch (a resumed run starts mid-epoch), the next ``iter()`` covers the next epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset

__all__ = ["StepBatches"]


class StepBatches(IterableDataset):
    """Step-keyed random batches (use with ``DataLoader(..., batch_size=None)``; draws happen in the main process).

    Args:
        draw: ``rng -> batch``; everything random in a batch must come from ``rng``.
        steps_per_epoch: draws per epoch.
        seed: the run's seed.
        position: returns the global step the next batch is for (the trainer's ``global_step``).
        rank: this process's rank.
    """

    def __init__(
        self,
        draw: Callable[[np.random.Generator], Any],
        steps_per_epoch: int,
        seed: int = 0,
        position: Callable[[], int] = lambda: 0,
        rank: int = 0,
    ) -> None:
        super().__init__()
        self.draw, self.steps_per_epoch, self.seed = draw, int(steps_per_epoch), int(seed)
        self.position, self.rank = position, int(rank)

    def batch_at(self, step: int) -> Any:
        """The batch of global step ``step`` on this rank."""
        return self.draw(np.random.default_rng([self.seed, int(step), self.rank]))

    def __iter__(self) -> Iterator[Any]:
        step = int(self.position())
        end = (step // self.steps_per_epoch + 1) * self.steps_per_epoch
        for s in range(step, end):
            yield self.batch_at(s)

    def __len__(self) -> int:
        return self.steps_per_epoch
