import copy

import timm
import torch

from rspretrain.nn.backbones import Backbone
from rspretrain.nn.decoders import FeaturePyramid, InputStandardization, SiameseChangeDetector, UPerNetSegmenter
from rspretrain.nn.detectors import build_faster_rcnn


def test_pyramid_of_a_resnet_skips_the_stem_and_keeps_strides_4_to_32():
    pyramid = FeaturePyramid(Backbone("resnet18"))
    assert pyramid.indices == [1, 2, 3, 4] and pyramid.reductions == [4, 8, 16, 32]
    maps = pyramid(torch.randn(2, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]


def test_pyramid_of_a_plain_vit_rescales_four_blocks():
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32)
    pyramid = FeaturePyramid(vit)
    assert pyramid.indices == [2, 5, 8, 11] and pyramid.reductions == [4, 8, 16, 32]
    maps = pyramid(torch.randn(2, 3, 32, 32))
    assert [tuple(m.shape[1:]) for m in maps] == [(48, 8, 8), (96, 4, 4), (192, 2, 2), (192, 1, 1)]


def test_frozen_pyramid_gets_no_gradients_and_keeps_batchnorm_statistics():
    backbone = Backbone("resnet18")
    pyramid = FeaturePyramid(copy.deepcopy(backbone), freeze=True)
    seg = UPerNetSegmenter(pyramid, 3, [0.5] * 3, [0.25] * 3, 255.0, decoder_channels=16)
    seg.train()
    assert not pyramid.backbone.training and seg.decoder.training
    before = {k: v.clone() for k, v in pyramid.backbone.state_dict().items()}
    seg(torch.randint(0, 256, (2, 3, 64, 64))).mean().backward()
    assert all(p.grad is None for p in pyramid.backbone.parameters())
    assert seg.classifier.weight.grad is not None
    for key, value in pyramid.backbone.state_dict().items():  # running_mean/var unchanged
        torch.testing.assert_close(value, before[key])


def test_norm_eval_trains_the_backbone_but_keeps_its_batchnorm_statistics():
    pyramid = FeaturePyramid(Backbone("resnet18"), norm_eval=True)
    seg = UPerNetSegmenter(pyramid, 3, [0.5] * 3, [0.25] * 3, 255.0, decoder_channels=16)
    seg.train()
    norms = [m for m in pyramid.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms) and pyramid.backbone.training
    stats = {k: v.clone() for k, v in pyramid.backbone.state_dict().items() if "running" in k}
    seg(torch.randint(0, 256, (2, 3, 64, 64))).mean().backward()
    assert all(p.grad is not None for p in pyramid.backbone_parameters())  # convolutions and BN affine train
    for key, value in stats.items():
        torch.testing.assert_close(pyramid.backbone.state_dict()[key], value)
    seg.eval()
    seg.train()  # a second switch keeps them in eval mode
    assert not any(m.training for m in norms)


def test_segmenter_and_change_detector_output_input_sized_logits():
    seg = UPerNetSegmenter(FeaturePyramid(Backbone("resnet18", in_chans=4)), 5, [0.1] * 4, [0.2] * 4, 10000.0, 16)
    assert seg(torch.rand(2, 4, 48, 40) * 10000).shape == (2, 5, 48, 40)
    change = SiameseChangeDetector(FeaturePyramid(Backbone("resnet18")), [0.5] * 3, [0.25] * 3, 255.0, 16).eval()
    a = torch.randint(0, 256, (1, 3, 64, 64)).float()
    assert change(a, a).shape == (1, 1, 64, 64)
    # Identical dates give zero differences at every level: the logit no longer depends on the image.
    b = torch.randint(0, 256, (1, 3, 64, 64)).float()
    torch.testing.assert_close(change(a, a), change(b, b))
    assert not torch.allclose(change(a, b), change(a, a))


def test_input_standardization_uses_value_scale_mean_and_std():
    norm = InputStandardization([0.5, 0.25], [0.25, 0.5], 100.0)
    x = torch.tensor([[50.0, 75.0]]).view(1, 2, 1, 1)
    torch.testing.assert_close(norm(x).flatten(), torch.tensor([0.0, 1.0]))


def test_faster_rcnn_on_our_backbone_trains_and_keeps_native_scale():
    model = build_faster_rcnn(FeaturePyramid(Backbone("resnet18")), 2, [0.5] * 3, [0.25] * 3, fpn_channels=32,
                              rois_per_image=32, rpn_proposals_train=100)
    assert model.backbone.out_channels == 32
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model([torch.rand(3, 64, 96), torch.rand(3, 70, 64)], targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    model.eval()
    images, _ = model.transform([torch.rand(3, 70, 90)])
    assert images.image_sizes == [(70, 90)]  # not rescaled to 800 px
    with torch.no_grad():
        out = model([torch.rand(3, 70, 90)])[0]
    assert out["boxes"].shape[1] == 4 and (out["boxes"][:, 2] <= 90).all() and (out["boxes"][:, 3] <= 70).all()
