"""torchgeo's datasets as rspretrain sources: the ``torchgeo:ClassName{key: value, ...}`` spec.

A torchgeo dataset (A. J. Stewart et al., "TorchGeo: Deep Learning With Geospatial Data", SIGSPATIAL 2022) returns one
sample dict per index: a :class:`~torchgeo.datasets.NonGeoDataset` takes an integer, a
:class:`~torchgeo.datasets.GeoDataset` a spatio-temporal box that a sampler (``RandomGeoSampler``, ``GridGeoSampler``,
...) draws. Its ``"image"`` is a float32 tensor of the raw values, with no value scale and band names spelled as each
dataset spells them. The toolkit's datasets instead hand a whole batch to the DataLoader from ``__getitems__`` and
carry ``band_names`` and ``value_scale``, which the views, the band statistics, the band check and the exports read.
:class:`TorchGeoSource` is the adapter between the two, and :func:`open_torchgeo` builds one from a spec.

Why it is written here by hand: torchgeo has no adapter to another library's contract. Its DataModules fix their own
transforms, splits and samplers per dataset and yield Lightning batches, while pretraining (exact resume keyed on the
step) and the frozen evaluation need a map-style dataset of a fixed length. So a GeoDataset's sampler is drawn once,
seeded, into a list of query boxes (``RandomGeoSampler`` draws from torch's global generator as well, so it is drawn
under a forked, seeded one): index ``i`` is always the same chip, in every epoch, rank and resumed run.

What the adapter adds, and its rules:

- ``band_names``: the ``band_names`` option, else the dataset's ``bands`` (the ones it was asked for), else its
  ``all_bands`` / ``all_band_names`` when their number is the image's; else none (checked by count only). Sentinel-2
  names (a set with a zero-padded ``B01``...``B09`` or ``B8A``) write ``B10`` / ``B11`` as ``S2:B10`` / ``S2:B11``, the
  vocabulary's unambiguous form (:mod:`rspretrain.core.bands`: bare, they are Landsat's thermal bands too).
- ``value_scale`` (the raw value that maps to 1.0): the option, else the largest value of the files' dtype as for
  ``geotiff:`` (255 for 8-bit, 65535 for 16-bit files, 1.0 for floats; read from the first file of a GeoDataset's
  index or of a class-folder dataset), else from the first sample's largest value (at most 1: 1.0; at most 255: 255;
  at most 65535: 65535; above: a ConfigError asking for it). Pass it to match a model's convention, e.g. ``10000``
  for Sentinel-2 reflectance with torchgeo's SSL4EO weights.
- labels: a dataset with ``classes`` whose samples hold one integer ``"label"`` is labelled (scene evaluation needs
  that); anything else (masks, multi-label vectors, boxes) is dropped from the batch.
- ``image_size``: a sample of another size is resized to it (bilinear, antialiased); without it, samples of
  differing sizes in one batch are a DataError.

Nothing is downloaded: ``download: true`` is refused; a missing dataset is a DataError naming where it was looked for.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import Dataset

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data.io.positions import checked_positions
from rspretrain.data.io.rasters import default_value_scale

PREFIX = "torchgeo:"
#: Options the adapter takes itself; every other option goes to the torchgeo class.
ADAPTER_OPTIONS = ("band_names", "value_scale", "image_size", "sampler", "sampler_options")
#: The sampler a GeoDataset gets when none is named: every chip of the area once, in a fixed order.
DEFAULT_SAMPLER = "GridGeoSampler"
#: Chip side (pixels) of a GeoDataset's sampler without ``size`` or ``image_size``.
DEFAULT_CHIP = 64

_SENTINEL2_STYLE = re.compile(r"^b0\d$|^b8a$", re.IGNORECASE)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"torchgeo:EuroSAT{root: data/eurosat, bands: [B04, B03, B02]}"`` -> ``("EuroSAT", {...})``.

    The part after the class name is a YAML flow mapping of keyword arguments (optional).

    Raises:
        ConfigError: no class name, or options that are not one YAML mapping.
    """
    text = (spec[len(PREFIX):] if spec.lower().startswith(PREFIX) else spec).strip()
    name, brace, rest = text.partition("{")
    name = name.strip()
    if not name:
        raise ConfigError(f"dataset {PREFIX}{text!r}: give a torchgeo dataset class, e.g. torchgeo:EuroSAT{{root: PATH}}")
    if not brace:
        return name, {}
    try:
        options = yaml.safe_load("{" + rest)
    except yaml.YAMLError as err:
        raise ConfigError(f"dataset {PREFIX}{text}: the options after {name} are not a YAML mapping "
                          f"({_one_line(err)})") from None
    if not isinstance(options, dict):
        raise ConfigError(f"dataset {PREFIX}{text}: the options after {name} must be one mapping {{key: value, ...}}")
    return name, options


def dataset_classes() -> list[str]:
    """The dataset classes torchgeo.datasets exports (GeoDataset and NonGeoDataset subclasses), sorted."""
    from torchgeo import datasets

    return sorted(
        name for name in datasets.__all__
        if inspect.isclass(getattr(datasets, name, None))
        and issubclass(getattr(datasets, name), (datasets.GeoDataset, datasets.NonGeoDataset))
    )  # fmt: skip


def dataset_class(name: str) -> type:
    """The torchgeo dataset class ``name`` (``"EuroSAT"``), or a subclass of one by its import path
    (``"mypkg.rasters.MyRaster"``).

    Raises:
        ConfigError: no such class (the message lists close names and every class torchgeo.datasets has), or a
            class that is not a torchgeo dataset.
    """
    from torchgeo import datasets

    if "." in name:
        module_name, _, class_name = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"torchgeo:{name}: cannot import it ({_one_line(err)})") from None
    else:
        cls = getattr(datasets, name, None) if name in datasets.__all__ else None
        if cls is None:
            known = dataset_classes()
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(f"torchgeo:{name}: torchgeo.datasets has no dataset class {name!r}; {hint}"
                              f"its {len(known)} dataset classes: {', '.join(known)}")
    if not (inspect.isclass(cls) and issubclass(cls, (datasets.GeoDataset, datasets.NonGeoDataset))):
        raise ConfigError(f"torchgeo:{name}: not a torchgeo dataset (a GeoDataset or NonGeoDataset subclass)")
    return cls


def _constructor_options(name: str, cls: type, options: dict[str, Any], split: str) -> dict[str, Any]:
    """``options`` checked against the class's constructor, with ``split`` added where it takes one."""
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepted = [p for p, v in parameters.items() if v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
    unknown = sorted(k for k in options if k not in accepted) if not takes_any else []
    if unknown:
        raise ConfigError(f"torchgeo:{name}: unexpected option(s) {', '.join(unknown)}; {cls.__name__} takes "
                          f"{', '.join(a for a in accepted if a != 'split') or 'nothing'}, and rspretrain "
                          f"{', '.join(ADAPTER_OPTIONS)}")
    if "split" in options:
        raise ConfigError(f"torchgeo:{name}: give the split as the data split (data.split; evaluation takes train "
                          "and test itself), not as an option")
    if options.get("download"):
        raise ConfigError(f"torchgeo:{name}: download is refused (rspretrain reads local copies only); fetch the "
                          "dataset once with torchgeo, then point root or paths at it")
    options = dict(options)
    if isinstance(options.get("crs"), str):
        from rasterio.crs import CRS

        options["crs"] = CRS.from_user_input(options["crs"])
    if isinstance(options.get("res"), list):
        options["res"] = tuple(options["res"])
    if "split" in parameters:
        options["split"] = split
    elif split not in ("train", "all"):
        raise ConfigError(f"torchgeo:{name}: {cls.__name__} has no splits (no split argument), so no {split!r} "
                          "split; use 'train' or 'all' for all of it")
    return options


def _construct(name: str, cls: type, options: dict[str, Any]):
    """``cls(**options)``, torchgeo's errors turned into one line naming the dataset."""
    from torchgeo.datasets import DatasetNotFoundError

    try:
        return cls(**options)
    except DatasetNotFoundError:
        where = ", ".join(f"{k}={options[k]!r}" for k in ("root", "paths") if k in options) or "its default root"
        raise DataError(f"torchgeo:{name}: no {cls.__name__} data found in {where} (rspretrain never downloads: put "
                        f"a local copy there in torchgeo's {cls.__name__} layout)") from None
    except (AssertionError, ValueError, TypeError, KeyError, IndexError, OSError, RuntimeError) as err:
        given = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "no options"
        raise DataError(f"torchgeo:{name}: {cls.__name__}({given}) failed: {type(err).__name__}: "
                        f"{_one_line(err)}") from None


def _chip_queries(name: str, dataset, sampler: str, options: dict[str, Any], image_size: int | None) -> list:
    """The boxes a GeoDataset's sampler draws, drawn once: GeoSlices ``(x, y, t)``."""
    from torchgeo import samplers

    cls = getattr(samplers, sampler, None) if sampler in samplers.__all__ else None
    single = sorted(n for n in samplers.__all__ if inspect.isclass(getattr(samplers, n))
                    and issubclass(getattr(samplers, n), samplers.GeoSampler) and n != "GeoSampler")
    if cls is None or not issubclass(cls, samplers.GeoSampler) or cls is samplers.GeoSampler:
        raise ConfigError(f"torchgeo:{name}: sampler {sampler!r} is not a torchgeo single-chip sampler; "
                          f"use one of {', '.join(single)}")
    options = dict(options)
    seed = int(options.pop("seed", 0))
    parameters = inspect.signature(cls).parameters
    if "size" in parameters:
        options.setdefault("size", image_size or DEFAULT_CHIP)
    if isinstance(options.get("units"), str):
        try:
            options["units"] = samplers.Units[options["units"].upper()]
        except KeyError:
            raise ConfigError(f"torchgeo:{name}: sampler units {options['units']!r}; use pixels or crs") from None
    if isinstance(options.get("roi"), (list, tuple)):
        import shapely

        options["roi"] = shapely.box(*options["roi"])
    if "generator" in parameters:
        options["generator"] = torch.Generator().manual_seed(seed)
    unknown = sorted(k for k in options if k not in parameters or k == "dataset")
    if unknown:
        raise ConfigError(f"torchgeo:{name}: {sampler} has no option(s) {', '.join(unknown)}; it takes "
                          f"{', '.join(p for p in parameters if p not in ('dataset', 'generator'))}, and seed")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # RandomGeoSampler also picks tiles with torch's global generator
            queries = list(cls(dataset, **options))
    except (AssertionError, ValueError, TypeError, KeyError, IndexError, RuntimeError) as err:
        raise DataError(f"torchgeo:{name}: {sampler}({options}) failed: {type(err).__name__}: "
                        f"{_one_line(err)}") from None
    if not queries:
        raise DataError(f"torchgeo:{name}: {sampler} drew no chip (size {options.get('size')} "
                        f"{getattr(options.get('units'), 'name', 'PIXELS').lower()} larger than every file?)")
    return queries


def open_torchgeo(
    spec: str, split: str = "train", image_size: int | None = None, data_root: str | os.PathLike | None = None,
    resolve_path: Callable[[str], str] | None = None, **options: Any,
) -> TorchGeoSource:
    """Build the torchgeo dataset a spec names and wrap it as a :class:`TorchGeoSource`.

    Args:
        spec: ``torchgeo:ClassName`` or ``torchgeo:ClassName{key: value, ...}`` (a class of torchgeo.datasets, or a
            subclass of one by its import path).
        split: the class's ``split`` argument where it has one; a class without splits is all of it (``"train"`` or
            ``"all"``).
        image_size: samples are resized to this side; a GeoDataset's chips default to it (else 64 px).
        data_root: the class's ``root`` when the spec gives none (``data.root``, ``--data-root``).
        resolve_path: applied to the ``root`` / ``paths`` options (e.g. to find relative paths under a data root).
        options: more keyword arguments of the class (merged with those in the spec; one key in both is an error),
            plus the adapter's own: ``band_names``, ``value_scale``, ``image_size`` (as the argument, for specs
            read where none is passed, e.g. in evaluation) and, for a GeoDataset, ``sampler`` (a torchgeo
            single-chip sampler, default ``GridGeoSampler``) with ``sampler_options`` (its keyword arguments:
            ``size``, ``stride``, ``length``, ``units`` as ``pixels`` / ``crs``, ``roi`` as ``[minx, miny, maxx,
            maxy]``; and ``seed``, default 0).

    Raises:
        ConfigError: unknown class (naming what exists), option or sampler; a split the class lacks; download.
        DataError: the dataset is missing or its class refuses the options (one line, naming it).
    """
    name, inline = parse_spec(spec)
    both = sorted(set(inline) & set(options))
    if both:
        raise ConfigError(f"torchgeo:{name}: option(s) {', '.join(both)} given in the spec and again as options")
    options = {**inline, **options}
    if resolve_path is not None:
        for key in ("root", "paths"):
            value = options.get(key)
            if isinstance(value, str):
                options[key] = resolve_path(value)
            elif isinstance(value, (list, tuple)):
                options[key] = [resolve_path(v) if isinstance(v, str) else v for v in value]
    own = {key: options.pop(key) for key in ADAPTER_OPTIONS if key in options}
    if own.get("image_size") is not None:  # the spec's own size (evaluation passes none)
        if image_size is not None and int(own["image_size"]) != int(image_size):
            raise ConfigError(f"torchgeo:{name}: image_size {own['image_size']} in the options contradicts "
                              f"image_size {image_size}")
        image_size = int(own["image_size"])
    cls = dataset_class(name)
    if data_root is not None and "root" not in options and "root" in inspect.signature(cls).parameters:
        options["root"] = os.fspath(data_root)
    dataset = _construct(name, cls, _constructor_options(name, cls, options, split))

    from torchgeo.datasets import GeoDataset

    queries = None
    if isinstance(dataset, GeoDataset):
        sampler_options = own.get("sampler_options") or {}
        if not isinstance(sampler_options, Mapping):
            raise ConfigError(f"torchgeo:{name}: sampler_options must be a mapping, got {sampler_options!r}")
        queries = _chip_queries(name, dataset, str(own.get("sampler") or DEFAULT_SAMPLER), dict(sampler_options),
                                image_size)
    elif own.get("sampler") is not None or own.get("sampler_options"):
        raise ConfigError(f"torchgeo:{name}: a NonGeoDataset is indexed by number; sampler applies to GeoDatasets")
    return TorchGeoSource(dataset, f"{PREFIX}{name}", queries=queries, band_names=own.get("band_names"),
                          value_scale=own.get("value_scale"), image_size=image_size)


class TorchGeoSource(Dataset):
    """A torchgeo dataset behind the toolkit's dataset contract (see the module docstring for the rules).

    Items are the torchgeo dataset's own (a NonGeoDataset's indices) or the chips of a GeoDataset's sampler, drawn
    once (``queries``). :meth:`__getitems__` returns ``{"image": float32 (B, C, H, W)}`` of raw values, plus ``"label"``
    int64 ``(B,)`` for a labelled set and, for chips, ``"bounds"`` float64 ``(B, 4)`` (minx, miny, maxx, maxy in the
    dataset's CRS) and ``"crs"`` (B strings), as :class:`~rspretrain.data.RasterTiles` gives them. Use
    :func:`~rspretrain.data.io.collate.collate_batched` as the DataLoader's ``collate_fn``.

    Attributes:
        dataset: the torchgeo dataset.
        source: the spec (for messages).
        queries: a GeoDataset's chips, or None.
        band_names: names of the C bands, or None.
        value_scale: the raw value that maps to 1.0.
        classes: class names of a labelled set, else None.
        image_size: the side every image is resized to, or None.

    Raises:
        DataError: samples without an ``"image"`` of shape (C, H, W); band names whose number differs from the
            image's bands.
        ConfigError: ``value_scale`` not positive, or needed and not derivable.
    """

    def __init__(self, dataset, source: str, queries: Sequence | None = None, band_names: Sequence[str] | None = None,
                 value_scale: float | None = None, image_size: int | None = None) -> None:
        self.dataset, self.source = dataset, source
        self.queries = list(queries) if queries is not None else None
        self.image_size = None if image_size is None else int(image_size)
        if len(self) == 0:
            raise DataError(f"{source}: the dataset is empty")
        first = self._sample(0)
        image = self._raw_image(first, 0)
        self.band_names = self._band_names(band_names, image.shape[0])
        self.value_scale = self._value_scale(value_scale, image)
        label = first.get("label")
        scalar = isinstance(label, (int, np.integer)) or (
            isinstance(label, torch.Tensor) and label.ndim == 0 and not label.is_floating_point())
        classes = getattr(dataset, "classes", None)
        self.classes: list[str] | None = [str(c) for c in classes] if scalar and classes is not None else None

    # -- the contract -------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.queries) if self.queries is not None else len(self.dataset)

    @property
    def labelled(self) -> bool:
        return self.classes is not None

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes is not None else None

    @cached_property
    def labels(self) -> torch.Tensor | None:
        """int64 ``(N,)`` class indices of a labelled set (a class-folder set's ``targets``, else one pass over the
        samples), or None."""
        if not self.labelled:
            return None
        targets = getattr(self.dataset, "targets", None)
        if targets is not None and len(targets) == len(self):
            return torch.as_tensor(list(targets), dtype=torch.int64)
        return torch.stack([torch.as_tensor(self._sample(i)["label"]).long() for i in range(len(self))])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        positions = checked_positions(indices, len(self), "samples").tolist()
        samples = [self._sample(i) for i in positions]
        images = [self._image(sample, i) for sample, i in zip(samples, positions)]
        sizes = sorted({tuple(image.shape) for image in images})
        if len(sizes) > 1:
            raise DataError(f"{self.source}: samples of different shapes {sizes[0]} and {sizes[-1]} in one batch; set "
                            "the image size (data.image_size, or image_size in the options) to resize them")
        batch: dict[str, Any] = {"image": torch.stack(images)}
        if self.labelled:
            batch["label"] = torch.stack([torch.as_tensor(s["label"]).long().reshape(()) for s in samples])
        if self.queries is not None:
            boxes = [self.queries[i] for i in positions]
            batch["bounds"] = torch.tensor([[q[0].start, q[1].start, q[0].stop, q[1].stop] for q in boxes],
                                           dtype=torch.float64)
            batch["crs"] = [self._crs] * len(positions)
        return batch

    def __getitem__(self, index: int) -> dict[str, Any]:
        batch = self.__getitems__([index])
        return {k: v[0] for k, v in batch.items()}

    def __repr__(self) -> str:
        kind = f"{len(self)} chips" if self.queries is not None else f"{len(self)} samples"
        return f"TorchGeoSource({self.source}: {kind}, bands {self.band_names}, value_scale {self.value_scale:g})"

    # -- reading ------------------------------------------------------------------------------------------------------
    @cached_property
    def _crs(self) -> str:
        crs = getattr(self.dataset, "crs", None)
        return crs.to_string() if hasattr(crs, "to_string") else str(crs or "")

    def _sample(self, position: int) -> dict[str, Any]:
        key = self.queries[position] if self.queries is not None else position
        sample = self.dataset[key]
        if not isinstance(sample, Mapping) or "image" not in sample:
            keys = sorted(sample) if isinstance(sample, Mapping) else type(sample).__name__
            raise DataError(f"{self.source}: sample {position} has no 'image' (it has {keys}); a mask-only dataset "
                            "is a target, not a source of images")
        return sample

    def _raw_image(self, sample: Mapping, position: int) -> torch.Tensor:
        image = torch.as_tensor(sample["image"])
        if image.ndim != 3:
            raise DataError(f"{self.source}: sample {position}'s image has shape {tuple(image.shape)}; only single "
                            "images (C, H, W) are supported (not time series)")
        return image

    def _image(self, sample: Mapping, position: int) -> torch.Tensor:
        image = self._raw_image(sample, position).to(torch.float32)
        size = self.image_size
        if size is not None and tuple(image.shape[-2:]) != (size, size):
            image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False)[0]
        return image

    def _band_names(self, given: Sequence[str] | None, channels: int) -> tuple[str, ...] | None:
        if given is not None:
            names = [str(n) for n in given]
            if len(names) != channels:
                raise ConfigError(f"{self.source}: band_names lists {len(names)} bands {names} but its images have "
                                  f"{channels}")
        else:
            names = None
            for attribute in ("bands", "all_bands", "all_band_names"):
                value = getattr(self.dataset, attribute, None)
                if isinstance(value, (list, tuple)) and len(value) == channels and value:
                    names = [str(n) for n in value]
                    break
            if names is None:
                return None
        if any(_SENTINEL2_STYLE.match(n) for n in names):
            names = [f"S2:{n}" if n.upper() in ("B10", "B11") else n for n in names]
        return tuple(names)

    def _value_scale(self, given: float | None, image: torch.Tensor) -> float:
        if given is not None:
            if isinstance(given, bool) or not float(given) > 0:
                raise ConfigError(f"{self.source}: value_scale must be > 0, got {given!r}")
            return float(given)
        dtype = self._file_dtype()
        if dtype is not None:
            return default_value_scale(dtype)
        peak = float(image.max()) if image.numel() else 0.0
        for scale in (1.0, 255.0, 65535.0):
            if peak <= scale:
                return scale
        raise ConfigError(f"{self.source}: its first image reaches {peak:g}; give value_scale (the raw value that maps "
                          "to 1.0, e.g. 10000 for Sentinel-2 reflectance)")

    def _file_dtype(self) -> np.dtype | None:
        """The dtype of the dataset's first file (a GeoDataset's index, a class-folder set's images), if it has
        files rasterio reads."""
        index = getattr(self.dataset, "index", None)
        path = None
        if index is not None and "filepath" in getattr(index, "columns", ()) and len(index):
            path = index["filepath"].iloc[0]
        elif getattr(self.dataset, "imgs", None):
            path = self.dataset.imgs[0][0]
        if path is None:
            return None
        import rasterio

        try:
            with rasterio.open(path) as source:
                return np.result_type(*source.dtypes)
        except Exception:  # noqa: BLE001 - not a raster rasterio reads: fall back to the values
            return None


__all__ = ["ADAPTER_OPTIONS", "PREFIX", "TorchGeoSource", "dataset_class", "open_torchgeo", "parse_spec"]
