import pytest
import torch

from rspretrain.pretrain.methods import BYOL, create


def _model(**kwargs):
    torch.manual_seed(0)
    return create("byol", backbone="resnet18", in_chans=3, image_size=32, proj_hidden_dim=64, **kwargs)


def test_the_target_has_backbone_and_projector_but_no_predictor():
    model = _model()
    assert isinstance(model, BYOL)
    assert set(model.teacher.module.keys()) == {"backbone", "projector"}
    assert "predictor" in model.student


def test_loss_is_the_symmetric_normalised_mse_and_lies_in_zero_to_eight():
    model = _model()
    batch = model.example_batch(4, 40, torch.Generator().manual_seed(0))
    views = model.make_views(batch)
    loss, logs = model.loss_from_views(views, batch)
    assert 0.0 <= float(loss) <= 8.0
    assert logs["momentum"] == pytest.approx(0.996)
    # the loss is symmetric in the views (the EMA update in between moves the target towards an identical student)
    swapped, _ = model.loss_from_views(views[::-1], batch)
    assert float(swapped) == pytest.approx(float(loss), rel=1e-3)


def test_the_momentum_rises_along_a_cosine_to_one():
    model = _model()
    model.schedule_total_steps = 100
    schedule = model.teacher.schedule
    schedule.total_steps = 100
    assert schedule(0) == pytest.approx(0.996)
    assert schedule(50) == pytest.approx(0.998)
    assert schedule(100) == pytest.approx(1.0)
