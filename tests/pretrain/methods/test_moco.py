import pytest
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.losses.info_nce import info_nce
from rspretrain.pretrain.methods import MoCoV2, create, get_method


def _model(**kw):
    torch.manual_seed(0)
    args = dict(backbone="resnet18", in_chans=3, image_size=32, queue_size=64, momentum=0.9, shuffle_bn_groups=2)
    args.update(kw)
    return MoCoV2(**args)


def _batch(n=8, bands=3):
    return {"image": torch.randint(0, 256, (n, bands, 40, 40), dtype=torch.uint8)}


def test_step_loss_matches_infonce_on_the_same_keys():
    model = _model()
    views = model.make_views(_batch())
    negatives = model.queue()
    loss, logs = model.loss_from_views(views, _batch())
    # the queue now holds this step's keys at the start
    keys = model.queue.keys[:8]
    q = model.embed(views[0])
    assert torch.allclose(loss, info_nce(q, keys, negatives, model.temperature), atol=1e-4)
    assert {"momentum", "embedding_std", "mean_pairwise_cosine"} <= set(logs)
    assert int(model.queue.pointer) == 8


def test_gradients_reach_student_not_teacher():
    model = _model()
    loss, _ = model.loss_from_views(model.make_views(_batch()), _batch())
    loss.backward()
    assert all(p.grad is not None for p in model.student.parameters() if p.requires_grad)
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())


def test_teacher_follows_student_with_momentum():
    model = _model(momentum=0.5)
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.teacher.parameters()]
    model.loss_from_views(model.make_views(_batch()), _batch())
    for b, t, s in zip(before, model.teacher.parameters(), model.student.parameters()):
        assert torch.allclose(t, 0.5 * b + 0.5 * s, atol=1e-6)


def test_multispectral_and_registry():
    model = create("moco", backbone="resnet18", in_chans=13, image_size=32, queue_size=32,
                   band_names=[f"B{i}" for i in range(13)])
    loss, _ = model.loss_from_views(model.make_views(_batch(4, 13)), _batch(4, 13))
    assert torch.isfinite(loss)
    assert get_method("moco") is MoCoV2
    with pytest.raises(ConfigError, match="nope"):
        get_method("nope")


def test_mean_std_must_match_bands():
    with pytest.raises(ConfigError, match="in_chans"):
        MoCoV2(in_chans=4, mean=[0.5] * 3, std=[0.2] * 3)
