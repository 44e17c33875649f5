"""Block-wise random masking with mean fill (SimMIM [0], CMID [1]), batched on tensors.

The input is cut into a regular grid of square blocks of ``mask_patch_size`` pixels; exactly
``ceil(ratio * cells)`` blocks per image, drawn uniformly without replacement and independently
per image, are masked. Masked pixels are replaced by the image's own per-band mean, computed on
the (normalised) view before masking: CMID's "mean" fill. A learnable mask token is added to the
features of the same blocks inside the network (:class:`rspretrain.nn.backbones.MaskToken`).

Block size at other input sizes (our rule, see :func:`default_mask_patch_size`): CMID masks
32-px blocks of 224-px inputs, a 7 x 7 grid. A block keeps that fraction of the image side
(1/7) and is rounded to whole cells of the grid where the mask token goes (the stem's 4 px for
ResNets and Swin, the patch for ViT): 32 px at 224 px for every family; 8 px (8 x 8 grid, 39
of 64 blocks masked) at 64 px for ResNets and Swin; 16 px (4 x 4 grid, 10 of 16) for ViT-*/16
at 64 px.

References:
    - [0] SimMIM, Xie et al. 2022, https://arxiv.org/abs/2111.09886
    - [1] CMID, Muhtar et al. 2023, https://arxiv.org/abs/2304.09670
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rspretrain.core.errors import ConfigError

#: CMID's block: 32 px at 224 px inputs.
REFERENCE_IMAGE_SIZE, REFERENCE_MASK_PATCH = 224, 32


def default_mask_patch_size(image_size: int, token_stride: int) -> int:
    """The mask block side at ``image_size`` for a network whose mask token sits on a grid of
    ``token_stride`` pixels: CMID's 32/224 of the image side, rounded to whole token cells (at
    least one), lowered until it divides the image (see the module docstring)."""
    target = image_size * REFERENCE_MASK_PATCH / REFERENCE_IMAGE_SIZE
    cells = max(1, round(target / token_stride))
    while cells > 1 and image_size % (cells * token_stride):
        cells -= 1
    return cells * token_stride


def masked_block_count(cells: int, ratio: float) -> int:
    """``ceil(ratio * cells)``, robust to float error (0.7 * 10 is 7.000000000000001)."""
    return min(cells, math.ceil(round(ratio * cells, 9)))


def random_block_masks(
    batch: int, grid: int, ratio: float, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(batch, grid, grid)`` booleans, each with exactly ``ceil(ratio * grid**2)`` True cells."""
    cells = grid * grid
    count = masked_block_count(cells, ratio)
    rank = torch.rand(batch, cells, device=device, generator=generator).argsort(dim=1).argsort(dim=1)
    return (rank < count).view(batch, grid, grid)


def upsample_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Repeat each cell of a ``(B, h, w)`` mask into a ``factor x factor`` square."""
    return mask.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def mean_fill(images: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """Replace masked pixels (``pixel_mask`` (B, H, W) True) by each image's per-band mean over
    all its pixels (computed before masking), as CMID's ``mask_color='mean'``."""
    mean = images.mean(dim=(2, 3), keepdim=True)
    return torch.where(pixel_mask.unsqueeze(1), mean, images)


class BlockMaskGenerator(nn.Module):
    """Mask a batch of views: ``(masked images, block mask)``.

    Args:
        image_size: side of the (square) views.
        mask_patch_size: block side in pixels (must divide ``image_size``).
        ratio: fraction of blocks masked (rounded up to whole blocks).

    Example:
        >>> masker = BlockMaskGenerator(224, 32, 0.6)
        >>> masked, mask = masker(views)  # mask: (B, 7, 7) with 30 True per image
    """

    def __init__(self, image_size: int, mask_patch_size: int, ratio: float = 0.6) -> None:
        super().__init__()
        if mask_patch_size < 1 or image_size % mask_patch_size:
            raise ConfigError(f"views.mask_patch_size: {mask_patch_size} px does not divide the {image_size} px views")
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"views.mask_ratio: {ratio} is not in [0, 1]")
        self.image_size, self.mask_patch_size, self.ratio = image_size, mask_patch_size, ratio
        self.grid = image_size // mask_patch_size

    @property
    def num_masked(self) -> int:
        return masked_block_count(self.grid * self.grid, self.ratio)

    @torch.no_grad()
    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = images.shape
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"views are {h}x{w} but the mask is for {self.image_size} px")
        mask = random_block_masks(b, self.grid, self.ratio, images.device, generator)
        return mean_fill(images, upsample_mask(mask, self.mask_patch_size)), mask
