"""Two-view augmentation of MoCo v2 [0], batched on tensors.

Per view: RandomResizedCrop(scale 0.2-1) -> ColorJitter(0.4, 0.4, 0.4, 0.1) with p = 0.8 ->
RandomGrayscale(0.2) -> GaussianBlur(sigma 0.1-2, p = 0.5) -> horizontal flip (p = 0.5) ->
per-band standardisation. The flip is folded into the crop's resampling (it commutes with the
photometric ops). Works for any band count: colour ops touch the ``rgb`` bands only (see
:func:`rspretrain.views.functional.color_transform`).

References:
    - [0] MoCo v2, Chen et al. 2020, https://arxiv.org/abs/2003.04297
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rspretrain.views import functional as VF
from rspretrain.views.band_views import BandViews


@dataclass
class ViewsConfig:
    """Parameters of the MoCo v2 view recipe (the defaults are the paper's)."""

    crop_scale_min: float = 0.2
    crop_scale_max: float = 1.0
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma_min: float = 0.1
    blur_sigma_max: float = 2.0
    flip_p: float = 0.5


def rgb_indices(band_names: Sequence[str] | None, in_chans: int) -> tuple[int, int, int] | None:
    """Indices of red, green, blue among ``band_names`` (None if any is missing).

    Without band names, a 3-band input is taken as RGB; anything else has no colour bands.
    """
    if band_names is None:
        return (0, 1, 2) if in_chans == 3 else None
    lower = [b.lower() for b in band_names]
    aliases = {"red": ("red", "r", "b04", "b4"), "green": ("green", "g", "b03", "b3"), "blue": ("blue", "b", "b02", "b2")}
    found = []
    for colour in ("red", "green", "blue"):
        idx = next((i for i, name in enumerate(lower) if name in aliases[colour]), None)
        if idx is None:
            return None
        found.append(idx)
    return tuple(found)  # type: ignore[return-value]


class MoCoV2Views(BandViews):
    """Make ``n_views`` independently augmented, standardised views of a uint8/raw batch.

    Args:
        image_size: output side in pixels.
        mean, std: per-band statistics in the [0, 1] value range.
        value_scale: divisor that maps raw values to [0, 1] (255 for uint8).
        rgb: indices of the RGB bands, or None.
        config: the recipe's parameters.
    """

    config_class = ViewsConfig

    def one_view(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One augmented view of a float [0, 1] batch."""
        c = self.cfg
        b, _, h, w = x.shape
        boxes = VF.sample_resized_crops(
            b, h, w, scale=(c.crop_scale_min, c.crop_scale_max), device=x.device, generator=generator
        )
        flip = torch.rand(b, device=x.device, generator=generator) < c.flip_p
        v = VF.crop_resize_flip(x, boxes, self.image_size, flip)
        v = VF.color_transform(
            v, c.brightness, c.contrast, c.saturation, c.hue, c.jitter_p, c.grayscale_p, self.rgb, generator
        )
        v = VF.gaussian_blur(v, (c.blur_sigma_min, c.blur_sigma_max), c.blur_p, generator=generator)
        return VF.normalize(v, self.mean, self.std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, n_views: int = 2) -> list[torch.Tensor]:
        x = VF.to_float(images, self.value_scale)
        return [self.one_view(x) for _ in range(n_views)]
