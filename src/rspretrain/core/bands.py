"""One band vocabulary: the names sensors and datasets give their bands, mapped to one canonical name each.

Exports, datasets and GeoTIFF descriptions name bands differently (``"red"``, ``"Red"``, Sentinel-2's ``"B04"``,
Landsat 8/9's ``"B4"``); :func:`canonical_band` maps each to one name so that :func:`check_bands`, the single band
check of the toolkit (exports, evaluation, fine-tuning, dense tasks), compares meanings rather than spellings, and
the colour augmentations find the RGB bands of any sensor (:func:`rgb_indices`).

The rules:

- names compare case-insensitively, ignoring ``-``, ``_`` and spaces (``"Red Edge 1"`` = ``red_edge1``);
- Sentinel-2 MSI band IDs are zero-padded (``B01`` ... ``B12``, ``B8A``, as in the SAFE product and torchgeo);
- Landsat 8/9 OLI/TIRS band numbers are not (``B1`` ... ``B9``);
- ``B10`` and ``B11`` mean different bands on the two sensors (Sentinel-2: cirrus, SWIR 1; Landsat: thermal 1, 2):
  bare, they stay as written and match only themselves; ``S2:B11`` / ``L8:B10`` (any of the prefixes
  ``S2``, ``L8``, ``L9``) name them without doubt;
- any other name (``"ndvi"``, ``"vv"``) stays as written, lower-cased.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rspretrain.core.errors import BandMismatchError

_COMMON = {
    "coastal": ("coastal", "coastal_aerosol", "aerosol", "ca"),
    "blue": ("blue", "b"),
    "green": ("green", "g"),
    "red": ("red", "r"),
    "red_edge1": ("red_edge1", "rededge1", "re1", "vre1"),
    "red_edge2": ("red_edge2", "rededge2", "re2", "vre2"),
    "red_edge3": ("red_edge3", "rededge3", "re3", "vre3"),
    "nir": ("nir", "near_infrared", "nir1"),
    "nir_narrow": ("nir_narrow", "narrow_nir", "nir08", "re4", "red_edge4"),
    "water_vapour": ("water_vapour", "water_vapor", "wv"),
    "cirrus": ("cirrus",),
    "swir1": ("swir1", "swir16", "swir_1"),
    "swir2": ("swir2", "swir22", "swir_2"),
    "pan": ("pan", "panchromatic"),
    "tir1": ("tir1", "thermal1", "lwir1", "lwir11"),
    "tir2": ("tir2", "thermal2", "lwir2", "lwir12"),
}
_SENTINEL2 = {
    "b01": "coastal", "b02": "blue", "b03": "green", "b04": "red", "b05": "red_edge1", "b06": "red_edge2",
    "b07": "red_edge3", "b08": "nir", "b8a": "nir_narrow", "b09": "water_vapour", "b10": "cirrus", "b11": "swir1",
    "b12": "swir2",
}
_LANDSAT89 = {
    "b1": "coastal", "b2": "blue", "b3": "green", "b4": "red", "b5": "nir", "b6": "swir1", "b7": "swir2",
    "b8": "pan", "b9": "cirrus", "b10": "tir1", "b11": "tir2",
}
_PREFIXED = {**{f"s2:{k}": v for k, v in _SENTINEL2.items()},
             **{f"{p}:{k}": v for p in ("l8", "l9") for k, v in _LANDSAT89.items()}}
_ALIASES = {alias.replace("_", ""): name for name, aliases in _COMMON.items() for alias in aliases}
_AMBIGUOUS = {"b10", "b11"}
_UNPADDED = {k: v for k, v in _LANDSAT89.items() if k not in _AMBIGUOUS}
_PADDED = {k: v for k, v in _SENTINEL2.items() if k not in _AMBIGUOUS}


def canonical_band(name: str) -> str:
    """The canonical name of a band (``"B04"`` -> ``"red"``, ``"NIR"`` -> ``"nir"``); unknown names lower-cased."""
    key = re.sub(r"[\s_\-]", "", str(name).strip().lower())
    if key in _PREFIXED:
        return _PREFIXED[key]
    if key in _ALIASES:
        return _ALIASES[key]
    if key in _PADDED:
        return _PADDED[key]
    if key in _UNPADDED:
        return _UNPADDED[key]
    return key


def canonical_bands(names: Sequence[str]) -> tuple[str, ...]:
    return tuple(canonical_band(n) for n in names)


def same_bands(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two band lists name the same bands in the same order."""
    return len(a) == len(b) and canonical_bands(a) == canonical_bands(b)


def check_bands(expected: Sequence[str] | None, actual: Sequence[str] | None, where: str, in_chans: int | None = None,
                actual_count: int | None = None) -> None:
    """Raise :class:`BandMismatchError` naming ``where`` if the data's bands differ in count or meaning/order from
    the model's. Names are compared through :func:`canonical_band`; a side without names is checked by count only."""
    if in_chans is not None and actual_count is not None and in_chans != actual_count:
        named = f" (data {list(actual)}, model {list(expected)})" if expected is not None and actual is not None else ""
        raise BandMismatchError(f"{where}: data has {actual_count} bands but the model expects {in_chans}{named}")
    if expected is None or actual is None:
        return
    if len(expected) != len(actual):
        raise BandMismatchError(
            f"{where}: data has {len(actual)} bands {list(actual)} but the model expects {len(expected)} {list(expected)}"
        )
    if not same_bands(expected, actual):
        raise BandMismatchError(
            f"{where}: band order {list(actual)} (read as {list(canonical_bands(actual))}) differs from the model's "
            f"{list(expected)} (read as {list(canonical_bands(expected))})"
        )


def rgb_indices(band_names: Sequence[str] | None, in_chans: int) -> tuple[int, int, int] | None:
    """Indices of red, green, blue among ``band_names`` (None if any is missing).

    Without band names, a 3-band input is taken as RGB; anything else has no colour bands.
    """
    if band_names is None:
        return (0, 1, 2) if in_chans == 3 else None
    canonical = canonical_bands(band_names)
    try:
        return tuple(canonical.index(colour) for colour in ("red", "green", "blue"))  # type: ignore[return-value]
    except ValueError:
        return None
