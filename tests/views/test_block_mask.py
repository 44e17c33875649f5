import math

import pytest
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.views.block_mask import (
    BlockMaskGenerator,
    default_mask_patch_size,
    masked_block_count,
    mean_fill,
    random_block_masks,
    upsample_mask,
)


@pytest.mark.parametrize("grid,ratio,expected", [(7, 0.6, 30), (8, 0.6, 39), (2, 0.6, 3), (4, 0.6, 10), (10, 0.7, 70)])
def test_exact_number_of_masked_blocks_per_image(grid, ratio, expected):
    assert masked_block_count(grid * grid, ratio) == expected == math.ceil(round(ratio * grid * grid, 6))
    masks = random_block_masks(64, grid, ratio, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (64, grid, grid) and masks.dtype == torch.bool
    assert masks.flatten(1).sum(dim=1).tolist() == [expected] * 64
    # drawn independently per image: not all the same pattern
    assert len({tuple(m.flatten().tolist()) for m in masks}) > 1


def test_blocks_are_drawn_uniformly():
    masks = random_block_masks(4000, 7, 0.6, generator=torch.Generator().manual_seed(1))
    freq = masks.float().mean(dim=0)
    assert torch.allclose(freq, torch.full_like(freq, 30 / 49), atol=0.03)


def test_mean_fill_is_exactly_the_per_image_band_mean_of_the_unmasked_view():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 4, 16, 16, generator=g) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)
    masker = BlockMaskGenerator(16, 4, 0.6)
    masked, mask = masker(images, g)
    pixel = upsample_mask(mask, 4)
    assert pixel.shape == (3, 16, 16) and pixel.float().mean().item() == pytest.approx(10 / 16)
    mean = images.mean(dim=(2, 3))
    for i in range(3):
        for c in range(4):
            assert torch.equal(masked[i, c][pixel[i]], mean[i, c].expand(int(pixel[i].sum())))
            assert torch.equal(masked[i, c][~pixel[i]], images[i, c][~pixel[i]])
    assert torch.equal(mean_fill(images, torch.zeros(3, 16, 16, dtype=torch.bool)), images)


def test_mask_block_rule_follows_input_size_and_token_grid():
    assert default_mask_patch_size(224, 4) == 32  # CMID's ResNet-50 / Swin-B
    assert default_mask_patch_size(224, 16) == 32  # ViT-*/16: 2x2 tokens, as METHODS.md §2.3 proposes
    assert default_mask_patch_size(64, 4) == 8  # EuroSAT, ResNet / Swin: 8x8 grid
    assert default_mask_patch_size(64, 16) == 16  # EuroSAT, ViT-*/16: 4x4 grid
    assert default_mask_patch_size(96, 4) == 12 and 96 % 12 == 0


def test_bad_mask_settings_are_config_errors():
    with pytest.raises(ConfigError, match="mask_patch_size"):
        BlockMaskGenerator(64, 12)
    with pytest.raises(ConfigError, match="mask_ratio"):
        BlockMaskGenerator(64, 8, 1.5)
