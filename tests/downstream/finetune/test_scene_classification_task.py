import pytest
import torch

from rspretrain.core.errors import BandMismatchError, ConfigError, DataError
from rspretrain.downstream.finetune import SceneClassificationTask, SSKDNet
from rspretrain.pretrain.export import export_backbone
from rspretrain.pretrain.methods import MoCoV2

RGB = ("red", "green", "blue")


@pytest.fixture(scope="module")
def moco() -> MoCoV2:
    torch.manual_seed(0)
    return MoCoV2(backbone="resnet18", in_chans=3, band_names=RGB, mean=(0.3, 0.4, 0.5), std=(0.1, 0.2, 0.3),
                  queue_size=16, image_size=32)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_init_from_an_exported_backbone(moco, tmp_path):
    path = export_backbone(moco, tmp_path / "bb.safetensors")
    task = SSKDNet(num_classes=5, init=str(path), band_names=RGB, image_size=32)
    assert _same_weights(task.net.backbone.model, moco.backbone.model)
    assert task.init_source.kind == "exported" and task.init_source.method == "moco"
    with pytest.raises(ConfigError, match="resnet50"):
        SceneClassificationTask(num_classes=5, init=str(path), backbone="resnet50")
    with pytest.raises(BandMismatchError, match="4 bands"):
        SceneClassificationTask(num_classes=5, init=str(path), in_chans=4)


def test_init_from_a_pretraining_checkpoint(moco, tmp_path):
    ckpt = tmp_path / "last.ckpt"
    torch.save({"rspretrain": {"method": "moco"}, "hyper_parameters": dict(moco.hparams),
                "state_dict": moco.state_dict()}, ckpt)
    task = SceneClassificationTask(num_classes=5, init=str(ckpt), band_names=RGB, image_size=32)
    assert _same_weights(task.net.backbone.model, moco.backbone.model)
    assert task.init_source.kind == "checkpoint"
    with pytest.raises(BandMismatchError, match="band order"):
        SceneClassificationTask(num_classes=5, init=str(ckpt), band_names=("blue", "green", "red"))


def test_missing_init_file_names_it(tmp_path):
    with pytest.raises(DataError, match="nowhere.ckpt"):
        SceneClassificationTask(num_classes=3, init=str(tmp_path / "nowhere.ckpt"))


def test_plain_loss_is_cross_entropy_of_the_inference_network():
    torch.manual_seed(0)
    task = SceneClassificationTask(num_classes=3, image_size=32)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    loss, logits, _ = task.loss(x, y)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(task.net(x), y), atol=1e-5)
    assert torch.allclose(logits, task.net(x), atol=1e-5)
    assert task.net.fusion is None and SceneClassificationTask(num_classes=3, fusion=True).net.fusion is not None
