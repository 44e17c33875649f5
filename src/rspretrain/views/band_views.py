"""What every batched view recipe holds: output size, per-band normalisation, RGB bands, its config, and the
random-resized crop that starts most recipes -- drawn here on the batch, or already taken at decode time.

Crops at decode time: streamed data (:mod:`rspretrain.data.shards.decode_crops`) crops each view from the image as
stored, in the DataLoader worker, and hands a batch of ``(B, V, C, S, S)`` crops (view ``v`` at ``[:, v]``) with
their ``(B, V, 4)`` boxes in source pixels. A recipe asks for its crops through :meth:`BandViews.resized_crop`,
which takes either form, so the rest of the recipe (flip, colour, blur, masks) is the same for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from rspretrain.views import functional as VF


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

    def crop_scales(self, n_views: int) -> tuple[tuple[float, float], ...]:
        """Per view, the area range of its random-resized crop, for cropping at decode time; empty when the recipe
        crops nothing or its config says ``resize_before_crop`` (then the whole image is resized to the view size
        first, and the crop is drawn here)."""
        c = self.cfg
        if not hasattr(c, "crop_scale_min") or getattr(c, "resize_before_crop", False):
            return ()
        return ((float(c.crop_scale_min), float(c.crop_scale_max)),) * n_views

    def resized_crop(
        self,
        x: torch.Tensor,
        view: int = 0,
        generator: torch.Generator | None = None,
        boxes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """View ``view``'s random-resized crop of a float batch, flipped horizontally with ``flip_p``.

        Args:
            x: ``(B, C, H, W)``: the box is drawn here (RandomResizedCrop's law, ``crop_scale_min/max``) and the crop
                resized on the device; or ``(B, V, C, S, S)``: crops taken at decode time, of which ``[:, view]`` is
                used and only the flip is drawn here.
            boxes: with decoded crops, their ``(B, V, 4)`` boxes (None if the caller needs no geometry).

        Returns:
            ``(crops (B, C, S, S), boxes (B, 4) as (x0, y0, w, h) in source pixels or None, flip (B,) bool)``.
        """
        c = self.cfg
        if x.ndim == 5:
            if view >= x.shape[1]:
                raise ValueError(f"view {view} asked of a batch with {x.shape[1]} decoded crops per image")
            crops = x[:, view]
            if crops.shape[-2:] != (self.image_size, self.image_size):
                raise ValueError(f"decoded crops are {tuple(crops.shape[-2:])} px, the views {self.image_size} px")
            flip = torch.rand(crops.shape[0], device=x.device, generator=generator) < c.flip_p
            crops = torch.where(flip.view(-1, 1, 1, 1), crops.flip(-1), crops)
            return crops, None if boxes is None else boxes[:, view].to(x.device, torch.float32), flip
        b, _, h, w = x.shape
        drawn = VF.sample_resized_crops(
            b, h, w, scale=(c.crop_scale_min, c.crop_scale_max), device=x.device, generator=generator
        )
        flip = torch.rand(b, device=x.device, generator=generator) < c.flip_p
        return VF.crop_resize_flip(x, drawn, self.image_size, flip), drawn, flip
