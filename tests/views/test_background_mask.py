import pytest
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.views.background_mask import (
    SaliencyBackgroundMasker,
    apply_cell_mask,
    cell_saliency,
    lowest_cells,
)


def test_masks_exactly_the_lowest_saliency_cells():
    g = 4
    scores = torch.stack([torch.randperm(g * g).float(), torch.randperm(g * g).float()]).view(2, g, g)
    saliency = scores.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # (2, 8, 8): constant per cell
    masker = SaliencyBackgroundMasker(ratio=0.25, grid=g)
    mask = masker.cell_mask(saliency)
    assert mask.shape == (2, g, g) and masker.num_masked == 4
    for b in range(2):
        assert int(mask[b].sum()) == 4
        # every masked cell scores below every kept cell
        assert scores[b][mask[b]].max() < scores[b][~mask[b]].min()
        assert set(scores[b][mask[b]].tolist()) == {0.0, 1.0, 2.0, 3.0}


def test_masked_cells_are_filled_and_the_rest_is_untouched():
    x = torch.rand(2, 5, 8, 8) + 1.0
    saliency = torch.rand(2, 8, 8)
    masked, mask = SaliencyBackgroundMasker(ratio=0.5, grid=4, fill="zero")(x, saliency)
    pixel = mask.repeat_interleave(2, 1).repeat_interleave(2, 2).unsqueeze(1).expand_as(x)
    assert torch.all(masked[pixel] == 0)
    assert torch.equal(masked[~pixel], x[~pixel])
    mean_filled = apply_cell_mask(x, mask, fill="mean")
    expected = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    assert torch.allclose(mean_filled[pixel], expected[pixel])


def test_gradient_reaches_only_unmasked_cells():
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    masked, mask = SaliencyBackgroundMasker(ratio=0.25, grid=4)(x, torch.rand(1, 4, 4))
    masked.sum().backward()
    pixel = mask.repeat_interleave(2, 1).repeat_interleave(2, 2).unsqueeze(1).expand_as(x)
    assert torch.all(x.grad[pixel] == 0) and torch.all(x.grad[~pixel] == 1)


def test_coarse_saliency_is_upsampled_to_the_grid():
    saliency = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # 2x2 map, 4x4 grid
    cells = cell_saliency(saliency, 4)
    assert cells.shape == (1, 4, 4)
    mask = lowest_cells(cells, 4)
    assert int(mask.sum()) == 4
    # bilinear upsampling keeps the ordering: the cells nearest the lowest coarse value go first, the
    # quarter of the highest coarse value is never masked
    assert mask[0, 0, 0] and mask[0, 0, 1] and mask[0, 1, 0] and not mask[0, 2:, 2:].any()


def test_ratio_zero_is_identity_and_bad_settings_are_config_errors():
    x = torch.rand(1, 3, 8, 8)
    out, mask = SaliencyBackgroundMasker(ratio=0.0, grid=4)(x, torch.rand(1, 8, 8))
    assert out is x and not mask.any()
    with pytest.raises(ConfigError, match="ratio"):
        SaliencyBackgroundMasker(ratio=1.0)
    with pytest.raises(ConfigError, match="fill"):
        SaliencyBackgroundMasker(fill="noise")
