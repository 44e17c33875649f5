"""Build a dataset from a short spec string (as written in configs and on the command line)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch.utils.data import Dataset

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data.io.in_memory import SourceList, list_sources
from rspretrain.data.io.rasters import RasterTiles, gdal_path, read_raster
from rspretrain.data.pretrain.land_cover import LandCoverTiles
from rspretrain.data.pretrain.scene_collection import SceneCollection
from rspretrain.data.pretrain.unlabeled import UnlabeledImages
from rspretrain.data.scenes.cifar10 import CIFAR10Subset
from rspretrain.data.scenes.eurosat import EuroSAT
from rspretrain.data.scenes.scene_folder import SceneFolder, split_indices
from rspretrain.data.scenes.ucmerced import UCMerced
from rspretrain.data.torchgeo_source import open_torchgeo

#: The spec forms :func:`build_dataset` accepts, as listed in its error message.
SPEC_FORMS = (
    "eurosat",
    "ucmerced",
    "cifar10",
    "folder:PATH",
    "unlabeled:PATH",
    "geotiff:PATH[,PATH...][;PATH...]",
    "landcover:PATH[,PATH...][;PATH...]",
    "shards:DIR",
    "torchgeo:CLASS[{key: value, ...}]",
)

#: The spec forms whose images are files that ``rspretrain prepare`` can write to shards as they are.
IMAGE_FILE_FORMS = ("eurosat", "ucmerced", "cifar10", "folder:PATH", "unlabeled:PATH")
_NAMED = {"eurosat": EuroSAT, "ucmerced": UCMerced, "cifar10": CIFAR10Subset}
#: Spec kinds of georeferenced scenes cut into tiles.
RASTER_KINDS = ("geotiff", "landcover")


#: Parameters that build_dataset sets itself (from the spec, root, split, image_size), never from **kwargs.
_RESERVED = frozenset({"self", "root", "split", "image_size", "path", "source", "paths", "raster", "dataset", "images"})


def _options(spec: str, functions: tuple[Callable, ...], kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """Split ``kwargs`` among ``functions`` by parameter name; unknown names are a :class:`ConfigError`."""
    parts: list[dict[str, Any]] = []
    remaining = dict(kwargs)
    accepted: list[str] = []
    for function in functions:
        names = [p for p in inspect.signature(function).parameters if p not in _RESERVED]
        accepted += names
        parts.append({k: remaining.pop(k) for k in list(remaining) if k in names})
    if remaining:
        raise ConfigError(
            f"dataset {spec!r}: unexpected option(s) {', '.join(sorted(remaining))}; "
            f"accepted: {', '.join(sorted(set(accepted)))}"
        )
    return parts


def _data_path(path: str | Path, root: str | Path | None) -> Path:
    """``path`` as written if it exists (or is absolute, or on object storage: ``s3://...`` becomes GDAL's
    ``/vsis3/...``), else under the data root (``root`` or the default)."""
    path = gdal_path(path)
    if path.is_absolute() or path.exists():
        return path
    from rspretrain.data.io.data_root import default_data_root

    try:
        base = Path(root).expanduser() if root is not None else default_data_root()
    except DataError:
        return path  # no data root either: the reader reports the path as written
    return path if not (base / path).exists() else base / path


def _scenes(spec: str, argument: str) -> list[list[str]]:
    """``"a.tif;b2.tif,b3.tif"`` -> ``[["a.tif"], ["b2.tif", "b3.tif"]]``: scenes split by ``;``, bands by ``,``."""
    scenes = [[p.strip() for p in part.split(",") if p.strip()] for part in argument.split(";")]
    if any(not files for files in scenes):
        raise ConfigError(f"dataset {spec!r}: an empty scene between ';' separators")
    return scenes


def _whole_only(spec: str, split: str) -> None:
    # Unlabeled images and rasters have no split: asking for "val" or "test" would silently return training data.
    if split not in ("train", "all"):
        raise ConfigError(f"dataset {spec!r} has no {split!r} split (only 'train' or 'all', meaning all of it)")


def build_dataset(
    spec: str,
    root: str | Path | None = None,
    split: str = "train",
    image_size: int | None = None,
    **kwargs: Any,
) -> Dataset:
    """Build a dataset from a spec string.

    Specs (names are case-insensitive; a path is taken as written, and a relative one that does not exist from the
    current folder is looked up under ``root``; raster paths may be ``s3://`` URLs, read by GDAL as ``/vsis3/``):

    * ``"eurosat"`` -> :class:`~rspretrain.data.EuroSAT` (``root`` = shared data root, default
      :func:`~rspretrain.data.default_data_root`; ``split`` train/val/test/trainval/all; kwargs e.g.
      ``max_per_class``);
    * ``"ucmerced"`` -> :class:`~rspretrain.data.UCMerced` (``image_size`` defaults to 256; kwargs e.g.
      ``train_ratio``, ``max_per_class``);
    * ``"cifar10"`` -> :class:`~rspretrain.data.CIFAR10Subset` (``split`` train/test/all);
    * ``"folder:PATH"`` -> :class:`~rspretrain.data.SceneFolder`; ``split`` ``"train"`` / ``"test"`` is the
      :func:`~rspretrain.data.split_indices` split (kwargs ``train_fraction`` = 0.8, ``seed`` = 0) as a
      :meth:`~rspretrain.data.InMemoryImageDataset.subset`; ``"all"`` is every image;
    * ``"unlabeled:PATH"`` -> :class:`~rspretrain.data.UnlabeledImages` (split ``"train"`` or ``"all"``);
    * ``"geotiff:PATH[,PATH...]"`` -> :class:`~rspretrain.data.RasterTiles` over
      :func:`~rspretrain.data.read_raster` of the files (stacked when several); kwargs ``tile`` (default
      ``image_size`` or 64), ``stride``, ``max_nodata_fraction``, ``band_names``, ``require_crs``,
      ``expected_bands``; split ``"train"`` or ``"all"``. Several scenes are separated by ``;`` (``a.tif;b_b2.tif,
      b_b3.tif``: scene a, then scene b stacked from two files) and give a
      :class:`~rspretrain.data.SceneCollection` of one tiling per scene, the options applying to each.
    * ``"landcover:PATH[,PATH...]"`` -> :class:`~rspretrain.data.pretrain.land_cover.LandCoverTiles`: the GeoTIFF tiles
      with the class proportions of a land-cover product over each footprint (GeoKR's labels); kwargs
      ``land_cover`` (product raster) + ``scheme`` (``nlcd8``, ``globeland30``, ... or a CSV), or ``labels`` (a
      Parquet file of ``rspretrain landcover-labels``), ``min_land_cover_fraction``, ``supersample``, and the
      ``geotiff:`` kwargs plus ``value_scale``, ``within``. Relative paths that do not exist from the current folder
      are looked up under ``root`` (default: the shared data root), so shipped configs name files in
      ``shared/data``. Split ``"train"`` or ``"all"``. Scenes separated by ``;`` give a
      :class:`~rspretrain.data.SceneCollection`, each scene aligned to ``land_cover`` in its own CRS; with
      ``labels``, give one file per scene, also separated by ``;``. ``within`` (one region in one CRS) is refused
      with several scenes.
    * ``"torchgeo:CLASS"`` or ``"torchgeo:CLASS{key: value, ...}"`` -> a
      :class:`~rspretrain.data.torchgeo_source.TorchGeoSource` over torchgeo's dataset class (``torchgeo.datasets``,
      or a subclass by import path) built with those keyword arguments and ``kwargs``; its ``root`` is the spec's
      (relative ones, and relative ``paths``, found under ``root`` when they do not exist from the current folder),
      else ``root``; ``split`` goes to the class's ``split`` argument;
      a GeoDataset is cut into the chips of a torchgeo sampler (``sampler``, ``sampler_options``); ``band_names``
      and ``value_scale`` override what the adapter derives (:mod:`rspretrain.data.torchgeo_source`).

    Other keyword arguments go to the dataset's constructor (the common ones: ``cache``, ``skip_corrupt``).

    Raises:
        DataError: unknown spec form (the message lists the valid ones), or any data problem of the dataset.
        ConfigError: unknown option or split.
    """
    kind, sep, argument = spec.partition(":")
    kind = kind.strip().lower()
    if kind in _NAMED and not sep:
        cls = _NAMED[kind]
        (options,) = _options(spec, (cls.__init__,), kwargs)
        if image_size is not None or cls is not UCMerced:
            options["image_size"] = image_size  # UCMerced keeps its 256 default unless a size is given
        return cls(root=root, split=split, **options)
    if sep and argument.strip() and kind in RASTER_KINDS:
        scenes = list_raster_scenes(spec, root=root, split=split, image_size=image_size, **kwargs)
        tiles = [scenes.build(i) for i in range(len(scenes))]
        return tiles[0] if len(tiles) == 1 else SceneCollection(tiles)
    if sep and argument.strip() and kind == "torchgeo":
        # the class's own root / paths are found as other specs' paths are (as written, else under the data root)
        return open_torchgeo(argument, split=split, image_size=image_size, data_root=root,
                             resolve_path=lambda path: str(_data_path(path, root)), **kwargs)
    if sep and argument.strip() and kind in ("folder", "unlabeled"):
        if kind == "folder":
            scene_options, split_options = _options(spec, (SceneFolder.__init__, split_indices), kwargs)
            if split not in ("train", "test", "all"):
                raise ConfigError(f"dataset {spec!r}: unknown split {split!r}; expected train, test or all")
            dataset = SceneFolder(_data_path(argument.strip(), root), image_size=image_size, **scene_options)
            if split == "all":
                return dataset
            train, test = split_indices(dataset, **split_options)
            return dataset.subset(train if split == "train" else test)
        if kind == "unlabeled":
            _whole_only(spec, split)
            (options,) = _options(spec, (UnlabeledImages.__init__,), kwargs)
            return UnlabeledImages(_data_path(argument.strip(), root), image_size=image_size, **options)
    raise DataError(f"unknown dataset spec {spec!r}; valid forms: {', '.join(SPEC_FORMS)}")


def list_image_sources(spec: str, root: str | Path | None = None, split: str = "all", **kwargs: Any) -> SourceList:
    """The image files (and labels, classes) a spec names, listed as :func:`build_dataset` would read them but not
    decoded: the input of ``rspretrain prepare``.

    Forms: :data:`IMAGE_FILE_FORMS` (the named sets take their ``split`` and options, e.g. ``max_per_class``;
    ``folder:`` and ``unlabeled:`` take ``extensions`` and are listed whole, ``split`` ``"all"`` or ``"train"``).

    Raises:
        DataError: another spec form, or any listing problem (missing folder, empty folder, bad layout).
        ConfigError: unknown option or split.
    """
    kind, sep, argument = spec.partition(":")
    kind = kind.strip().lower()
    if kind in _NAMED and not sep:
        cls = _NAMED[kind]
        (options,) = _options(spec, (cls.__init__,), kwargs)
        return list_sources(cls, root=root, split=split, **options)
    if sep and argument.strip() and kind in ("folder", "unlabeled"):
        _whole_only(spec, split)
        cls = SceneFolder if kind == "folder" else UnlabeledImages
        (options,) = _options(spec, (cls.__init__,), kwargs)
        options.pop("cache", None)
        return list_sources(cls, _data_path(argument.strip(), root), **options)
    raise DataError(f"{spec!r} cannot be prepared as image files; forms: {', '.join(IMAGE_FILE_FORMS)}")


@dataclass
class RasterScenes:
    """The scenes a ``geotiff:`` / ``landcover:`` spec names, resolved but not read: :meth:`build` tiles one.

    ``rspretrain prepare`` builds each scene in its own process from this; :func:`build_dataset` builds them all.

    Attributes:
        spec: the spec.
        kind: ``"geotiff"`` (:class:`~rspretrain.data.RasterTiles`) or ``"landcover"``
            (:class:`~rspretrain.data.pretrain.land_cover.LandCoverTiles`).
        scenes: per scene, its files (one multi-band file, or single-band files stacked in order).
        labels: per scene, its land-cover labels file (``landcover:`` with ``labels``), else None.
        options: the remaining keyword arguments of every scene's reader and tiling.
    """

    spec: str
    kind: str
    scenes: list[list[Path]]
    labels: list[Path | None]
    options: dict[str, Any]

    def __len__(self) -> int:
        return len(self.scenes)

    def build(self, index: int, **overrides: Any) -> Dataset:
        """Scene ``index``'s tiles; ``overrides`` replace options (``prepare`` reads windows: ``windowed=True``)."""
        options = {**self.options, **overrides}
        files = self.scenes[index]
        if self.kind == "landcover":
            return LandCoverTiles.from_files(files, labels=self.labels[index], **options)
        read_options, tile_options = _options(self.spec, (read_raster, RasterTiles.__init__), options)
        return RasterTiles(read_raster(files, **read_options), **tile_options)


def list_raster_scenes(
    spec: str, root: str | Path | None = None, split: str = "all", image_size: int | None = None, **kwargs: Any
) -> RasterScenes:
    """Resolve a ``geotiff:`` or ``landcover:`` spec (see :func:`build_dataset`) without reading any pixel.

    Raises:
        DataError: another spec form.
        ConfigError: unknown option, a split other than train/all, ``tile`` contradicting ``image_size``, labels
            files not one per scene, ``within`` with several scenes.
    """
    kind, sep, argument = spec.partition(":")
    kind = kind.strip().lower()
    if not (sep and argument.strip() and kind in RASTER_KINDS):
        raise DataError(f"{spec!r} is not a raster spec; forms: geotiff:PATH[,PATH...][;PATH...], "
                        "landcover:PATH[,PATH...][;PATH...]")
    _whole_only(spec, split)
    functions = (LandCoverTiles.from_files,) if kind == "landcover" else (read_raster, RasterTiles.__init__)
    options = {k: v for part in _options(spec, functions, kwargs) for k, v in part.items()}
    if image_size is not None:
        if options.setdefault("tile", image_size) != image_size:
            raise ConfigError(f"dataset {spec!r}: tile={options['tile']} contradicts image_size={image_size}")
    scenes = [[_data_path(p, root) for p in files] for files in _scenes(spec, argument)]
    labels: list[Path | None] = [None] * len(scenes)
    if kind == "landcover":
        if options.get("land_cover") is not None:
            options["land_cover"] = _data_path(options["land_cover"], root)
        if options.get("labels") is not None:
            labels = [_data_path(p.strip(), root) for p in str(options.pop("labels")).split(";")]
            if len(labels) != len(scenes):
                raise ConfigError(f"dataset {spec!r}: {len(labels)} labels file(s) for {len(scenes)} scene(s); "
                                  "give one per scene, separated by ';'")
    if len(scenes) > 1 and options.get("within") is not None:
        raise ConfigError(f"dataset {spec!r}: within is one region in one CRS; it cannot apply to several scenes")
    return RasterScenes(spec, kind, scenes, labels, options)
