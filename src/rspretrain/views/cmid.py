"""CMID's two views with their crop geometry and block masks [0], batched on tensors.

- View A ("weak"): RandomResizedCrop (scale 0.3-1, ratio 3/4-4/3), horizontal flip p = 0.5,
  per-band standardisation.
- View B ("strong"): its own RandomResizedCrop and flip (drawn independently of A's, as the
  official two-crop pipeline; the recorded geometry lets the local loss match cells), then
  ColorJitter(0.4, 0.4, 0.2, 0.1) with p = 0.8, GaussianBlur (kernel 3-7, sigma 0.1-2) with
  p = 1, GaussNoise (variance 10-50 of 255^2) with p = 0.6, Solarize (threshold 128/255) with
  p = 0.2, grayscale with p = 0.2, standardisation: the order of the official albumentations
  pipeline.
- Each view is block-masked (:mod:`rspretrain.views.block_mask`) with its own random mask and
  filled with its own per-band mean; the student sees the masked views, the teacher the clean
  ones, the MIM loss reconstructs the clean ones.
- The source-image centres of the cells of each view's last feature map
  (:mod:`rspretrain.views.crop_geometry`) are recorded for position matching.

Crops and the official resize: the official code resizes every image to the training size and
then crops. In memory the images are decoded at the training size, so the two agree; streamed
data (``shards:``) follows the official order by default (``resize_before_crop: true``), and
``resize_before_crop: false`` crops from the image as stored instead, at decode time, with the
boxes kept for position matching. Differences from the official code (documented choices): blur sigma and kernel are in pixels of the training view,
as in MoCo v2's views; the jitter order is fixed (see
:func:`rspretrain.views.functional.color_transform`). Band safety: jitter saturation/hue,
grayscale and solarize act on the RGB bands only; brightness, contrast, blur and noise on all.

References:
    - [0] CMID, Muhtar et al. 2023, https://arxiv.org/abs/2304.09670
      (``Pretrain/Dataset/transform.py`` of github.com/NJU-LHRS/official-CMID)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from rspretrain.core.errors import ConfigError
from rspretrain.views import functional as VF
from rspretrain.views.band_views import BandViews
from rspretrain.views.block_mask import BlockMaskGenerator
from rspretrain.views.crop_geometry import cell_centres, released_code_boxes


@dataclass
class CMIDViewsConfig:
    """The ``views:`` section of a CMID run (the defaults are the official recipe's).

    ``mask_patch_size`` None derives the block from the input size and the backbone
    (:func:`rspretrain.views.block_mask.default_mask_patch_size`: 32 px at 224 px, 8 px at 64 px
    for ResNets and Swin). Noise variances are on the [0, 1] scale (10 / 255^2 to 50 / 255^2).
    """

    crop_scale_min: float = 0.3
    crop_scale_max: float = 1.0
    flip_p: float = 0.5
    #: Streamed data: the official code resizes every image to the training size before its crops (True); False
    #: crops from the image as stored.
    resize_before_crop: bool = True
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    blur_p: float = 1.0
    blur_sigma_min: float = 0.1
    blur_sigma_max: float = 2.0
    blur_kernel_min: int = 3
    blur_kernel_max: int = 7
    noise_p: float = 0.6
    noise_var_min: float = 10 / 255**2
    noise_var_max: float = 50 / 255**2
    solarize_p: float = 0.2
    solarize_threshold: float = 128 / 255
    grayscale_p: float = 0.2
    mask_ratio: float = 0.6
    mask_patch_size: int | None = None


class CMIDViewPair(NamedTuple):
    """One batch of CMID views. Index 0 is view A, so code that wants "a view" can take ``[0]``."""

    view_a: torch.Tensor  # (B, C, S, S) standardised, unmasked: teacher input and MIM target
    view_b: torch.Tensor
    masked_a: torch.Tensor  # mean-filled: student input
    masked_b: torch.Tensor
    mask_a: torch.Tensor  # (B, g, g) bool block masks
    mask_b: torch.Tensor
    centres_a: torch.Tensor  # (B, N*N, 2) source (x, y) of the last map's cells
    centres_b: torch.Tensor
    #: Views of the knowledge terms' images (:mod:`rspretrain.pretrain.knowledge`), empty without terms.
    knowledge: tuple = ()


class CMIDViews(BandViews):
    """Make a :class:`CMIDViewPair` from a uint8/raw batch.

    Args:
        image_size: side of the views.
        mean, std: per-band statistics in the [0, 1] value range.
        value_scale: divisor that maps raw values to [0, 1].
        rgb: indices of the RGB bands, or None.
        config: the recipe's parameters.
        mask_patch_size: block side in pixels (the method resolves ``config.mask_patch_size``).
        feature_grid: cells per side of the backbone's last map (``image_size / output_stride``).
        cell_matching: ``geometric`` (cell centres where the crops lie in the source) or ``official`` (as the released
            code grids them, :func:`~rspretrain.views.crop_geometry.released_code_boxes`).
    """

    config_class = CMIDViewsConfig

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        value_scale: float = 255.0,
        rgb: Sequence[int] | None = (0, 1, 2),
        config: CMIDViewsConfig | None = None,
        mask_patch_size: int = 32,
        feature_grid: int = 7,
        cell_matching: str = "geometric",
    ) -> None:
        super().__init__(image_size, mean, std, value_scale, rgb, config)
        self.masker = BlockMaskGenerator(image_size, mask_patch_size, self.cfg.mask_ratio)
        self.feature_grid = feature_grid
        self.cell_matching = cell_matching

    def _crop(self, x: torch.Tensor, view: int, generator=None, boxes=None) -> tuple[torch.Tensor, torch.Tensor]:
        crops, boxes, flip = self.resized_crop(x, view, generator, boxes)
        if boxes is None:
            raise ValueError("CMID's views need the boxes of crops taken at decode time (batch['crop_boxes'])")
        if self.cell_matching == "official":
            if x.ndim != 4:
                raise ConfigError("model.cell_matching official grids crops of an image resized to the view size, as "
                                  "the released code does: set views.resize_before_crop true")
            boxes = released_code_boxes(boxes, x.shape[-2], x.shape[-1])
        return crops, cell_centres(boxes, flip, self.feature_grid)

    def strong(self, v: torch.Tensor, generator=None) -> torch.Tensor:
        """View B's photometric chain on a cropped [0, 1] batch (before standardisation)."""
        c = self.cfg
        v = VF.color_transform(v, c.brightness, c.contrast, c.saturation, c.hue, c.jitter_p, 0.0, self.rgb, generator)
        v = VF.gaussian_blur(
            v, (c.blur_sigma_min, c.blur_sigma_max), c.blur_p, generator=generator,
            kernel_sizes=(c.blur_kernel_min, c.blur_kernel_max),
        )
        v = VF.gaussian_noise(v, (c.noise_var_min, c.noise_var_max), c.noise_p, self.rgb, generator)
        v = VF.solarize(v, c.solarize_threshold, c.solarize_p, self.rgb, generator)
        return VF.color_transform(v, 0, 0, 0, 0, 0.0, c.grayscale_p, self.rgb, generator)  # grayscale last

    @torch.no_grad()
    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None, boxes: torch.Tensor | None = None
    ) -> CMIDViewPair:
        """Views of ``(B, C, H, W)`` images, or of ``(B, 2, C, S, S)`` crops taken at decode time with their boxes."""
        x = VF.to_float(images, self.value_scale)
        view_a, centres_a = self._crop(x, 0, generator, boxes)
        view_b, centres_b = self._crop(x, 1, generator, boxes)
        view_a = VF.normalize(view_a, self.mean, self.std)
        view_b = VF.normalize(self.strong(view_b, generator), self.mean, self.std)
        masked_a, mask_a = self.masker(view_a, generator)
        masked_b, mask_b = self.masker(view_b, generator)
        return CMIDViewPair(view_a, view_b, masked_a, masked_b, mask_a, mask_b, centres_a, centres_b)
