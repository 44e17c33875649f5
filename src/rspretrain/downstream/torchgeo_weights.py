"""torchgeo's published pretrained weights, read from a local file, as an encoder to score beside ours.

``rspretrain evaluate torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO --weights-file PATH`` scores one of torchgeo's
weights (``torchgeo.models``: SSL4EO-S12 MoCo / DINO / MAE, SSL4EO-L, SeCo, Satlas, ...) as a baseline. The weights
enum's ``meta`` gives the timm architecture (``model``), the band count (``in_chans``) and the bands; its
``transforms`` give the preprocessing. The file is the one torchgeo publishes at the enum's ``url``: a state dict of
the timm model saved with ``torch.save``. It is read from disk only; torchgeo's ``get_state_dict`` (a download) is never
called.

Preprocessing. The transforms are Resize / CenterCrop / Normalize steps; the Normalize steps compose into one per-band
``(x - a) / b`` of the raw values. In the toolkit's convention (raw values divided by a value scale, then ``(x - mean)
/ std``) the value scale is ``b`` where ``a`` is 0 and ``b`` one number (10000 for the SSL4EO Sentinel-2 weights, 255
for the Landsat ones), the smallest ``b`` where ``a`` is 0 (Satlas: 255, the other bands' std then ``b / 255``), else 1
(raw units: SeCo, SoftCon, Sentinel-1 in dB); ``mean = a / scale``, ``std = b / scale``. Scene evaluation divides by
the *data's* value scale, so the weights see exactly torchgeo's input when the data is read at that scale (e.g.
``value_scale: 10000`` in a ``torchgeo:EuroSAT`` spec for the SSL4EO Sentinel-2 weights). The input size is the last
CenterCrop's (else the last Resize's, else 224); the scene protocols resize whole images to it, so torchgeo's
"Resize 256, CenterCrop 224" becomes one resize to 224 (no border is cut).

Bands. The enum's band names are read in the band vocabulary (:mod:`rspretrain.core.bands`) with the sensor its name
gives: Sentinel-2 weights' ``B1`` ... ``B12``, ``B8a`` become ``S2:B01`` ... ``S2:B12``, ``S2:B8A`` (``B8`` is NIR,
not Landsat's panchromatic band), Landsat 8/9 OLI ones ``L8:B1`` ...; Landsat 5 TM / 7 ETM+ numbers, which mean other
bands than OLI's, are kept as ``TM:B1`` / ``ETM:B1``, so they only ever match themselves. The data's band names are
then checked against them as for any model (a BandMismatchError naming both lists).

Scorable are the weights whose ``meta["model"]`` is a timm architecture and whose transforms are only these steps
(ResNet-18/50/152 and ViT weights); the others (DOFA, CROMA, Aurora, Swin V2 of torchvision, U-Nets, ...) are refused
with the list of scorable ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.downstream.frozen.features import EncoderSpec
from rspretrain.nn.backbones import is_transformer

PREFIX = "torchgeo:"
#: The input side of weights whose transforms fix none.
DEFAULT_INPUT_SIZE = 224


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def weights_enums() -> dict[str, Any]:
    """torchgeo's weights enums by class name (``{"ResNet18_Weights": ResNet18_Weights, ...}``)."""
    from torchgeo import models
    from torchvision.models._api import WeightsEnum

    return {name: getattr(models, name) for name in sorted(models.__all__)
            if isinstance(getattr(models, name), type) and issubclass(getattr(models, name), WeightsEnum)
            and getattr(models, name) is not WeightsEnum}


def _steps(weight) -> list:
    transforms = weight.transforms
    return list(transforms) if isinstance(transforms, torch.nn.Sequential) else [transforms]


def unscorable_reason(weight) -> str | None:
    """Why ``weight`` cannot be scored as a timm backbone with this preprocessing, or None."""
    import timm
    import torchvision.transforms.v2 as T

    arch = weight.meta.get("model")
    if not (isinstance(arch, str) and timm.is_model(arch)):
        return f"its model {arch!r} is not a timm architecture"
    if not isinstance(weight.meta.get("in_chans"), int):
        return "its meta has no in_chans"
    others = [type(s).__name__ for s in _steps(weight) if s is not None
              and not isinstance(s, (T.Resize, T.CenterCrop, T.Normalize, torch.nn.Identity))]
    if others:
        return f"its transforms include {', '.join(others)} (only Resize, CenterCrop and Normalize are read)"
    return None


def resolve_weights(name: str):
    """The weights enum member ``"ResNet18_Weights.SENTINEL2_RGB_MOCO"`` names.

    Raises:
        ConfigError: an unknown enum or member (naming what exists), or weights that are not scorable (naming those
            that are).
    """
    text = name.removeprefix(PREFIX)
    enum_name, dot, member = text.partition(".")
    enums = weights_enums()
    if not dot or enum_name not in enums:
        raise ConfigError(f"torchgeo:{text}: no such torchgeo weights; name them ENUM.MEMBER, e.g. "
                          f"torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO; enums: {', '.join(enums)}")
    enum = enums[enum_name]
    scorable = [w.name for w in enum if unscorable_reason(w) is None]
    if member not in enum.__members__:
        raise ConfigError(f"torchgeo:{text}: {enum_name} has no {member!r}; it has "
                          f"{', '.join(w.name for w in enum)} (scorable here: {', '.join(scorable) or 'none'})")
    weight = enum[member]
    reason = unscorable_reason(weight)
    if reason is not None:
        everywhere = [f"{n}.{w.name}" for n, e in enums.items() for w in e if unscorable_reason(w) is None]
        raise ConfigError(f"torchgeo:{text}: not scorable as a timm backbone ({reason}); scorable weights: "
                          f"{', '.join(everywhere)}")
    return weight


def preprocessing(weight) -> tuple[float, tuple[float, ...], tuple[float, ...], int]:
    """``(value_scale, mean, std, input_size)`` of ``weight``'s transforms (see the module docstring)."""
    import torchvision.transforms.v2 as T

    bands = int(weight.meta["in_chans"])
    offset = torch.zeros(bands, dtype=torch.float64)
    scale = torch.ones(bands, dtype=torch.float64)
    sizes: dict[type, int] = {}
    for step in _steps(weight):
        if isinstance(step, T.Normalize):  # (x - a) / b, then (. - m) / s  ==  (x - (a + m b)) / (b s)
            mean = torch.as_tensor(step.mean, dtype=torch.float64).reshape(-1)
            std = torch.as_tensor(step.std, dtype=torch.float64).reshape(-1)
            offset, scale = offset + mean * scale, scale * std
        elif isinstance(step, (T.Resize, T.CenterCrop)):
            sizes[type(step)] = int(step.size if isinstance(step.size, int) else step.size[0])
    size = sizes.get(T.CenterCrop, sizes.get(T.Resize, DEFAULT_INPUT_SIZE))
    value_scale = float(scale.min()) if bool((offset == 0).all()) else 1.0
    mean = tuple(float(v) for v in (offset / value_scale).expand(bands))
    std = tuple(float(v) for v in (scale / value_scale).expand(bands))
    return value_scale, mean, std, size


def band_names(weight) -> tuple[str, ...] | None:
    """The enum's band names in the band vocabulary's terms for its sensor (see the module docstring), or None."""
    names = weight.meta.get("bands")
    if not names:
        return None
    sensor = weight.name.upper()
    out = []
    for name in (str(n) for n in names):
        number = re.fullmatch(r"[Bb](\d{1,2}|8[Aa])", name)
        if number is None:
            out.append(name)
        elif sensor.startswith("SENTINEL2"):
            value = number.group(1).upper()
            out.append(f"S2:B{value}" if value == "8A" else f"S2:B{int(value):02d}")
        elif sensor.startswith("LANDSAT_OLI"):
            out.append(f"L8:B{int(number.group(1))}")
        elif sensor.startswith("LANDSAT_TM"):
            out.append(f"TM:{name}")
        elif sensor.startswith("LANDSAT_ETM"):
            out.append(f"ETM:{name}")
        else:
            out.append(name)
    return tuple(out)


def load_weights_file(weight, path: str | Path) -> torch.nn.Module:
    """A timm model (``num_classes=0``, eval mode) holding the state dict in ``path``, in ``weight``'s layout.

    Raises:
        DataError: no such file, not a torch file, not a state dict, or a missing / unexpected / misshapen key
            (named), e.g. a file of other weights.
    """
    import timm

    path = Path(path)
    label = f"{type(weight).__name__}.{weight.name}"
    if not path.is_file():
        raise DataError(f"{path}: no such weights file (for torchgeo:{label}; its published copy is {weight.url})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle, zip and torch errors all mean "not a weights file"
        raise DataError(f"{path}: not a torch weights file ({type(err).__name__}: {_one_line(err)[:200]})") from None
    arch, in_chans = weight.meta["model"], int(weight.meta["in_chans"])
    model = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans)
    expected = model.state_dict()
    layout = f"the layout of torchgeo:{label} (a state dict of timm's {arch} with {in_chans} input bands)"
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = sorted(map(str, state))[:5] if isinstance(state, dict) else type(state).__name__
        raise DataError(f"{path}: not in {layout}: it holds {found}, not tensors by parameter name")
    classifier = (model.pretrained_cfg or {}).get("classifier") or "fc"
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise DataError(f"{path}: not in {layout}: missing key {missing[0]!r} ({len(missing)} of {len(expected)} "
                        "missing)")
    unexpected = [k for k in state if k not in expected and not k.startswith(f"{classifier}.")]
    if unexpected:
        raise DataError(f"{path}: not in {layout}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected)")
    for key, tensor in expected.items():
        if key in state and tuple(state[key].shape) != tuple(tensor.shape):
            raise DataError(f"{path}: not in {layout}: {key!r} has shape {tuple(state[key].shape)}, expected "
                            f"{tuple(tensor.shape)}")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return model.eval()


def torchgeo_weights_spec(name: str, weights_file: str | Path | None, image_size: int | None = None) -> EncoderSpec:
    """The encoder of ``torchgeo:ENUM.MEMBER`` read from ``weights_file``, with the weights' preprocessing.

    Raises:
        ConfigError: unknown or unscorable weights; no ``weights_file``; an ``image_size`` other than a transformer's
            own.
        DataError: the file is missing or not in the weights' layout.
    """
    weight = resolve_weights(name)
    label = f"{type(weight).__name__}.{weight.name}"
    if weights_file is None:
        raise ConfigError(f"torchgeo:{label}: give its weights file with --weights-file PATH (rspretrain never "
                          f"downloads; torchgeo publishes it at {weight.url})")
    value_scale, mean, std, size = preprocessing(weight)
    arch = weight.meta["model"]
    if image_size is not None and image_size != size and is_transformer(arch):
        raise ConfigError(f"torchgeo:{label}: {arch} was trained at {size} px; its position embeddings fix that "
                          f"size, so --image-size {image_size} cannot be used with it")
    model = load_weights_file(weight, weights_file)
    model.rs_arch = arch
    return EncoderSpec(label, model, mean, std, image_size or size, band_names(weight), value_scale)


__all__ = ["band_names", "load_weights_file", "preprocessing", "resolve_weights", "torchgeo_weights_spec",
           "unscorable_reason", "weights_enums"]
