"""Turn what a user points ``rspretrain evaluate`` at into encoders to score.

A source is a pretraining checkpoint (``.ckpt``), an exported backbone (``.safetensors``),
``random:ARCH``, ``timm:ARCH`` (timm's own pretrained weights, e.g. ImageNet; they download
from the Hugging Face hub on first use), or ``torchgeo:ENUM.MEMBER`` (torchgeo's published weights, read from a local
``weights_file``: :mod:`rspretrain.downstream.torchgeo_weights`). Every report also gets a ``random-init`` encoder of
the same architecture, band count and input size, so each number stands next to what no pretraining gives.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.downstream.frozen.features import EncoderSpec
from rspretrain.nn.backbones import Backbone

RANDOM_INIT_SEED = 0


def random_init_spec(arch: str, in_chans: int, image_size: int, mean, std, band_names=None,
                     value_scale: float | None = None) -> EncoderSpec:
    """A randomly initialised backbone (fixed seed) with the given input conventions."""
    state = torch.random.get_rng_state()
    torch.manual_seed(RANDOM_INIT_SEED)
    try:
        encoder = Backbone(arch, in_chans=in_chans, image_size=image_size)
    finally:
        torch.random.set_rng_state(state)
    return EncoderSpec("random-init", encoder.eval(), tuple(mean), tuple(std), image_size,
                       tuple(band_names) if band_names else None, value_scale)


def timm_pretrained_spec(arch: str, image_size: int | None = None) -> EncoderSpec:
    """timm's pretrained weights for ``arch`` (RGB), with the mean/std/input size of its ``pretrained_cfg``.

    Raises:
        DataError: the weights cannot be loaded (no network and no local Hugging Face cache, or no such weights).
    """
    import timm

    from rspretrain.data.io.in_memory import RGB_BANDS
    from rspretrain.nn.backbones import timm_kwargs_for

    try:
        model = timm.create_model(arch, pretrained=True, num_classes=0, **timm_kwargs_for(arch, image_size))
    except Exception as err:  # noqa: BLE001 - hub, network and registry errors all mean "cannot load"
        message = " ".join(str(err).split())[:200]
        raise DataError(f"timm:{arch}: could not load timm's pretrained weights ({type(err).__name__}: {message}); "
                        f"they download from the Hugging Face hub on first use -- or use random:{arch}") from None
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    size = image_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    model.rs_arch = arch
    return EncoderSpec(f"timm-{arch}", model.eval(), tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                       tuple(cfg.get("std", (0.229, 0.224, 0.225))), size, RGB_BANDS, 255.0)


def encoder_specs(source: str, image_size: int | None = None, with_random_init: bool = True,
                  weights_file: str | Path | None = None) -> list[EncoderSpec]:
    """Encoders for ``source`` (plus the random-init row unless disabled); ``weights_file`` is the local file of a
    ``torchgeo:ENUM.MEMBER`` source (and of no other)."""
    if weights_file is not None and not source.startswith("torchgeo:"):
        raise ConfigError(f"--weights-file {weights_file}: it is the file of a torchgeo:ENUM.MEMBER source, not of "
                          f"{source}")
    if source.startswith("torchgeo:"):
        from rspretrain.downstream.torchgeo_weights import torchgeo_weights_spec

        spec = torchgeo_weights_spec(source, weights_file, image_size)
        specs = [spec]
        if with_random_init:
            specs.append(random_init_spec(spec.encoder.rs_arch, len(spec.mean), spec.image_size, spec.mean, spec.std,
                                          spec.band_names, spec.value_scale))
        return specs
    if source.startswith("random:"):
        arch = source.split(":", 1)[1]
        size = image_size or 64
        return [random_init_spec(arch, 3, size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))]
    if source.startswith("timm:"):
        spec = timm_pretrained_spec(source.split(":", 1)[1], image_size)
        specs = [spec]
        if with_random_init:
            specs.append(random_init_spec(spec.encoder.rs_arch, 3, spec.image_size, spec.mean, spec.std,
                                          spec.band_names, spec.value_scale))
        return specs
    path = Path(source)
    if path.suffix == ".safetensors":
        from rspretrain.pretrain.export import load_backbone

        model = load_backbone(path)
        meta = model.rs_meta
        arch, in_chans = meta["arch"], meta["in_chans"]
        size = image_size or meta["input_size"][-1]
        name = f"{meta.get('method') or 'pretrained'}"
        mean, std, bands = meta["mean"], meta["std"], meta.get("band_names")
        spec = EncoderSpec(name, model.eval(), tuple(mean), tuple(std), size, tuple(bands) if bands else None,
                           meta.get("value_scale"))
    elif path.suffix == ".ckpt" or path.is_file():
        from rspretrain.pretrain.run import load_method

        method = load_method(path)
        backbone = method.backbone_to_export().eval()
        arch, in_chans = backbone.arch, backbone.in_chans
        size = image_size or method.views.image_size
        mean, std, bands = method.mean, method.std, method.band_names
        spec = EncoderSpec(method.method_name, backbone, mean, std, size, bands,
                           float(method.hparams.get("value_scale", 255.0)))
    else:
        raise ConfigError(
            f"{source}: not a checkpoint (.ckpt), exported backbone (.safetensors), random:ARCH, timm:ARCH or "
            "torchgeo:ENUM.MEMBER"
        )
    specs = [spec]
    if with_random_init:
        specs.append(random_init_spec(arch, in_chans, size, mean, std, bands, spec.value_scale))
    return specs
