import math

import pytest
import torch

from rspretrain.losses.focal_l1 import focal_l1_loss


def test_value_against_the_formula():
    pred = torch.tensor([[[[1.0, -2.0]]]])
    target = torch.zeros_like(pred)
    expected = sum(d * (2 / (1 + math.exp(-0.2 * d)) - 1) for d in (1.0, 2.0)) / 2
    assert focal_l1_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)
    assert focal_l1_loss(target, target).item() == 0.0


def test_only_masked_pixels_count_averaged_over_bands():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 3, 8, 8, generator=g)
    pred = target.clone()
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[0, :4] = True  # 32 masked pixels
    pred[~mask.unsqueeze(1).expand_as(pred)] += 100.0  # errors outside the mask must not count
    assert focal_l1_loss(pred, target, mask).item() == 0.0
    pred[0, :, :4] += 1.0
    per_entry = 1.0 * (2 * torch.sigmoid(torch.tensor(0.2)) - 1)
    assert focal_l1_loss(pred, target, mask).item() == pytest.approx(per_entry.item(), rel=1e-5)
    assert focal_l1_loss(pred, target, torch.zeros_like(mask)).item() == 0.0
