"""What every pretraining method has: a student backbone, views, optimiser/schedule, monitors, export.

A method subclasses :class:`PretrainMethod`, adds its heads to ``self.student`` (an
``nn.ModuleDict`` whose ``"backbone"`` entry is the network that gets exported), builds its
teacher/queue/losses from the shared parts, and implements :meth:`loss_from_views` returning
the total loss and a dict of the terms to log. ``training_step`` = views + that loss, so the
throughput benchmark can time the same step with and without data/augmentation.

A base objective that takes knowledge terms (:mod:`rspretrain.pretrain.knowledge`: ``moco``, ``byol``, ``cmid``)
accepts ``knowledge`` and calls :meth:`PretrainMethod.attach_knowledge` at the end of its constructor (after its
teacher exists, so no teacher copies a term's head); its :meth:`make_views` appends :meth:`knowledge_views`; its
loss runs the query view and the terms' views in one student forward (:meth:`shared_forward`) and adds
:meth:`knowledge_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from rspretrain.core.bands import rgb_indices
from rspretrain.core.config import build_dataclass
from rspretrain.core.errors import ConfigError
from rspretrain.nn.backbones import Backbone
from rspretrain.pretrain.knowledge import KnowledgeTerm, parse_terms
from rspretrain.training.backbone_module import DATA_DERIVED, BackboneModule
from rspretrain.views.moco_v2 import MoCoV2Views, ViewsConfig

__all__ = ["DATA_DERIVED", "PretrainMethod"]


class PretrainMethod(BackboneModule):
    """Base LightningModule of the pretraining methods (inputs, optimiser, logging, checkpoint stamp and export
    metadata come from :class:`~rspretrain.training.backbone_module.BackboneModule`).

    Args:
        backbone: timm architecture name.
        in_chans: input bands.
        image_size: side of the training views.
        band_names: names of the input bands, in order (saved in exports).
        mean, std: per-band statistics in the [0, 1] value range (default 0.5 / 0.25).
        value_scale: divisor mapping raw values to [0, 1] (255 for uint8 images).
        optim: the ``optim:`` config section (see :class:`rspretrain.core.optim.OptimConfig`).
        views: the ``views:`` config section, parsed into :attr:`views_config_class` (MoCo v2's
            :class:`rspretrain.views.moco_v2.ViewsConfig` unless the method has its own recipe).
        backbone_kwargs: further ``timm.create_model`` kwargs of the backbone (e.g.
            ``drop_path_rate``, ``window_size``); saved in exports, so the backbone reloads as built.
    """

    #: The dataclass of the ``views:`` config section: each method's view recipe has its own defaults.
    views_config_class: ClassVar[type] = ViewsConfig
    #: The shipped config a bare method name runs with (``benchmark --runs NAME``); None if there is none.
    default_config: ClassVar[str | None] = None
    #: Overrides of ``default_config`` that make it a seconds-long run on the bundled data (tiny splits, queues and
    #: heads): the registry contract test trains every registered method with them.
    smoke_overrides: ClassVar[dict[str, Any]] = {}
    #: Views made of each image (the crops taken per image when streamed data is cropped at decode time).
    views_per_image: ClassVar[int] = 2
    #: Whether ``trainer.precision: auto`` may choose bf16-mixed for this method: True where the fixed-step parity
    #: study (``benchmarks/precision_parity.py``) found equal accuracy, or where it was not run (the baselines).
    auto_bf16: ClassVar[bool] = True

    def __init__(
        self,
        backbone: str = "resnet18",
        in_chans: int = 3,
        image_size: int = 64,
        band_names: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        value_scale: float = 255.0,
        optim: dict[str, Any] | None = None,
        views: dict[str, Any] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.set_inputs(in_chans, band_names, mean, std, value_scale)
        self.optim_cfg = self.optim_config(optim)
        self.views_cfg = build_dataclass(self.views_config_class, views or {}, "views")
        self.student = nn.ModuleDict(
            {"backbone": Backbone(backbone, in_chans=in_chans, image_size=image_size, timm_kwargs=backbone_kwargs)}
        )
        self.views = self.build_views(image_size, value_scale, rgb_indices(self.band_names, in_chans))
        #: Optimiser steps per epoch of the run's data, set by the run from its recipe (None: unknown); schedules a
        #: method states in epochs read it (CMID's teacher-temperature ramp, GeoKR's StepLR period).
        self.steps_per_epoch: int | None = None
        #: The knowledge terms attached to this base (:meth:`attach_knowledge`), in order.
        self.knowledge: list[KnowledgeTerm] = []
        #: The terms' parts that are neither student heads nor optimised (a term's view recipe, its teacher): moved
        #: with the method and saved in its checkpoints.
        self.knowledge_modules = nn.ModuleDict()

    def build_views(self, image_size: int, value_scale: float, rgb: Sequence[int] | None) -> nn.Module:
        """The view maker (MoCo v2's recipe here); called once the backbone exists, so a recipe may
        depend on it (CMID's masks and cell grids follow the backbone's strides)."""
        return MoCoV2Views(image_size, self.mean, self.std, value_scale, rgb, self.views_cfg)

    # -- parts -----------------------------------------------------------------------------------
    @property
    def backbone(self) -> Backbone:
        return self.student["backbone"]

    def make_views(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Augmented views of a batch, on the batch's device (overridden by methods with other views): the two RS
        views, then the knowledge terms' views (:meth:`knowledge_views`)."""
        return [*self.views(batch["image"], n_views=2), *self.knowledge_views(batch)]

    # -- knowledge terms ---------------------------------------------------------------------------
    @classmethod
    def knowledge_config(cls, model: dict[str, Any]) -> list[Any]:
        """The knowledge terms a ``model:`` section attaches (its ``knowledge`` list; presets add theirs), for the
        run to configure their data before the method is built."""
        return list(model.get("knowledge") or [])

    def attach_knowledge(self, specs: Sequence[Any] | None) -> None:
        """Parse ``model.knowledge`` items and attach the terms (their heads join the student)."""
        terms = parse_terms(specs)
        names = [t.name for t in self.knowledge] + [t.name for t in terms]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"model.knowledge: knowledge term {', '.join(twice)} given more than once "
                              f"({self.method_name} already has it)")
        for term in terms:
            term.attach(self)
            self.knowledge.append(term)

    def knowledge_view(self, x: torch.Tensor) -> torch.Tensor:
        """One view of a float [0, 1] batch of a knowledge term's images with this base's recipe (MoCo v2's one
        view here)."""
        return self.views.one_view(x)

    def knowledge_views(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The attached terms' views, in order (empty without terms)."""
        return [view for term in self.knowledge for view in term.make_views(self, batch)]

    def shared_forward(self, forward, x: torch.Tensor, extra: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list]:
        """``forward`` of ``x`` and of the terms' views ``extra`` in ONE call on their concatenation (shared
        BatchNorm statistics, GeRSP's single student forward); returns ``(out of x, [out of each extra view])``.
        Without extra views it is ``forward(x)``."""
        if not extra:
            return forward(x), []
        out = forward(torch.cat([x, *extra], dim=0))
        sizes = [x.shape[0], *(e.shape[0] for e in extra)]
        first, *rest = out.split(sizes, dim=0)
        return first, rest

    def knowledge_loss(self, features: torch.Tensor, extra: Sequence[torch.Tensor],
                       batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, dict]:
        """``sum_i weight_i * L_i`` of the attached terms (None without terms) and their logs; ``features`` are the
        pooled student features of the query view, ``extra`` those of the terms' views (from :meth:`shared_forward`)."""
        total, logs, start = None, {}, 0
        for term in self.knowledge:
            own = list(extra[start:start + term.shared_inputs])
            start += term.shared_inputs
            loss, term_logs = term.loss(self, features, own, batch)
            weighted = term.weight * loss
            total = weighted if total is None else total + weighted
            logs.update(term_logs)
        return total, logs

    def loss_from_views(self, views: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def example_batch(self, batch_size: int, image_size: int, generator: torch.Generator | None = None) -> dict:
        """A random batch of what this method trains on (raw ``uint8`` images here; methods that learn from labels
        add them), for the registry contract test and for timing a step without a dataset."""
        shape = (batch_size, self.backbone.in_chans, image_size, image_size)
        batch = {"image": torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)}
        for term in self.knowledge:
            term.example_batch(self, batch, generator)
        return batch

    # -- Lightning ---------------------------------------------------------------------------------
    def step_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """Views, then the loss: one training step's forward.

        The views are made in fp32 under any autocast (``bf16-mixed``, ``16-mixed``): their colour maps, blur kernels
        and masks are composed by matmuls that autocast would run in half precision, into fp32 buffers (a dtype
        error in ``color_transform`` before this). The networks and losses then run under the autocast.
        """
        with torch.autocast(device_type=self.device.type, enabled=False):
            views = self.make_views(batch)
        return self.loss_from_views(views, batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logs = self.step_loss(batch)
        self.log_training_step(loss, logs)
        return loss

    def optimised_module(self) -> nn.Module:
        """Only the student trains (teachers follow by EMA, queues are buffers)."""
        return self.student

    # -- monitors and export -------------------------------------------------------------------------
    @staticmethod
    @torch.no_grad()
    def collapse_monitors(z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embedding collapse signals: per-dimension std of the L2-normalised embeddings (about
        1/sqrt(d) when healthy, 0 when collapsed) and the mean pairwise cosine similarity."""
        z = F.normalize(z.detach().float(), dim=1)
        n = z.shape[0]
        cos = z @ z.T
        off_diag = (cos.sum() - cos.diagonal().sum()) / max(1, n * (n - 1))
        return {"embedding_std": z.std(dim=0).mean(), "mean_pairwise_cosine": off_diag}

    def backbone_to_export(self) -> Backbone:
        """The network whose weights are exported (the student by default)."""
        return self.backbone

    def input_size(self) -> int:
        return int(self.views.image_size)

    def decode_crop_scales(self) -> tuple[tuple, tuple]:
        """For streamed data: per view, the crop area ranges to take at decode time, for the main source and for a
        natural source (one view); empty when the recipe resizes first (see
        :meth:`rspretrain.views.band_views.BandViews.crop_scales`)."""
        crop_scales = getattr(self.views, "crop_scales", None)
        if crop_scales is None:
            return (), ()
        if any(getattr(term, "needs_whole_image", False) for term in self.knowledge):
            return (), crop_scales(1)  # a term labels whole images (land cover): the base crops on the device
        return crop_scales(self.views_per_image), crop_scales(1)
