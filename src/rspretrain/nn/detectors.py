"""Faster R-CNN with FPN on any rspretrain / timm backbone, at the imagery's native scale.

:class:`PyramidFPN` is what torchvision's ``BackboneWithFPN`` is for its own ResNets, for our
:class:`~rspretrain.nn.decoders.FeaturePyramid`: an FPN (T.-Y. Lin et al., "Feature Pyramid Networks for Object
Detection", CVPR 2017) over the stage maps plus a max-pooled extra level, returning an ``OrderedDict`` of maps and
exposing ``out_channels``, which is all :class:`torchvision.models.detection.FasterRCNN` (S. Ren et al., "Faster
R-CNN", NeurIPS 2015) asks of a backbone.

Two choices differ from torchvision's COCO defaults, because remote-sensing images have a fixed ground sampling
distance: images are **not resized** (torchvision rescales every image to 800 px, which would change the apparent size
of objects between training crops and test scenes), and anchors start at 16 px (small objects such as tree crowns
at 0.1 m); both are arguments.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from rspretrain.nn.decoders import FeaturePyramid

__all__ = ["NativeScaleTransform", "PyramidFPN", "build_faster_rcnn"]


class PyramidFPN(nn.Module):
    """FPN over a :class:`FeaturePyramid` with torchvision's backbone contract (``out_channels``, dict of maps).

    Args:
        pyramid: the backbone's feature pyramid (input: standardised images).
        out_channels: FPN width (torchvision: 256).
    """

    def __init__(self, pyramid: FeaturePyramid, out_channels: int = 256) -> None:
        super().__init__()
        self.body = pyramid
        self.fpn = FeaturePyramidNetwork(list(pyramid.channels), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.level_names = [str(i) for i in range(len(pyramid.channels))]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body(x)
        return self.fpn(OrderedDict(zip(self.level_names, maps)))


class NativeScaleTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform (normalise, batch with padding to a multiple of 32) without resizing."""

    def resize(self, image: torch.Tensor, target=None):
        return image, target


def build_faster_rcnn(
    pyramid: FeaturePyramid,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    anchor_sizes: Sequence[int] = (16, 32, 64, 128, 256),
    fpn_channels: int = 256,
    detections_per_image: int = 100,
    rois_per_image: int = 512,
    rpn_proposals_train: int = 2000,
) -> FasterRCNN:
    """Faster R-CNN + FPN on ``pyramid`` for ``num_classes`` object classes (background added internally).

    The model takes images scaled to [0, 1] (a list of ``(C, H, W)`` tensors of any size) and standardises them with
    ``mean`` / ``std`` (the backbone's pretraining statistics, any band count). Targets use 1-based labels (0 is
    torchvision's background).

    Args:
        pyramid: backbone feature pyramid.
        num_classes: object classes, without background.
        mean, std: per-band statistics in the [0, 1] range.
        anchor_sizes: anchor side per level, finest first (one per pyramid level plus the pooled level).
        fpn_channels: FPN width.
        detections_per_image: most boxes kept per image after NMS (COCO AP counts up to 100 per class).
        rois_per_image: proposals sampled per training image for the box head (torchvision: 512; fewer is cheaper on
            a CPU and enough for images with tens of objects).
        rpn_proposals_train: proposals kept per training image after NMS (torchvision: 2000).
    """
    backbone = PyramidFPN(pyramid, fpn_channels)
    n_levels = len(backbone.level_names) + 1
    sizes = tuple(anchor_sizes)
    if len(sizes) < n_levels:  # extend by doubling so every level has anchors
        sizes = sizes + tuple(sizes[-1] * 2 ** (k + 1) for k in range(n_levels - len(sizes)))
    anchors = AnchorGenerator(sizes=tuple((s,) for s in sizes[:n_levels]), aspect_ratios=((0.5, 1.0, 2.0),) * n_levels)
    roi_pool = MultiScaleRoIAlign(featmap_names=backbone.level_names, output_size=7, sampling_ratio=2)
    model = FasterRCNN(
        backbone,
        num_classes=num_classes + 1,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        image_mean=list(mean),
        image_std=list(std),
        box_detections_per_img=detections_per_image,
        box_batch_size_per_image=rois_per_image,
        rpn_post_nms_top_n_train=rpn_proposals_train,
    )
    model.transform = NativeScaleTransform(1, 1, list(mean), list(std))
    return model
