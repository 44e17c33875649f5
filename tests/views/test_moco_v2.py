import pytest
import torch

from rspretrain.core.bands import rgb_indices
from rspretrain.views import functional as VF
from rspretrain.views.moco_v2 import MoCoV2Views, ViewsConfig


@pytest.mark.parametrize("bands,rgb", [(3, (0, 1, 2)), (13, (3, 2, 1)), (4, None)])
def test_views_shapes_dtypes_any_band_count(bands, rgb):
    views = MoCoV2Views(32, [0.4] * bands, [0.2] * bands, rgb=rgb)
    x = torch.randint(0, 256, (6, bands, 48, 48), dtype=torch.uint8)
    v1, v2 = views(x)
    for v in (v1, v2):
        assert v.shape == (6, bands, 32, 32)
        assert v.dtype == torch.float32
        assert torch.isfinite(v).all()
    assert not torch.equal(v1, v2)


def test_views_follow_the_input_device_and_are_standardised():
    views = MoCoV2Views(16, [0.5] * 3, [0.25] * 3, config=ViewsConfig(jitter_p=0, grayscale_p=0, blur_p=0))
    x = torch.full((2, 3, 16, 16), 255, dtype=torch.uint8)
    v = views(x)[0]
    assert v.device == x.device
    assert torch.allclose(v, torch.full_like(v, (1.0 - 0.5) / 0.25), atol=1e-5)


def test_crop_of_whole_image_without_flip_is_identity():
    x = torch.rand(3, 2, 8, 8)
    boxes = torch.tensor([[0.0, 0, 8, 8]] * 3)
    assert torch.allclose(VF.crop_resize_flip(x, boxes, 8), x, atol=1e-5)
    flipped = VF.crop_resize_flip(x, boxes, 8, flip=torch.tensor([True, False, True]))
    assert torch.allclose(flipped[0], x[0].flip(-1), atol=1e-5)
    assert torch.allclose(flipped[1], x[1], atol=1e-5)


def test_crop_boxes_respect_scale_and_bounds():
    boxes = VF.sample_resized_crops(2000, 64, 64, scale=(0.2, 1.0), generator=torch.Generator().manual_seed(0))
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 64).all() and (y0 + h <= 64).all()
    area = w * h / 64**2
    assert area.min() > 0.15 and area.max() <= 1.0
    ratio = w / h
    assert ratio.min() > 0.6 and ratio.max() < 1.6


def test_color_transform_bands_outside_rgb_untouched_by_hue_saturation_grayscale():
    torch.manual_seed(0)
    x = torch.rand(8, 5, 8, 8)
    y = VF.color_transform(x, brightness=0, contrast=0, saturation=0.4, hue=0.1, jitter_p=1.0, grayscale_p=1.0,
                           rgb=(0, 1, 2))
    assert torch.equal(y[:, 3:], x[:, 3:])
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])  # grayscale applied


def test_grayscale_is_luma_and_identity_without_jitter():
    x = torch.rand(4, 3, 8, 8)
    gray = VF.color_transform(x, 0, 0, 0, 0, jitter_p=0.0, grayscale_p=1.0)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(gray[:, 1], luma, atol=1e-5)
    assert torch.allclose(VF.color_transform(x, 0.4, 0.4, 0.4, 0.1, jitter_p=0.0, grayscale_p=0.0), x)


def test_brightness_scales_every_band():
    x = torch.rand(4, 5, 8, 8) * 0.5  # no clamping at factor <= 1.4
    y = VF.color_transform(x, brightness=0.4, contrast=0, saturation=0, hue=0, jitter_p=1.0, grayscale_p=0.0,
                           rgb=None)
    ratio = y / x
    per_sample = ratio.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample), atol=1e-4)
    assert ((per_sample[:, 0] >= 0.6 - 1e-4) & (per_sample[:, 0] <= 1.4 + 1e-4)).all()


def test_blur_keeps_constant_images_and_smooths_noise():
    const = torch.full((2, 3, 32, 32), 0.3)
    assert torch.allclose(VF.gaussian_blur(const, p=1.0), const, atol=1e-6)
    noise = torch.rand(2, 3, 32, 32)
    assert VF.gaussian_blur(noise, sigma=(1.5, 2.0), p=1.0).std() < noise.std() * 0.6


def test_rgb_indices_from_band_names():
    assert rgb_indices(("red", "green", "blue"), 3) == (0, 1, 2)
    assert rgb_indices(("B01", "B02", "B03", "B04", "B08"), 5) == (3, 2, 1)
    assert rgb_indices(("b2", "b3", "b4", "b5"), 4) == (2, 1, 0)
    assert rgb_indices(("vv", "vh"), 2) is None
    assert rgb_indices(None, 3) == (0, 1, 2) and rgb_indices(None, 4) is None


def test_grayscale_before_jitter_is_moco_v1s_order():
    # GeRSP's released views: RandomGrayscale, then ColorJitter applied always.
    cfg = ViewsConfig(grayscale_before_jitter=True, grayscale_p=0.5, jitter_p=1.0, hue=0.4, blur_p=0.0)
    views = MoCoV2Views(24, [0.5] * 3, [0.25] * 3, config=cfg)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    got = views.crop_and_jitter(x, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    crops, _, _ = views.resized_crop(x, 0, g)
    gray = VF.color_transform(crops, 0, 0, 0, 0, 0.0, 0.5, (0, 1, 2), g)
    expected = VF.color_transform(gray, 0.4, 0.4, 0.4, 0.4, 1.0, 0.0, (0, 1, 2), g)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    grayed = (gray[:, 0] == gray[:, 1]).flatten(1).all(dim=1)
    assert 0 < int(grayed.sum()) < 8  # some views were grayed first, and jitter keeps them gray
    assert (got[grayed, 0] - got[grayed, 1]).abs().max() < 1e-5
