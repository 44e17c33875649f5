"""Background masking of a feature map: hide the grid cells a saliency map rates least important.

SSKDNet [0] feeds its self-supervised branch "low-level feature maps after background masking and shuffling". The
abstract does not say how background is found; this module is the toolkit's interpretation (METHODS.md §4.3, step 3,
[proposal]): a saliency map ``(B, h, w)`` -- e.g. the class-activation map of the predicted class [1] or the
channel-mean activation of a deep stage -- is average-pooled onto a ``grid x grid`` partition of the image, and the
``round(ratio * grid**2)`` cells with the LOWEST pooled saliency are taken as background. Those cells of the
low-level map are then overwritten with a fill value. Everything works per sample, batched, on any device.

These are feature-map operations (the map may have any number of channels), not image augmentations, so they live
next to the other batched tensor ops of :mod:`rspretrain.views` but take no ``value_scale`` or band names.

References:
    - [0] Zhao, Liu, Yang, Wu, "SSKDNet: Self-Supervision-Based Knowledge Distillation Network for Remote Sensing
      Scene Classification", Remote Sensing 14(19):4813, 2022, https://doi.org/10.3390/rs14194813
    - [1] Zhou et al., "Learning Deep Features for Discriminative Localization" (CAM), CVPR 2016,
      https://arxiv.org/abs/1512.04150
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rspretrain.core.errors import ConfigError

#: Values a masked cell can be filled with.
FILLS = ("zero", "mean")


def cell_saliency(saliency: torch.Tensor, grid: int) -> torch.Tensor:
    """Mean saliency of each cell of a ``grid x grid`` partition: ``(B, h, w) -> (B, grid, grid)``.

    A saliency map coarser than the grid (e.g. a 2x2 CAM for a 4x4 grid) is first upsampled bilinearly so every cell
    gets a value; a finer one is average-pooled (adaptive pooling also handles sizes not divisible by ``grid``).
    """
    if saliency.ndim != 3:
        raise ValueError(f"saliency must be (B, h, w), got shape {tuple(saliency.shape)}")
    s = saliency.unsqueeze(1).float()
    if s.shape[-2] < grid or s.shape[-1] < grid:
        s = F.interpolate(s, size=(grid, grid), mode="bilinear", align_corners=False)
    return F.adaptive_avg_pool2d(s, grid).squeeze(1)


def lowest_cells(cell_scores: torch.Tensor, num_masked: int) -> torch.Tensor:
    """Boolean mask ``(B, g, g)`` that is True at the ``num_masked`` lowest-scoring cells of each sample.

    Ties are broken by cell order (row-major), so the result is deterministic.
    """
    b, gh, gw = cell_scores.shape
    mask = torch.zeros(b, gh * gw, dtype=torch.bool, device=cell_scores.device)
    if num_masked > 0:
        # stable sort: among equal scores the earlier cell is masked first
        order = torch.sort(cell_scores.reshape(b, -1), dim=1, stable=True).indices[:, :num_masked]
        mask.scatter_(1, order, True)
    return mask.view(b, gh, gw)


def apply_cell_mask(features: torch.Tensor, cell_mask: torch.Tensor, fill: str = "zero") -> torch.Tensor:
    """Overwrite the masked cells of ``features (B, C, H, W)`` with ``fill`` (returns a new tensor).

    The ``(B, g, g)`` cell mask is expanded to ``H x W`` with nearest-neighbour upsampling, so ``H`` and ``W`` need not
    be multiples of ``g``. ``fill="mean"`` uses each sample's per-channel mean over the whole map (the masked cells
    then carry no spatial information but keep the map's overall level); ``"zero"`` means "no activation".
    """
    if fill not in FILLS:
        raise ConfigError(f"background mask fill {fill!r} is not one of {', '.join(FILLS)}")
    pixel_mask = F.interpolate(cell_mask.unsqueeze(1).float(), size=features.shape[-2:], mode="nearest").bool()
    if fill == "zero":
        value = torch.zeros((), dtype=features.dtype, device=features.device)
    else:
        value = features.mean(dim=(2, 3), keepdim=True)
    return torch.where(pixel_mask, value, features)


class SaliencyBackgroundMasker(nn.Module):
    """Mask the lowest-saliency ``ratio`` of ``grid x grid`` cells of a feature map (SSKDNet's background masking).

    Args:
        ratio: fraction of the ``grid**2`` cells to mask, in [0, 1); ``round(ratio * grid**2)`` cells are masked.
        grid: cells per side of the partition.
        fill: ``"zero"`` or ``"mean"`` (see :func:`apply_cell_mask`).

    Example:
        >>> masker = SaliencyBackgroundMasker(ratio=0.25, grid=4)
        >>> masked, mask = masker(torch.rand(2, 64, 16, 16), saliency=torch.rand(2, 8, 8))
        >>> int(mask[0].sum())
        4
    """

    def __init__(self, ratio: float = 0.25, grid: int = 4, fill: str = "zero") -> None:
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(f"background mask ratio must lie in [0, 1), got {ratio}")
        if grid < 1:
            raise ConfigError(f"background mask grid must be >= 1, got {grid}")
        if fill not in FILLS:
            raise ConfigError(f"background mask fill {fill!r} is not one of {', '.join(FILLS)}")
        self.ratio, self.grid, self.fill = float(ratio), int(grid), fill

    @property
    def num_masked(self) -> int:
        return round(self.ratio * self.grid**2)

    @torch.no_grad()
    def cell_mask(self, saliency: torch.Tensor) -> torch.Tensor:
        """The ``(B, grid, grid)`` background mask of a saliency map ``(B, h, w)`` (no gradient)."""
        return lowest_cells(cell_saliency(saliency.detach(), self.grid), self.num_masked)

    def forward(self, features: torch.Tensor, saliency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masked features, cell mask)``; gradients flow to the unmasked cells of ``features``."""
        mask = self.cell_mask(saliency)
        if self.num_masked == 0:
            return features, mask
        return apply_cell_mask(features, mask, self.fill), mask

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, grid={self.grid}, fill={self.fill!r}"


__all__ = ["FILLS", "SaliencyBackgroundMasker", "apply_cell_mask", "cell_saliency", "lowest_cells"]
