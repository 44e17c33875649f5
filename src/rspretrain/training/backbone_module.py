"""The base LightningModule of everything rspretrain trains: a backbone and what its inputs are.

:class:`BackboneModule` holds what a pretraining method (:class:`~rspretrain.pretrain.methods.base.PretrainMethod`),
a fine-tuning task (:class:`~rspretrain.downstream.finetune.scene_classification_task.SceneClassificationTask`) and
a dense task (:class:`~rspretrain.downstream.dense.dense_task.DenseTask`) share, so it is written once:

- the input description: bands, per-band mean / std in the [0, 1] range, the raw value scale
  (:meth:`set_inputs`, which refuses statistics whose length differs from the band count);
- the optimiser section (:meth:`optim_config`, checked by :class:`~rspretrain.core.optim.OptimConfig`) and the
  per-step schedule over the run's length (:meth:`configure_optimizers`);
- the training-step epilogue (:meth:`log_training_step`): the non-finite-loss stop on every rank, then the loss, its
  terms and the learning rate logged;
- the checkpoint stamp (method name, version, provenance) and the export metadata of the backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from rspretrain.core.errors import ConfigError
from rspretrain.core.non_finite_loss import stop_if_not_finite
from rspretrain.core.optim import OptimConfig, build_optimizer

__all__ = ["DATA_DERIVED", "BackboneModule"]

#: Constructor arguments a module gets from the data, never from a config's ``model:`` section.
DATA_DERIVED = ("in_chans", "band_names", "mean", "std", "value_scale", "num_classes", "class_names", "classes")


class BackboneModule(L.LightningModule):
    """What every trained module shares (see the module docstring); subclasses build their networks."""

    #: The name runs, checkpoints and exports are stamped with.
    method_name: ClassVar[str] = "base"
    #: Which network :meth:`backbone_to_export` takes the backbone from (``student``, ``teacher``, ``net``...).
    export_from: ClassVar[str] = "student"

    mean: tuple[float, ...]
    std: tuple[float, ...]
    band_names: tuple[str, ...] | None
    value_scale: float

    def set_inputs(
        self,
        in_chans: int,
        band_names: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        value_scale: float = 255.0,
    ) -> None:
        """Bands and statistics of the input (default mean 0.5 / std 0.25 per band, in the [0, 1] range)."""
        self.mean = tuple(float(m) for m in (mean if mean is not None else [0.5] * in_chans))
        self.std = tuple(float(s) for s in (std if std is not None else [0.25] * in_chans))
        if len(self.mean) != in_chans or len(self.std) != in_chans:
            raise ConfigError(f"mean/std have {len(self.mean)}/{len(self.std)} entries but in_chans is {in_chans}")
        self.band_names = tuple(band_names) if band_names is not None else None
        self.value_scale = float(value_scale)

    @staticmethod
    def optim_config(values: dict[str, Any] | None, defaults: dict[str, Any] | None = None) -> OptimConfig:
        """The ``optim:`` section over ``defaults``; an unknown key, a wrong type or a value out of range (an unknown
        schedule, see :class:`OptimConfig`) is a :class:`ConfigError` naming it."""
        from rspretrain.core.config import build_dataclass

        return build_dataclass(OptimConfig, {**(defaults or {}), **(values or {})}, "optim")

    # -- Lightning ---------------------------------------------------------------------------------
    def optimised_module(self) -> nn.Module:
        """The parameters the optimiser updates (the whole module unless a subclass says otherwise)."""
        return self

    def configure_optimizers(self):
        # The schedule reads its length at every step: a TimeBudget callback may fit it later.
        self.schedule_total_steps = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        optimizer, scheduler = build_optimizer(self.optimised_module(), self.optim_cfg,
                                               lambda: self.schedule_total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def log_training_step(self, loss: torch.Tensor, logs: dict[str, Any]) -> None:
        """Stop on a non-finite loss (every rank at once, before backward) and log the loss, its terms and the lr."""
        stop_if_not_finite(self, loss, logs)
        self.log("train/loss", loss, prog_bar=True)
        for key, value in logs.items():
            self.log(f"train/{key}", value)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from rspretrain import __version__

        checkpoint["rspretrain"] = {
            "method": self.method_name,
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "version": __version__,
            "provenance": getattr(self, "provenance", None),
        }

    # -- export ------------------------------------------------------------------------------------
    def backbone_to_export(self) -> nn.Module:
        """The backbone (:class:`~rspretrain.nn.backbones.Backbone`) whose weights are exported."""
        raise NotImplementedError

    def input_size(self) -> int:
        """The side of the images the backbone was trained on."""
        raise NotImplementedError

    def export_metadata(self) -> dict[str, Any]:
        """Band, normalisation and architecture metadata (the keys of
        :func:`rspretrain.pretrain.export.export_backbone`)."""
        bb = self.backbone_to_export()
        size = self.input_size()
        return {
            "arch": bb.arch,
            "in_chans": bb.in_chans,
            "timm_kwargs": bb.timm_kwargs,
            "band_names": list(self.band_names) if self.band_names else None,
            "mean": list(self.mean),
            "std": list(self.std),
            "value_scale": self.value_scale,
            "input_size": [bb.in_chans, size, size],
            "num_features": bb.num_features,
            "method": self.method_name,
            "exported_from": self.export_from,
        }
