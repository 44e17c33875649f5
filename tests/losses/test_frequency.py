import pytest
import torch

from rspretrain.losses.frequency import FocalFrequencyLoss, focal_frequency_loss, masked_frequency_loss


def _images(seed=0):
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_zero_for_identical_images_and_positive_otherwise():
    x = _images()
    assert focal_frequency_loss(x, x.clone()).item() == 0.0
    assert FocalFrequencyLoss(average_spectrum=False, batch_weight=False)(x, x.clone()).item() == 0.0
    y = _images(1)
    assert focal_frequency_loss(x, y).item() > 0
    assert focal_frequency_loss(x, y, average_spectrum=False, log_weight=False, batch_weight=False).item() > 0


def test_matches_the_definition_without_log_and_averaging():
    x, y = _images(), _images(1)
    fx, fy = torch.fft.fft2(x, norm="ortho"), torch.fft.fft2(y, norm="ortho")
    distance = (fx - fy).abs() ** 2
    weight = (distance.sqrt() / distance.sqrt().amax())
    expected = (weight * distance).mean()
    got = focal_frequency_loss(x, y, average_spectrum=False, log_weight=False, batch_weight=True)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradient_flows_through_the_distance_not_the_weight():
    x, y = _images().requires_grad_(), _images(1)
    focal_frequency_loss(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_masked_form_is_ffl_of_the_mixed_prediction_with_visible_gradient_scaled():
    target = _images()
    mask = torch.zeros(4, 16, 16)
    mask[:, :8] = 1
    pred = (target + _images(2)).requires_grad_()
    m = mask.unsqueeze(1) + (1 - mask.unsqueeze(1)) * 0.001
    mixed = m * pred.detach() + (1 - m) * (0.5 * pred.detach() + 0.5 * target)
    loss = masked_frequency_loss(pred, target, mask)
    assert loss.item() == pytest.approx(focal_frequency_loss(mixed, target).item(), rel=1e-6)
    loss.backward()
    visible = pred.grad[:, :, 8:].abs().mean()
    masked = pred.grad[:, :, :8].abs().mean()
    assert 0 < visible < 0.01 * masked  # the prediction keeps weight 0.001 on visible pixels
    assert masked_frequency_loss(target.clone(), target, mask).item() == pytest.approx(0.0, abs=1e-12)
