import pytest
import torch

from rspretrain.views import functional as VF
from rspretrain.views.block_mask import upsample_mask
from rspretrain.views.cmid import CMIDViews, CMIDViewsConfig


def _images(n=8, bands=3, size=48):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, bands, size, size), dtype=torch.uint8, generator=g)


def test_views_masks_and_geometry_shapes():
    views = CMIDViews(32, [0.5] * 3, [0.25] * 3, mask_patch_size=8, feature_grid=2)
    out = views(_images())
    for v in (out.view_a, out.view_b, out.masked_a, out.masked_b):
        assert v.shape == (8, 3, 32, 32) and torch.isfinite(v).all()
    assert out.mask_a.shape == (8, 4, 4) and out.mask_a.flatten(1).sum(1).tolist() == [10] * 8  # ceil(0.6 * 16)
    assert out.centres_a.shape == (8, 4, 2) and out.centres_b.shape == (8, 4, 2)
    assert out[0] is out.view_a
    # the student's input is the view with masked blocks at the view's own band means
    pixel = upsample_mask(out.mask_b, 8).unsqueeze(1).expand_as(out.view_b)
    mean = out.view_b.mean(dim=(2, 3), keepdim=True).expand_as(out.view_b)
    assert torch.equal(out.masked_b[pixel], mean[pixel]) and torch.equal(out.masked_b[~pixel], out.view_b[~pixel])
    assert not torch.equal(out.mask_a, out.mask_b)  # independent masks


def test_view_a_is_only_crop_flip_and_normalisation():
    cfg = CMIDViewsConfig(crop_scale_min=1.0, crop_scale_max=1.0, flip_p=0.0)
    views = CMIDViews(48, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], config=cfg, mask_patch_size=8, feature_grid=3)
    images = _images()
    out = views(images)
    expected = VF.normalize(VF.to_float(images), [0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
    assert torch.allclose(out.view_a, expected, atol=1e-5)
    assert not torch.allclose(out.view_b, expected, atol=1e-2)  # the strong view always blurs (p = 1)
    # whole-image, unflipped crops: both views' cells sit at the same source positions
    assert torch.allclose(out.centres_a, out.centres_b)


def test_strong_view_photometric_chain_on_multispectral_bands():
    # 4 bands, RGB at 2, 1, 0: band 3 (NIR) is blurred, noised and jittered in brightness/contrast,
    # never solarised or turned gray; the RGB bands stay in [0, 1].
    cfg = CMIDViewsConfig(jitter_p=0.0, blur_p=0.0, noise_p=0.0, solarize_p=1.0, grayscale_p=0.0)
    views = CMIDViews(16, [0.0] * 4, [1.0] * 4, value_scale=1.0, rgb=(2, 1, 0), config=cfg, mask_patch_size=4,
                      feature_grid=1)
    x = torch.rand(4, 4, 16, 16)
    x[:, 3] *= 1.5  # reflectance above 1
    out = views.strong(x)
    rgb = x[:, :3]
    assert torch.equal(out[:, 3], x[:, 3])
    assert torch.allclose(out[:, :3], torch.where(rgb >= 128 / 255, 1 - rgb, rgb))


@pytest.mark.parametrize("field,value", [("noise_p", 1.0), ("grayscale_p", 1.0), ("jitter_p", 1.0)])
def test_each_strong_op_changes_the_view(field, value):
    base = {"jitter_p": 0.0, "blur_p": 0.0, "noise_p": 0.0, "solarize_p": 0.0, "grayscale_p": 0.0}
    views = CMIDViews(16, [0.0] * 3, [1.0] * 3, value_scale=1.0, config=CMIDViewsConfig(**base), mask_patch_size=4,
                      feature_grid=1)
    x = torch.rand(4, 3, 16, 16) * 0.8 + 0.1
    assert torch.equal(views.strong(x), x)
    views.cfg = CMIDViewsConfig(**{**base, field: value})
    assert not torch.allclose(views.strong(x), x, atol=1e-3)
