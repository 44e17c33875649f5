import pytest
import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.pretrain.methods import create


def _model(**kw):
    return create("supervised", backbone="resnet18", image_size=32, num_classes=4, **kw)


def test_cross_entropy_trains_backbone_and_classifier():
    torch.manual_seed(0)
    model = _model()
    batch = {"image": torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8), "label": torch.arange(8) % 4}
    loss, logs = model.loss_from_views(model.make_views(batch), batch)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(4.0)).item(), rel=0.3)  # about chance at init
    loss.backward()
    assert model.backbone.model.conv1.weight.grad.abs().sum() > 0
    assert model.student["classifier"].weight.grad.abs().sum() > 0
    assert 0.0 <= float(logs["train_accuracy"]) <= 1.0
    assert "classifier" not in str(type(model.backbone_to_export()))


def test_unlabeled_or_out_of_range_labels_are_errors():
    model = _model()
    batch = {"image": torch.zeros(2, 3, 32, 32, dtype=torch.uint8)}
    with pytest.raises(DataError, match="labeled"):
        model.loss_from_views(model.make_views(batch), batch)
    batch["label"] = torch.tensor([0, 7])
    with pytest.raises(DataError, match="outside 0..3"):
        model.loss_from_views(model.make_views(batch), batch)


def test_unlabeled_training_source_is_a_config_error(tmp_path, data_root):
    from rspretrain.pretrain.config import load_config
    from rspretrain.pretrain.run import build

    cfg = load_config("supervised_resnet18_cifar10", {
        "data.dataset": "geotiff:" + str(data_root / "geotiff_samples" / "rasterio_RGB.byte.tif"), "data.batch_size": 2,
        "trainer.out_dir": str(tmp_path),
    })
    with pytest.raises(ConfigError, match="has no labels"):
        build(cfg)
