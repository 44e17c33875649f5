"""BYOL's two asymmetric views [0], batched on tensors.

Both views: RandomResizedCrop (scale 0.08-1) with a horizontal flip (p = 0.5) -> ColorJitter(0.4, 0.4, 0.2, 0.1)
with p = 0.8 -> RandomGrayscale(0.2). Then the recipe differs per view (the paper's Table 6): Gaussian blur with
p = 1.0 / 0.1 and solarisation with p = 0.0 / 0.2 for view 1 / view 2. Per-band standardisation last. Works for
any band count: colour ops and solarisation touch the ``rgb`` bands only (see
:mod:`rspretrain.views.functional`).

References:
    - [0] BYOL, Grill et al. 2020, https://arxiv.org/abs/2006.07733 (Appendix B, Table 6)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rspretrain.views import functional as VF
from rspretrain.views.moco_v2 import MoCoV2Views, ViewsConfig


@dataclass
class BYOLViewsConfig(ViewsConfig):
    """Parameters of BYOL's view recipe (the defaults are the paper's); ``*_p`` pairs are (view 1, view 2)."""

    crop_scale_min: float = 0.08
    saturation: float = 0.2
    blur_p: tuple[float, float] = (1.0, 0.1)
    solarize_p: tuple[float, float] = (0.0, 0.2)


class BYOLViews(MoCoV2Views):
    """Make BYOL's two views of a raw batch (view 1 always blurred, view 2 sometimes solarised); crop, flip and
    colour jitter are MoCo v2's (:meth:`MoCoV2Views.crop_and_jitter`) with BYOL's parameters."""

    config_class = BYOLViewsConfig

    def one_view(self, x: torch.Tensor, which: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """View ``which`` (0 or 1) of a float [0, 1] batch."""
        c = self.cfg
        v = self.crop_and_jitter(x, generator, view=which)
        v = VF.gaussian_blur(v, (c.blur_sigma_min, c.blur_sigma_max), c.blur_p[which], generator=generator)
        v = VF.solarize(v, p=c.solarize_p[which], rgb=self.rgb, generator=generator)
        return VF.normalize(v, self.mean, self.std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, n_views: int = 2) -> list[torch.Tensor]:
        if n_views != 2:
            raise ValueError(f"BYOL's recipe has exactly two views, asked for {n_views}")
        x = VF.to_float(images, self.value_scale)
        return [self.one_view(x, 0), self.one_view(x, 1)]
