import pytest
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.nn.backbones import Backbone, create_backbone


@pytest.mark.parametrize(
    "arch,in_chans,width",
    [
        ("resnet18", 3, 512),
        ("resnet50", 4, 2048),
        ("vit_small_patch16_224", 13, 384),
        ("swin_tiny_patch4_window7_224", 3, 768),
    ],
)
def test_pooled_features_and_stage_maps(arch, in_chans, width):
    bb = create_backbone(arch, in_chans=in_chans, image_size=64).eval()  # eval: Swin has stochastic depth
    x = torch.randn(2, in_chans, 64, 64)
    assert bb(x).shape == (2, width)
    stages = bb.forward_stages(x)
    assert all(s.ndim == 4 and s.shape[0] == 2 for s in stages)
    assert stages[-1].shape[1] == bb.feature_info[-1]["num_chs"]
    pooled, stages2 = bb.forward_pooled_and_stages(x)
    assert torch.allclose(pooled, bb(x), atol=1e-5)
    assert len(stages2) == len(stages)


def test_state_dict_keys_are_timm_keys():
    import timm

    bb = Backbone("resnet18", in_chans=5)
    plain = timm.create_model("resnet18", num_classes=0, in_chans=5)
    assert set(bb.model.state_dict()) == set(plain.state_dict())


def test_unknown_architecture_is_a_config_error():
    with pytest.raises(ConfigError, match="not_a_model"):
        Backbone("not_a_model")
