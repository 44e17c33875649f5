"""GeoKR's single augmented view [0]: flips, rotation by multiples of 90 degrees, colour jitter on the RGB bands.

The official pipeline (``configs/GeoKR_resnet50_cfg.py``): RandomHorizontalFlip, RandomVerticalFlip, Rotate (by 0,
90, 180 or 270 degrees with probability 0.5), ColorJitter(brightness 0.3, contrast 0.5-1.5, saturation 0.5-1.5,
hue +-0.3), Resize(256), ToTensor. Every one of these keeps the tile's footprint, so the land-cover proportions
stay the right target; there is deliberately no crop. Student and teacher see the same view.

Differences, each a choice of ours:

- Colour jitter acts on the red, green and blue bands only (found by band name); other bands (NIR, SWIR, ...) are
  left as they are, since "colour" has no meaning for them. Without identifiable RGB bands, brightness and contrast
  act on every band (band-safe :func:`~rspretrain.views.functional.color_transform`) and saturation/hue are off.
- The jitter ops run in a fixed order (brightness, contrast, saturation, hue) instead of torchvision's random order,
  fused into one affine map per sample (see :func:`~rspretrain.views.functional.color_transform`).
- After the jitter the view is standardised per band with the data's mean/std (the official code feeds [0, 1]
  values without normalisation); the statistics travel with the exported backbone.
- Tiles whose side differs from ``image_size`` are resized (bilinear, antialiased), as the official Resize.

References:
    - [0] W. Li, K. Chen, H. Chen, Z. Shi, "Geographical Knowledge-Driven Representation Learning for Remote Sensing
      Images", IEEE TGRS 60, 2022, https://arxiv.org/abs/2107.05276
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from rspretrain.views import functional as VF
from rspretrain.views.band_views import BandViews


@dataclass
class GeoKRViewsConfig:
    """The ``views:`` section of a GeoKR run (defaults: the official recipe)."""

    hflip_p: float = 0.5
    vflip_p: float = 0.5
    rot90_p: float = 0.5
    jitter_p: float = 1.0
    brightness: float = 0.3
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.3
    grayscale_p: float = 0.0


class GeoKRViews(BandViews):
    """One augmented, standardised view of a raw batch (see the module docstring).

    Args:
        image_size: output side in pixels.
        mean, std: per-band statistics in the [0, 1] value range.
        value_scale: divisor mapping raw values to [0, 1].
        rgb: indices of the red, green, blue bands, or None.
        config: the recipe's parameters.
    """

    config_class = GeoKRViewsConfig

    def jitter(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Colour jitter of the RGB bands (brightness/contrast of every band when there are none)."""
        c = self.cfg
        if self.rgb is None:
            return VF.color_transform(x, c.brightness, c.contrast, 0.0, 0.0, c.jitter_p, 0.0, None, generator)
        rgb = list(self.rgb)
        out = x.clone()
        out[:, rgb] = VF.color_transform(
            x[:, rgb], c.brightness, c.contrast, c.saturation, c.hue, c.jitter_p, c.grayscale_p, (0, 1, 2), generator
        )
        return out

    def one_view(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One augmented view of a float [0, 1] batch."""
        c = self.cfg
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        v = VF.random_flip_rot90(x, c.hflip_p, c.vflip_p, c.rot90_p, generator)
        v = self.jitter(v, generator)
        return VF.normalize(v, self.mean, self.std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, n_views: int = 1) -> list[torch.Tensor]:
        x = VF.to_float(images, self.value_scale)
        return [self.one_view(x) for _ in range(n_views)]
