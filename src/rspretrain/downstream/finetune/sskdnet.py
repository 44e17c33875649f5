"""SSKDNet: scene classification with a self-supervised feature-restoration branch distilled into the backbone [0].

**What is from the paper** (its abstract; the full text was not available, METHODS.md §4.1): supervised one-stage
training on a scene dataset with hard labels; the backbone's feature maps are the supervision signal of a branch;
the branch receives the low-level feature map after "background masking and shuffling" and learns to restore it;
the branch's soft predictions ("dark knowledge") are transferred to the backbone by knowledge distillation; a
feature-fusion module fuses feature maps "dynamically"; backbone and branch are optimised jointly, without separate
pre-training; inference uses the backbone side only.

**What is ours** (METHODS.md §4.3, each a constructor knob; defaults in brackets):

- backbone: any timm name [ResNet-18 for CPU runs; ResNet-50 in the METHODS sketch], init random / checkpoint /
  export (:mod:`rspretrain.downstream.finetune.backbone_init`);
- fusion: selective-kernel attention over stages [layer2-4, 256 channels, per-channel weights]
  (:class:`~rspretrain.nn.fusion.DynamicFeatureFusion`); ``fusion=False`` classifies the pooled last stage;
- low-level map: ``low_stage`` [1 = ResNet ``layer1``];
- background: the ``mask_ratio`` [0.25] lowest-saliency cells of a ``mask_grid`` [4] x 4 grid, saliency =
  ``"cam"`` [class-activation map of the predicted class on the classifier's input map] or ``"activation"``
  (channel mean of the last stage), computed without gradient; filled with ``mask_fill`` [zero]
  (:class:`~rspretrain.views.background_mask.SaliencyBackgroundMasker`);
- shuffle: per-sample random permutation of ``shuffle_grid`` [4] x 4 cells; ``shuffle=False`` turns it off
  (:class:`~rspretrain.views.grid_shuffle.GridShuffle`);
- branch: conv encoder-decoder of width ``branch_width`` [64] with a classifier on its bottleneck
  (:class:`~rspretrain.nn.restoration_branch.RestorationBranch`); ``detach_branch_input`` [False] decides whether
  the branch's losses also train the backbone's early layers through its input;
- losses: ``L = CE(z_b, y) + branch_ce_weight * CE(z_r, y) + reconstruction_weight * L_rec(restored, sg(S_low))
  + kd_weight * T^2 * KL(softmax(z_r / T) || softmax(z_b / T))`` with [1, 1, 1, T = 4], ``L_rec`` =
  ``reconstruction_loss`` [mse], the restoration target under stop-gradient, and the KD teacher (branch) logits
  detached [``detach_kd_teacher=True``] so the KD term moves the backbone towards the branch, not vice versa.

Ablations: ``kd_weight=0`` (no KD), ``shuffle=False`` (no shuffle), ``fusion=False`` (no fusion).

**Left out of METHODS.md §4.3's sketch, on purpose:** masking the *image* (its ``mask_on = image`` option): the
abstract speaks of masking and shuffling the low-level *feature map*, so only that is implemented; the
spatial-attention fusion variant (the sketch offers it as an alternative to channel attention); an ImageNet init
by name (nothing is downloaded here: pass an exported ``.safetensors`` backbone as ``init`` instead).

References:
    - [0] Zhao, Liu, Yang, Wu, "SSKDNet: Self-Supervision-Based Knowledge Distillation Network for Remote Sensing
      Scene Classification", Remote Sensing 14(19):4813, 2022, https://doi.org/10.3390/rs14194813
    - [1] Hinton et al., "Distilling the Knowledge in a Neural Network", 2015, https://arxiv.org/abs/1503.02531
"""

from __future__ import annotations

from typing import Any

import torch

from rspretrain.core.errors import ConfigError
from rspretrain.downstream.finetune.scene_classification_task import SceneClassificationTask
from rspretrain.losses.feature_reconstruction import RECONSTRUCTION_LOSSES, feature_reconstruction
from rspretrain.losses.knowledge_distillation import kd_kl
from rspretrain.nn.restoration_branch import RestorationBranch
from rspretrain.nn.scene_classifier import ClassifierOutput
from rspretrain.views.background_mask import SaliencyBackgroundMasker
from rspretrain.views.grid_shuffle import GridShuffle

SALIENCY_SOURCES = ("cam", "activation")


class SSKDNet(SceneClassificationTask):
    """SSKDNet as a LightningModule: :class:`SceneClassificationTask` + background masking, grid shuffle,
    restoration branch and branch-to-backbone distillation (see the module docstring for every knob).

    Args:
        low_stage: index of the low-level map in ``Backbone.forward_stages`` (ResNet: 1 = ``layer1``).
        saliency: ``"cam"`` or ``"activation"``.
        mask_ratio: fraction of grid cells masked as background (0 disables masking).
        mask_grid: cells per side of the masking grid.
        mask_fill: ``"zero"`` or ``"mean"``.
        shuffle: shuffle the masked map's cells.
        shuffle_grid: cells per side of the shuffle.
        branch_width: base width of the restoration branch.
        detach_branch_input: stop the branch's gradients at its input (the branch then affects the backbone only
            through the KD term).
        reconstruction_loss: ``"mse"``, ``"l1"`` or ``"cosine"``.
        reconstruction_weight: weight of the restoration loss.
        branch_ce_weight: weight of the branch's cross-entropy.
        temperature: KD temperature ``T``.
        kd_weight: weight of the KD term (0 = the no-KD ablation).
        detach_kd_teacher: stop the KD gradient into the branch's logits.
        fusion: dynamic feature fusion before the classifier (default True for SSKDNet).
        **kwargs: :class:`SceneClassificationTask` arguments.
    """

    method_name = "sskdnet"
    default_fusion = True

    def __init__(
        self,
        low_stage: int = 1,
        saliency: str = "cam",
        mask_ratio: float = 0.25,
        mask_grid: int = 4,
        mask_fill: str = "zero",
        shuffle: bool = True,
        shuffle_grid: int = 4,
        branch_width: int = 64,
        detach_branch_input: bool = False,
        reconstruction_loss: str = "mse",
        reconstruction_weight: float = 1.0,
        branch_ce_weight: float = 1.0,
        temperature: float = 4.0,
        kd_weight: float = 1.0,
        detach_kd_teacher: bool = True,
        **kwargs: Any,
    ) -> None:
        if saliency not in SALIENCY_SOURCES:
            raise ConfigError(f"model.saliency {saliency!r} is not one of {', '.join(SALIENCY_SOURCES)}")
        if reconstruction_loss not in RECONSTRUCTION_LOSSES:
            raise ConfigError(f"model.reconstruction_loss {reconstruction_loss!r} is not one of "
                              f"{', '.join(RECONSTRUCTION_LOSSES)}")
        if temperature <= 0:
            raise ConfigError(f"model.temperature must be > 0, got {temperature}")
        super().__init__(**kwargs)
        self.save_hyperparameters()

    def configure_models(self) -> None:
        super().configure_models()  # the inference network first: equal seeds give equal backbones across tasks
        hp = self.hparams
        info = self.net.backbone.feature_info
        if not -len(info) <= hp.low_stage < len(info):
            raise ConfigError(f"model.low_stage {hp.low_stage} out of range: {self.net.backbone.arch} has "
                              f"{len(info)} stage maps")
        side = -(-int(hp.image_size) // int(info[hp.low_stage]["reduction"]))  # stride-2 convs round up
        if hp.shuffle and side % hp.shuffle_grid:
            # Checked here, before any data is read, rather than at the first training step.
            raise ConfigError(
                f"model.shuffle_grid {hp.shuffle_grid} does not divide the {side}x{side} low-level map of a "
                f"{hp.image_size} px input (stage {hp.low_stage}, stride {info[hp.low_stage]['reduction']}); "
                f"pick an image size whose map side is a multiple of it, or another shuffle_grid"
            )
        self.masker = SaliencyBackgroundMasker(hp.mask_ratio, hp.mask_grid, hp.mask_fill)
        self.shuffler = GridShuffle(hp.shuffle_grid, enabled=hp.shuffle)
        self.branch = RestorationBranch(info[hp.low_stage]["num_chs"], self.num_classes, hp.branch_width)

    @torch.no_grad()
    def saliency_map(self, out: ClassifierOutput) -> torch.Tensor:
        """``(B, h, w)`` saliency of each sample: CAM of the predicted class, or the last stage's channel mean."""
        if self.hparams.saliency == "cam":
            return self.net.class_activation_map(out.head_map.detach(), out.logits.detach().argmax(dim=1))
        return out.stages[-1].detach().mean(dim=1)

    def branch_forward(self, out: ClassifierOutput) -> dict[str, torch.Tensor]:
        """Mask, shuffle and restore the low-level map; returns the branch's outputs and its target."""
        low = out.stages[self.hparams.low_stage]
        branch_input = low.detach() if self.hparams.detach_branch_input else low
        masked, cell_mask = self.masker(branch_input, self.saliency_map(out))
        shuffled, permutation = self.shuffler(masked)
        restored, logits = self.branch(shuffled)
        return {"restored": restored, "logits": logits, "target": low.detach(), "cell_mask": cell_mask,
                "permutation": permutation}

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        hp = self.hparams
        out = self.net.forward_train(x)
        branch = self.branch_forward(out)
        ce_backbone = self.criterion(out.logits, y)
        ce_branch = self.criterion(branch["logits"], y)
        reconstruction = feature_reconstruction(branch["restored"], branch["target"], hp.reconstruction_loss)
        kd = kd_kl(out.logits, branch["logits"], hp.temperature, hp.detach_kd_teacher)
        loss = ce_backbone + hp.branch_ce_weight * ce_branch + hp.reconstruction_weight * reconstruction
        if hp.kd_weight:
            loss = loss + hp.kd_weight * kd
        logs = {
            "loss_ce": ce_backbone.detach(),
            "loss_ce_branch": ce_branch.detach(),
            "loss_reconstruction": reconstruction.detach(),
            "loss_kd": kd.detach(),
            "branch_accuracy": (branch["logits"].argmax(1) == y).float().mean(),
        }
        if out.fusion_weights is not None:
            for i, w in enumerate(out.fusion_weights.detach().mean(dim=(0, 2)).unbind()):
                logs[f"fusion_weight_stage{self.net.fusion_stages[i]}"] = w
        return loss, out.logits, logs


__all__ = ["SALIENCY_SOURCES", "SSKDNet"]
