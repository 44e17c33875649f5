import pytest
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.nn.backbones import Backbone
from rspretrain.nn.scene_classifier import SceneClassifier


@pytest.mark.parametrize("stages", [None, (2, 3, 4)])
def test_forward_and_forward_train_agree_and_cam_mean_is_the_logit(stages):
    torch.manual_seed(0)
    net = SceneClassifier(Backbone("resnet18"), num_classes=5, fusion_stages=stages, fusion_channels=32).eval()
    x = torch.randn(2, 3, 64, 64)
    out = net.forward_train(x)
    assert torch.allclose(net(x), out.logits, atol=1e-5)
    assert len(out.stages) == 5 and (out.fusion_weights is None) == (stages is None)
    cls = out.logits.argmax(1)
    cam = net.class_activation_map(out.head_map, cls)
    expected = out.logits[torch.arange(2), cls] - net.classifier.bias[cls]
    assert torch.allclose(cam.mean(dim=(1, 2)), expected, atol=1e-4)


def test_fusion_stage_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="out of range"):
        SceneClassifier(Backbone("resnet18"), 3, fusion_stages=(2, 7))
