"""``rspretrain export --format torchgeo``: a file torchgeo's tasks take as ``weights=PATH``, tested with torchgeo's
own tasks building on it."""

import pytest
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.pretrain.export import export_torchgeo
from rspretrain.pretrain.methods import MoCoV2


@pytest.fixture()
def method():
    torch.manual_seed(0)
    return MoCoV2(backbone="resnet18", in_chans=4, image_size=32, queue_size=16,
                  band_names=("blue", "green", "red", "nir"), mean=[0.1, 0.2, 0.3, 0.4], std=[0.5, 0.5, 0.5, 0.5]).eval()


def test_torchgeo_classification_and_segmentation_tasks_load_the_export(method, tmp_path):
    from torchgeo.trainers import ClassificationTask, SemanticSegmentationTask

    path = export_torchgeo(method, tmp_path / "moco_bb", source="unit-test")
    assert path.name == "moco_bb.ckpt"
    saved = torch.load(path, weights_only=True)  # plain types and tensors only, as torchgeo loads it
    assert saved["hyper_parameters"] == {"model": "resnet18", "in_channels": 4}
    assert saved["rspretrain"]["band_names"] == ["blue", "green", "red", "nir"]
    assert saved["rspretrain"]["method"] == "moco" and saved["rspretrain"]["source"] == "unit-test"
    ours = method.backbone_to_export().model.state_dict()

    task = ClassificationTask(model="resnet18", weights=str(path), in_channels=4, num_classes=5)
    theirs = task.model.state_dict()
    assert all(torch.equal(theirs[k], v) for k, v in ours.items())  # every backbone tensor, bit for bit
    assert theirs["fc.weight"].shape == (5, 512)  # torchgeo's new head on top
    x = torch.rand(2, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(task.model.eval().forward_features(x), method.backbone.model.forward_features(x))

    # the segmentation task loads the backbone into its U-Net encoder, strictly (every key must fit)
    seg = SemanticSegmentationTask(model="unet", backbone="resnet18", weights=str(path), in_channels=4, num_classes=3)
    encoder = seg.model.encoder.state_dict()
    assert torch.equal(encoder["conv1.weight"], ours["conv1.weight"])
    assert torch.equal(encoder["layer4.1.bn2.running_var"], ours["layer4.1.bn2.running_var"])


def test_a_backbone_torchgeo_cannot_rebuild_is_refused(tmp_path):
    torch.manual_seed(0)
    vit = MoCoV2(backbone="vit_tiny_patch16_224", in_chans=3, image_size=32, queue_size=16)
    with pytest.raises(ConfigError, match=r"torchgeo builds timm.create_model\('vit_tiny_patch16_224', in_chans=3\) .*"
                                          r"'pos_embed' \(\(1, 5, 192\) here, \(1, 197, 192\) in torchgeo's\)"):
        export_torchgeo(vit, tmp_path / "vit.ckpt")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="is a folder"):
        export_torchgeo(vit, tmp_path)
