"""Two-view augmentation of MoCo v2 [0], batched on tensors.

Per view: RandomResizedCrop(scale 0.2-1) -> ColorJitter(0.4, 0.4, 0.4, 0.1) with p = 0.8 ->
RandomGrayscale(0.2) (or before the jitter, MoCo v1's order: ``grayscale_before_jitter``) -> GaussianBlur(sigma 0.1-2, p = 0.5) -> horizontal flip (p = 0.5) ->
per-band standardisation. The flip is folded into the crop's resampling (it commutes with the
photometric ops). Works for any band count: colour ops touch the ``rgb`` bands only (see
:func:`rspretrain.views.functional.color_transform`).

References:
    - [0] MoCo v2, Chen et al. 2020, https://arxiv.org/abs/2003.04297
"""

from __future__ import annotations

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
    #: RandomGrayscale before ColorJitter, the MoCo v1 order GeRSP's released code uses (False: MoCo v2's, after).
    grayscale_before_jitter: bool = False
    blur_p: float = 0.5
    blur_sigma_min: float = 0.1
    blur_sigma_max: float = 2.0
    flip_p: float = 0.5
    #: Streamed data: resize each image to the view size before cropping (False: crop from the image as stored).
    resize_before_crop: bool = False


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

    def one_view(self, x: torch.Tensor, generator: torch.Generator | None = None, view: int = 0) -> torch.Tensor:
        """One augmented view of a float [0, 1] batch (``view`` picks the decoded crop of a 5-D batch)."""
        c = self.cfg
        v = VF.gaussian_blur(self.crop_and_jitter(x, generator, view), (c.blur_sigma_min, c.blur_sigma_max),
                             c.blur_p, generator=generator)
        return VF.normalize(v, self.mean, self.std)

    def crop_and_jitter(self, x: torch.Tensor, generator: torch.Generator | None = None, view: int = 0) -> torch.Tensor:
        """Random resized crop with a horizontal flip, then colour jitter and grayscale (on the RGB bands), or
        grayscale then jitter (``grayscale_before_jitter``)."""
        c = self.cfg
        v, _, _ = self.resized_crop(x, view, generator)
        if c.grayscale_before_jitter:
            v = VF.color_transform(v, 0, 0, 0, 0, 0.0, c.grayscale_p, self.rgb, generator)
            return VF.color_transform(v, c.brightness, c.contrast, c.saturation, c.hue, c.jitter_p, 0.0, self.rgb,
                                      generator)
        return VF.color_transform(
            v, c.brightness, c.contrast, c.saturation, c.hue, c.jitter_p, c.grayscale_p, self.rgb, generator
        )

    @torch.no_grad()
    def forward(self, images: torch.Tensor, n_views: int = 2) -> list[torch.Tensor]:
        x = VF.to_float(images, self.value_scale)
        return [self.one_view(x, view=k) for k in range(n_views)]
