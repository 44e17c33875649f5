"""GeoKR's views: exact flips/rot90, jitter on RGB bands only, standardisation, no crop."""

import pytest
import torch

from rspretrain.views import functional as VF
from rspretrain.views.geokr import GeoKRViews, GeoKRViewsConfig


def test_flip_rot90_are_exact_per_sample_permutations():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8, generator=g)
    out = VF.random_flip_rot90(x, 0.5, 0.5, 0.5, generator=g)
    candidates = []
    for hflip in (False, True):
        for vflip in (False, True):
            for k in range(4):
                y = x.flip(3) if hflip else x
                y = y.flip(2) if vflip else y
                candidates.append(torch.rot90(y, k, dims=(2, 3)))
    stack = torch.stack(candidates)  # (16, B, C, H, W)
    matches = (stack == out.unsqueeze(0)).flatten(2).all(dim=2)  # (16, B)
    assert matches.any(dim=0).all()  # every sample is one of the 16 dihedral transforms of itself
    assert (out == x).flatten(1).all(dim=1).float().mean() < 0.5  # and most samples moved
    assert torch.equal(VF.random_flip_rot90(x, 0.0, 0.0, 0.0), x)
    assert torch.equal(VF.random_flip_rot90(x, 1.0, 0.0, 0.0), x.flip(3))
    assert torch.equal(VF.random_flip_rot90(x, 0.0, 1.0, 0.0), x.flip(2))
    with pytest.raises(ValueError, match="square"):
        VF.random_flip_rot90(torch.zeros(2, 1, 4, 6), rot90_p=0.5)


def test_rot90_probability_as_official():
    g = torch.Generator().manual_seed(1)
    x = torch.arange(16.0).view(1, 1, 4, 4).expand(20000, 1, 4, 4)
    out = VF.random_flip_rot90(x, 0.0, 0.0, 0.5, generator=g)
    unrotated = (out == x).flatten(1).all(dim=1).float().mean().item()
    assert unrotated == pytest.approx(1 - 0.75 * 0.5, abs=0.015)  # k=0 is drawn too, as in the official Rotate


def test_jitter_touches_rgb_bands_only_and_output_is_standardised():
    torch.manual_seed(0)
    mean, std = (0.2, 0.3, 0.4, 0.5), (0.1, 0.1, 0.1, 0.2)
    views = GeoKRViews(16, mean, std, value_scale=1.0, rgb=(2, 1, 0),
                       config=GeoKRViewsConfig(hflip_p=0, vflip_p=0, rot90_p=0))
    x = torch.rand(8, 4, 16, 16)
    (v,) = views(x.clone())
    raw = v * torch.tensor(std).view(1, 4, 1, 1) + torch.tensor(mean).view(1, 4, 1, 1)
    assert torch.allclose(raw[:, 3], x[:, 3], atol=1e-6)  # NIR untouched
    assert not torch.allclose(raw[:, :3], x[:, :3], atol=1e-3)  # RGB jittered
    # without RGB bands, brightness/contrast act on every band
    (w,) = GeoKRViews(16, mean, std, 1.0, rgb=None, config=GeoKRViewsConfig(hflip_p=0, vflip_p=0, rot90_p=0))(x)
    assert not torch.allclose(w[:, 3] * 0.2 + 0.5, x[:, 3], atol=1e-3)
    # geometry only: the multiset of pixel values of each band is kept (no crop, no resampling)
    geo = GeoKRViews(16, (0,) * 4, (1,) * 4, 1.0, rgb=(2, 1, 0), config=GeoKRViewsConfig(jitter_p=0.0))
    (g,) = geo(x)
    assert torch.equal(g.flatten(2).sort(dim=2).values, x.flatten(2).sort(dim=2).values)
    # a tile of another size is resized to image_size
    assert geo(torch.rand(2, 4, 32, 32))[0].shape == (2, 4, 16, 16)
