import pytest
import torch
from torch.nn import functional as F

from rspretrain.losses.negative_cosine import normalized_mse


def test_equals_the_mse_of_the_normalised_vectors_and_spans_zero_to_four():
    torch.manual_seed(0)
    p, z = torch.randn(8, 16), torch.randn(8, 16)
    expected = ((F.normalize(p, dim=1) - F.normalize(z, dim=1)) ** 2).sum(dim=1).mean()
    assert normalized_mse(p, z) == pytest.approx(float(expected), abs=1e-5)
    assert normalized_mse(p, 3 * p) == pytest.approx(0.0, abs=1e-6)  # scale does not matter
    assert normalized_mse(p, -p) == pytest.approx(4.0, abs=1e-5)


def test_no_gradient_reaches_the_target_and_bf16_inputs_give_a_float32_loss():
    p = torch.randn(4, 8, requires_grad=True)
    z = torch.randn(4, 8, requires_grad=True)
    normalized_mse(p, z).backward()
    assert p.grad is not None and z.grad is None
    assert normalized_mse(p.bfloat16(), z.bfloat16()).dtype == torch.float32
