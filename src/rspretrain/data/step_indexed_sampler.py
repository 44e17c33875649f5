"""A batch sampler whose batches are a pure function of the global training step.

Exact resume needs the data order to continue where the killed run stopped. A plain
``RandomSampler`` restarts its epoch from the top after a restore (Lightning warns that such a
loader is not resumable), so a resumed run would see other images than the uninterrupted one.
Here batch ``s`` is slot ``s % P`` of epoch ``s // P``'s permutation (``P`` = batches per epoch,
permutation drawn from ``numpy.random.default_rng([seed, epoch])``), and an iterator starts at
whatever step the trainer is at. Nothing has to be saved: the step in the checkpoint is the
sampler's position. It draws from its own generator, never from the global RNG, so the views'
random stream is the same with and without a restart.

Under DDP every rank reads its own ``batch_size`` slice of the same global batch (rank ``r``
takes positions ``[r·b, (r+1)·b)`` of the step's ``world_size·b`` indices): the ranks together
see exactly the batch a single process with batch ``world_size·b`` would see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import Sampler

from rspretrain.core.errors import DataError


class StepIndexedBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` indices, determined by (seed, global step, rank).

    Args:
        num_items: dataset length.
        batch_size: per-process batch size.
        seed: permutation seed.
        position: returns the global step the next batch is for (the trainer's ``global_step``).
        rank, world_size: this process's slice of the global batch.
        name: the dataset, for error messages.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        position: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        name: str = "dataset",
    ) -> None:
        self.num_items, self.batch_size, self.seed = int(num_items), int(batch_size), int(seed)
        self.position, self.rank, self.world_size = position, int(rank), int(world_size)
        global_batch = self.batch_size * self.world_size
        if self.num_items < global_batch:
            raise DataError(
                f"{name}: {self.num_items} images is fewer than one global batch of {global_batch} "
                f"(batch_size {self.batch_size} x {self.world_size} processes)"
            )
        self.batches_per_epoch = self.num_items // global_batch
        self._cached: tuple[int, np.ndarray] | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_items))
        return self._cached[1]

    def batch_at(self, step: int) -> list[int]:
        """The indices this rank trains on at global step ``step``."""
        epoch, slot = divmod(int(step), self.batches_per_epoch)
        start = (slot * self.world_size + self.rank) * self.batch_size
        return self.permutation(epoch)[start : start + self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        # From the current step to the end of its epoch: a fresh run starts at slot 0, a resumed
        # one mid-epoch; the next iter() (Lightning's next epoch) picks up at the next epoch.
        step = int(self.position())
        end = (step // self.batches_per_epoch + 1) * self.batches_per_epoch
        for s in range(step, end):
            yield self.batch_at(s)

    def __len__(self) -> int:
        return self.batches_per_epoch
