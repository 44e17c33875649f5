"""Dynamic feature fusion: multi-stage feature maps summed with input-dependent attention weights.

SSKDNet [0] has a "feature fusion module" that fuses feature maps "dynamically"; its keywords name attention and
feature fusion, nothing more is published. The toolkit's interpretation (METHODS.md §4.3, step 2, [proposal]) is a
selective-kernel-style attention over stages [1]:

1. every selected stage map is projected to ``out_channels`` by a 1x1 conv + BatchNorm + ReLU and resized to one
   common size (the finest selected stage by default: bilinear upsampling of the coarser maps, as in FPN [2];
   ``size="coarsest"`` average-pools instead);
2. a global descriptor ``s = sum_i GAP(U_i)`` feeds a two-layer MLP whose output, soft-maxed over the stages, gives
   per-sample weights ``a_i`` -- one per stage and channel (``weighting="channel"``, as SKNet) or one per stage
   (``weighting="stage"``);
3. the fused map is ``sum_i a_i * U_i``.

The weights depend on the input, so the module can favour detailed (shallow) or semantic (deep) stages per image.

References:
    - [0] Zhao, Liu, Yang, Wu, "SSKDNet", Remote Sensing 14(19):4813, 2022, https://doi.org/10.3390/rs14194813
    - [1] Li et al., "Selective Kernel Networks", CVPR 2019, https://arxiv.org/abs/1903.06586
    - [2] Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017, https://arxiv.org/abs/1612.03144
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from rspretrain.core.errors import ConfigError

WEIGHTINGS = ("channel", "stage")
SIZES = ("finest", "coarsest")


class DynamicFeatureFusion(nn.Module):
    """Fuse stage maps with input-dependent softmax weights over stages.

    Args:
        in_channels: channels of each input map, in the order they are passed.
        out_channels: channels of the fused map.
        weighting: ``"channel"`` (a weight per stage and channel) or ``"stage"`` (a weight per stage).
        reduction: hidden width of the weight MLP is ``max(16, out_channels // reduction)``.
        size: fuse at the spatial size of the ``"finest"`` or the ``"coarsest"`` input map.

    Example:
        >>> ffm = DynamicFeatureFusion([128, 256, 512], out_channels=256)
        >>> fused, weights = ffm([torch.randn(2, 128, 8, 8), torch.randn(2, 256, 4, 4), torch.randn(2, 512, 2, 2)])
        >>> fused.shape, weights.shape
        (torch.Size([2, 256, 8, 8]), torch.Size([2, 3, 256]))
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 256,
        weighting: str = "channel",
        reduction: int = 4,
        size: str = "finest",
    ) -> None:
        super().__init__()
        if len(in_channels) < 2:
            raise ConfigError(f"feature fusion needs at least 2 stages, got {len(in_channels)}")
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"feature fusion weighting {weighting!r} is not one of {', '.join(WEIGHTINGS)}")
        if size not in SIZES:
            raise ConfigError(f"feature fusion size {size!r} is not one of {', '.join(SIZES)}")
        self.in_channels = tuple(int(c) for c in in_channels)
        self.out_channels, self.weighting, self.size = int(out_channels), weighting, size
        self.project = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
            for c in self.in_channels
        )
        hidden = max(16, out_channels // reduction)
        per_stage = out_channels if weighting == "channel" else 1
        self.attention = nn.Sequential(
            nn.Linear(out_channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, len(self.in_channels) * per_stage),
        )

    @staticmethod
    def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
            return F.adaptive_avg_pool2d(x, size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, maps: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fused (B, out_channels, h, w), weights (B, stages, out_channels or 1))``."""
        if len(maps) != len(self.project):
            raise ValueError(f"feature fusion built for {len(self.project)} stages, got {len(maps)} maps")
        areas = [m.shape[-2] * m.shape[-1] for m in maps]
        pick = max if self.size == "finest" else min
        size = tuple(maps[areas.index(pick(areas))].shape[-2:])
        stacked = torch.stack([self._resize(p(m), size) for p, m in zip(self.project, maps)], dim=1)  # (B,S,D,h,w)
        context = stacked.mean(dim=(3, 4)).sum(dim=1)  # (B, D): what all stages see in this image
        b, s = stacked.shape[:2]
        weights = self.attention(context).view(b, s, -1).softmax(dim=1)
        fused = (stacked * weights[..., None, None]).sum(dim=1)
        return fused, weights

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, weighting={self.weighting!r}, size={self.size!r}"


__all__ = ["SIZES", "WEIGHTINGS", "DynamicFeatureFusion"]
