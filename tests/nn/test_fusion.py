import pytest
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.nn.fusion import DynamicFeatureFusion


def _maps(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 16, 8, 8, generator=g), torch.randn(b, 32, 4, 4, generator=g),
            torch.randn(b, 64, 2, 2, generator=g)]


@pytest.mark.parametrize("weighting,per_stage", [("channel", 24), ("stage", 1)])
def test_weights_are_a_softmax_over_stages_and_depend_on_the_input(weighting, per_stage):
    torch.manual_seed(0)
    ffm = DynamicFeatureFusion([16, 32, 64], out_channels=24, weighting=weighting).eval()
    fused, weights = ffm(_maps())
    assert fused.shape == (4, 24, 8, 8)
    assert weights.shape == (4, 3, per_stage)
    assert torch.allclose(weights.sum(dim=1), torch.ones(4, per_stage), atol=1e-6)
    assert (weights[0] - weights[1]).abs().max() > 1e-4  # different images, different weights


def test_fused_map_is_the_weighted_sum_of_projected_stages():
    torch.manual_seed(0)
    ffm = DynamicFeatureFusion([16, 32, 64], out_channels=8, size="coarsest").eval()
    maps = _maps(b=2)
    fused, weights = ffm(maps)
    assert fused.shape == (2, 8, 2, 2)
    projected = [torch.nn.functional.adaptive_avg_pool2d(p(m), 2) for p, m in zip(ffm.project, maps)]
    expected = sum(w[..., None, None] * u for w, u in zip(weights.unbind(1), projected))
    assert torch.allclose(fused, expected, atol=1e-5)


def test_gradients_reach_every_stage_and_config_errors():
    ffm = DynamicFeatureFusion([16, 32, 64], out_channels=8)
    maps = [m.requires_grad_() for m in _maps()]
    ffm(maps)[0].sum().backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in maps)
    with pytest.raises(ConfigError, match="at least 2"):
        DynamicFeatureFusion([16])
    with pytest.raises(ConfigError, match="weighting"):
        DynamicFeatureFusion([16, 32], weighting="pixel")
