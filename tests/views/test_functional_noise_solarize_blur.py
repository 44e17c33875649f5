import pytest
import torch

from rspretrain.views import functional as VF


def test_gaussian_noise_std_and_probability():
    x = torch.full((200, 3, 32, 32), 0.5)
    g = torch.Generator().manual_seed(0)
    out = VF.gaussian_noise(x, variance=(0.01, 0.01), p=1.0, generator=g)
    assert (out - x).std().item() == pytest.approx(0.1, rel=0.02)
    assert (out - x).mean().abs().item() < 2e-3
    some = VF.gaussian_noise(x, variance=(0.01, 0.01), p=0.5, generator=g)
    changed = (some != x).flatten(1).any(dim=1).float().mean().item()
    assert 0.35 < changed < 0.65
    assert torch.equal(VF.gaussian_noise(x, p=0.0), x)


def test_gaussian_noise_clamps_rgb_bands_only():
    x = torch.tensor([0.0, 0.5, 1.0, 1.4]).view(1, 4, 1, 1).expand(50, 4, 8, 8)
    out = VF.gaussian_noise(x, variance=(0.04, 0.04), p=1.0, rgb=(0, 1, 2))
    assert out[:, :3].min() >= 0 and out[:, :3].max() <= 1
    assert out[:, 3].max() > 1.45  # an unclamped reflectance band


def test_solarize_threshold_and_band_safety():
    x = torch.tensor([0.1, 0.5, 128 / 255, 0.9]).view(1, 1, 1, 4).expand(2, 4, 1, 4).contiguous()
    out = VF.solarize(x, p=1.0, rgb=(0, 1, 2))
    assert torch.allclose(out[:, :3], torch.tensor([0.1, 0.5, 1 - 128 / 255, 0.1]).expand(2, 3, 1, 4))
    assert torch.equal(out[:, 3], x[:, 3])
    assert torch.equal(VF.solarize(x, p=1.0, rgb=None), x)
    assert torch.equal(VF.solarize(x, p=0.0), x)


def test_blur_kernel_size_range_truncates_the_gaussian():
    x = torch.rand(6, 2, 20, 20, generator=torch.Generator().manual_seed(0))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    fixed = VF.gaussian_blur(x, (2.0, 2.0), p=1.0, kernel_size=3, generator=g1)
    ranged = VF.gaussian_blur(x, (2.0, 2.0), p=1.0, generator=g2, kernel_sizes=(3, 3))
    assert torch.allclose(fixed, ranged, atol=1e-6)
    wide = VF.gaussian_blur(x, (2.0, 2.0), p=1.0, kernel_size=7)
    varied = VF.gaussian_blur(x, (2.0, 2.0), p=1.0, kernel_sizes=(3, 7), generator=torch.Generator().manual_seed(5))
    per_sample = [torch.allclose(varied[i], fixed[i], atol=1e-6) or torch.allclose(varied[i], wide[i], atol=1e-6)
                  for i in range(6)]
    k5 = VF.gaussian_blur(x, (2.0, 2.0), p=1.0, kernel_size=5)
    per_sample = [a or torch.allclose(varied[i], k5[i], atol=1e-6) for i, a in enumerate(per_sample)]
    assert all(per_sample)
