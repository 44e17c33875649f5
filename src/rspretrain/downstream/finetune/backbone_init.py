"""Where a fine-tuned backbone's starting weights come from: random, an rspretrain checkpoint, or an export.

``init`` is one of

- ``"random"``: timm's default initialisation (seeded by the run's seed);
- a pretraining checkpoint (``.ckpt``, written by ``rspretrain pretrain``): the method is rebuilt with
  :func:`rspretrain.pretrain.run.load_method` and its exported network (``backbone_to_export``: the student for MoCo and
  GeRSP) is taken;
- an exported backbone (``.safetensors``, written by ``rspretrain export``): loaded with
  :func:`rspretrain.pretrain.export.load_backbone`.

A pretrained source carries its architecture, band names and per-band mean/std; they are checked against the
fine-tuning data (:class:`~rspretrain.core.errors.BandMismatchError` on a different band count or order), and the
fine-tuning inputs are then standardised with the PRETRAINING statistics, as the backbone learned them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rspretrain.core.bands import check_bands
from rspretrain.core.errors import ConfigError, DataError


@dataclass
class BackboneInit:
    """A resolved ``init``.

    Attributes:
        kind: ``"random"``, ``"checkpoint"`` or ``"exported"``.
        path: the file, or None for random.
        arch: timm architecture of the pretrained weights (None for random).
        in_chans: input bands of the pretrained weights.
        band_names: their band order, if known.
        mean, std: per-band statistics used in pretraining (None for random).
        timm_kwargs: constructor kwargs the weights were built with.
        state_dict: the timm model's weights (timm key names), or None for random.
        method: the pretraining method's name, if known.
    """

    kind: str
    path: str | None = None
    arch: str | None = None
    in_chans: int | None = None
    band_names: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    state_dict: dict[str, torch.Tensor] | None = None
    method: str | None = None

    @property
    def pretrained(self) -> bool:
        return self.state_dict is not None

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary (no weights)."""
        return {"kind": self.kind, "path": self.path, "arch": self.arch, "method": self.method,
                "band_names": list(self.band_names) if self.band_names else None}


def resolve_init(init: str, band_names: Sequence[str] | None = None, in_chans: int | None = None) -> BackboneInit:
    """Read ``init`` and check its bands against the data's ``band_names`` / ``in_chans``.

    Raises:
        DataError: the file is missing or not an rspretrain checkpoint/export.
        BandMismatchError: the data's bands differ from the pretrained backbone's.
    """
    if init == "random":
        return BackboneInit("random")
    path = Path(init).expanduser()
    if not path.is_file():
        raise DataError(f"init {init!r}: not 'random' and no such file (expected a .ckpt or .safetensors)")
    if path.suffix == ".safetensors":
        from rspretrain.pretrain.export import load_backbone

        model = load_backbone(path, band_names=band_names, in_chans=in_chans)
        meta = model.rs_meta
        names = meta.get("band_names")
        return BackboneInit(
            "exported", str(path), meta["arch"], int(meta["in_chans"]), tuple(names) if names else None,
            tuple(meta["mean"]), tuple(meta["std"]), dict(meta.get("timm_kwargs") or {}), model.state_dict(),
            meta.get("method"),
        )  # fmt: skip
    from rspretrain.pretrain.run import load_method

    method = load_method(path)
    backbone = method.backbone_to_export()
    check_bands(method.band_names, band_names, str(path), backbone.in_chans, in_chans)
    return BackboneInit(
        "checkpoint", str(path), backbone.arch, backbone.in_chans, method.band_names, tuple(method.mean),
        tuple(method.std), dict(backbone.timm_kwargs), backbone.model.state_dict(), method.method_name,
    )  # fmt: skip


def choose_arch(requested: str | None, source: BackboneInit, default: str = "resnet18") -> str:
    """The architecture to build: the pretrained one, which ``requested`` (if given) must match."""
    if source.arch is None:
        return requested or default
    if requested is not None and requested != source.arch:
        raise ConfigError(f"backbone {requested!r} differs from the {source.arch!r} weights in {source.path}")
    return source.arch


__all__ = ["BackboneInit", "choose_arch", "resolve_init"]
