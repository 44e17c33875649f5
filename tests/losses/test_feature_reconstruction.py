import pytest
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.losses.feature_reconstruction import feature_reconstruction


@pytest.mark.parametrize("kind", ["mse", "l1", "cosine"])
def test_target_gets_no_gradient_and_perfect_prediction_is_zero(kind):
    target = torch.randn(2, 4, 6, 6, requires_grad=True)
    pred = torch.randn(2, 4, 6, 6, requires_grad=True)
    loss = feature_reconstruction(pred, target, kind)
    loss.backward()
    assert target.grad is None and pred.grad.abs().sum() > 0
    assert feature_reconstruction(target.detach().clone(), target, kind).item() == pytest.approx(0.0, abs=1e-6)


def test_values_and_unknown_kind():
    pred, target = torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)
    assert feature_reconstruction(pred * 2, target, "mse").item() == pytest.approx(4.0)
    assert feature_reconstruction(pred * 2, target, "l1").item() == pytest.approx(2.0)
    assert feature_reconstruction(pred, -pred, "cosine").item() == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="huber"):
        feature_reconstruction(pred, target, "huber")
