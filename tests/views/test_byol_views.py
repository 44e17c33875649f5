import pytest
import torch

from rspretrain.views.byol import BYOLViews, BYOLViewsConfig


def test_two_standardised_views_of_the_output_size_for_any_band_count():
    images = torch.randint(0, 256, (4, 5, 40, 40), dtype=torch.uint8)
    views = BYOLViews(32, [0.5] * 5, [0.25] * 5, 255.0, rgb=(2, 1, 0))(images)
    assert len(views) == 2 and all(v.shape == (4, 5, 32, 32) and v.dtype == torch.float32 for v in views)
    assert not torch.equal(views[0], views[1])
    with pytest.raises(ValueError, match="exactly two views"):
        BYOLViews(32, [0.5] * 5, [0.25] * 5)(images, n_views=3)


def test_the_recipe_is_asymmetric_view_two_alone_is_solarised():
    # Only solarisation on, at p = 1 for view 2: a bright constant image comes back inverted in view 2 only.
    cfg = BYOLViewsConfig(jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 1.0), flip_p=0.0)
    images = torch.full((2, 3, 16, 16), 230, dtype=torch.uint8)
    v1, v2 = BYOLViews(16, [0.0] * 3, [1.0] * 3, 255.0, config=cfg)(images)
    assert torch.allclose(v1, torch.full_like(v1, 230 / 255), atol=1e-5)
    assert torch.allclose(v2, torch.full_like(v2, 1 - 230 / 255), atol=1e-5)
