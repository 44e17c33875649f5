"""What every batched view recipe holds: output size, per-band normalisation, RGB bands, its config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn


class BandViews(nn.Module):
    """Base of the view makers (MoCo v2, CMID, GeoKR): subclasses set :attr:`config_class` and add ops.

    Args:
        image_size: output side in pixels.
        mean, std: per-band statistics in the [0, 1] value range.
        value_scale: divisor that maps raw values to [0, 1] (255 for uint8).
        rgb: indices of the RGB bands (colour ops that need them touch only these), or None.
        config: the recipe's parameters (default: ``config_class()``).
    """

    config_class: ClassVar[type]

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        value_scale: float = 255.0,
        rgb: Sequence[int] | None = (0, 1, 2),
        config: Any = None,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.value_scale = value_scale
        self.rgb = tuple(rgb) if rgb is not None else None
        self.cfg = config or self.config_class()
