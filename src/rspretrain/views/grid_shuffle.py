"""Grid shuffle of a feature map: cut it into ``grid x grid`` cells and permute them, per sample.

SSKDNet [0] shuffles the (background-masked) low-level feature map before its branch restores the original, a
jigsaw-style pretext task [1] on features rather than pixels. The shuffle granularity is not published; it is the
knob ``grid`` here (METHODS.md §4.3, step 4, [proposal]).

:func:`grid_shuffle` returns the permutation it drew, and :func:`grid_unshuffle` inverts it exactly, so tests and
diagnostics can put cells back where they came from. Each sample gets its own random permutation; the whole batch is
permuted with one ``gather``.

References:
    - [0] Zhao, Liu, Yang, Wu, "SSKDNet: Self-Supervision-Based Knowledge Distillation Network for Remote Sensing
      Scene Classification", Remote Sensing 14(19):4813, 2022, https://doi.org/10.3390/rs14194813
    - [1] Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles", ECCV 2016,
      https://arxiv.org/abs/1603.09246
"""

from __future__ import annotations

import torch
from torch import nn

from rspretrain.core.errors import ConfigError


def _cells(x: torch.Tensor, grid: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, grid*grid, C, H/grid, W/grid)``, cells in row-major order."""
    b, c, h, w = x.shape
    if h % grid or w % grid:
        raise ConfigError(f"grid shuffle: a {h}x{w} feature map cannot be cut into {grid}x{grid} equal cells")
    ch, cw = h // grid, w // grid
    return x.view(b, c, grid, ch, grid, cw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, ch, cw)


def _uncells(cells: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`_cells`."""
    b, _, c, ch, cw = cells.shape
    return cells.view(b, grid, grid, c, ch, cw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * ch, grid * cw)


def _gather_cells(cells: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    b, n, c, ch, cw = cells.shape
    return torch.gather(cells, 1, index.view(b, n, 1, 1, 1).expand(b, n, c, ch, cw))


def random_permutations(batch: int, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``batch`` independent uniform random permutations of ``range(n)``, as a ``(batch, n)`` int64 tensor."""
    return torch.rand(batch, n, device=device, generator=generator).argsort(dim=1)


def grid_shuffle(
    x: torch.Tensor, grid: int, permutation: torch.Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Permute the ``grid x grid`` cells of each sample of ``x (B, C, H, W)``.

    Cell ``i`` (row-major) of the output is cell ``permutation[b, i]`` of the input.

    Args:
        x: feature maps; ``H`` and ``W`` must be multiples of ``grid``.
        grid: cells per side.
        permutation: ``(B, grid*grid)`` permutations to apply; drawn at random when None.
        generator: random generator for the drawn permutations.

    Returns:
        ``(shuffled, permutation)``.
    """
    n = grid * grid
    if permutation is None:
        permutation = random_permutations(x.shape[0], n, x.device, generator)
    if permutation.shape != (x.shape[0], n):
        raise ValueError(f"permutation must have shape ({x.shape[0]}, {n}), got {tuple(permutation.shape)}")
    return _uncells(_gather_cells(_cells(x, grid), permutation), grid), permutation


def grid_unshuffle(shuffled: torch.Tensor, permutation: torch.Tensor, grid: int) -> torch.Tensor:
    """Undo :func:`grid_shuffle`: ``grid_unshuffle(grid_shuffle(x, g)[0], perm, g) == x``."""
    inverse = permutation.argsort(dim=1)
    return _uncells(_gather_cells(_cells(shuffled, grid), inverse), grid)


class GridShuffle(nn.Module):
    """Module form of :func:`grid_shuffle` with a fixed ``grid``; ``enabled=False`` makes it the identity.

    Example:
        >>> shuffled, perm = GridShuffle(grid=4)(torch.randn(2, 64, 16, 16))
        >>> perm.shape
        torch.Size([2, 16])
    """

    def __init__(self, grid: int = 4, enabled: bool = True) -> None:
        super().__init__()
        if grid < 1:
            raise ConfigError(f"grid shuffle: grid must be >= 1, got {grid}")
        self.grid, self.enabled = int(grid), bool(enabled)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.enabled:
            identity = torch.arange(self.grid**2, device=x.device).expand(x.shape[0], -1)
            return x, identity
        return grid_shuffle(x, self.grid, generator=generator)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, enabled={self.enabled}"


__all__ = ["GridShuffle", "grid_shuffle", "grid_unshuffle", "random_permutations"]
