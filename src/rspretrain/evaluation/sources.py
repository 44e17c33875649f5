"""Turn what a user points ``rspretrain evaluate`` at into encoders to score.

A source is a pretraining checkpoint (``.ckpt``), an exported backbone (``.safetensors``), or
``random:ARCH``. Every report also gets a ``random-init`` encoder of the same architecture,
band count and input size, so each number stands next to what no pretraining gives.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rspretrain.errors import ConfigError
from rspretrain.evaluation.features import EncoderSpec
from rspretrain.nn.backbones import Backbone

RANDOM_INIT_SEED = 0


def random_init_spec(arch: str, in_chans: int, image_size: int, mean, std, band_names=None) -> EncoderSpec:
    """A randomly initialised backbone (fixed seed) with the given input conventions."""
    state = torch.random.get_rng_state()
    torch.manual_seed(RANDOM_INIT_SEED)
    try:
        encoder = Backbone(arch, in_chans=in_chans, image_size=image_size)
    finally:
        torch.random.set_rng_state(state)
    return EncoderSpec("random-init", encoder.eval(), tuple(mean), tuple(std), image_size,
                       tuple(band_names) if band_names else None)


def encoder_specs(source: str, image_size: int | None = None, with_random_init: bool = True) -> list[EncoderSpec]:
    """Encoders for ``source`` (plus the random-init row unless disabled)."""
    if source.startswith("random:"):
        arch = source.split(":", 1)[1]
        size = image_size or 64
        return [random_init_spec(arch, 3, size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))]
    path = Path(source)
    if path.suffix == ".safetensors":
        from rspretrain.export import load_backbone

        model = load_backbone(path)
        meta = model.rs_meta
        arch, in_chans = meta["arch"], meta["in_chans"]
        size = image_size or meta["input_size"][-1]
        name = f"{meta.get('method') or 'pretrained'}"
        mean, std, bands = meta["mean"], meta["std"], meta.get("band_names")
        spec = EncoderSpec(name, model.eval(), tuple(mean), tuple(std), size, tuple(bands) if bands else None)
    elif path.suffix == ".ckpt" or path.is_file():
        from rspretrain.train import load_method

        method = load_method(path)
        backbone = method.backbone_to_export().eval()
        arch, in_chans = backbone.arch, backbone.in_chans
        size = image_size or method.views.image_size
        mean, std, bands = method.mean, method.std, method.band_names
        spec = EncoderSpec(method.method_name, backbone, mean, std, size, bands)
    else:
        raise ConfigError(f"{source}: not a checkpoint (.ckpt), exported backbone (.safetensors) or random:ARCH")
    specs = [spec]
    if with_random_init:
        specs.append(random_init_spec(arch, in_chans, size, mean, std, bands))
    return specs
