"""Georeferenced rasters (GeoTIFF and other GDAL formats) of any band count and dtype, and tiles cut from them.

Multispectral imagery (Landsat 8 OLI bands, 13-band Sentinel-2 L1C chips, ...) does not fit the 8-bit RGB path of
:mod:`rspretrain.data.io.decode`. :func:`read_raster` reads one multi-band file, or stacks single-band files that
share one pixel grid (e.g. Landsat's per-band GeoTIFFs), with :mod:`rasterio` (S. Gillies et al., "Rasterio:
geospatial raster I/O for Python programmers", Mapbox, 2013-), keeping values, dtype, CRS, transform and nodata.
:class:`RasterTiles` cuts the raster into fixed-size tiles for pretraining (e.g. GeoKR: W. Li, K. Chen, H. Chen, Z.
Shi, "Geographical Knowledge-Driven Representation Learning for Remote Sensing Images", IEEE TGRS 60, 2022).

Nothing is resampled: files whose grids differ are rejected, since warping changes values and is a modelling choice
the caller should make explicitly (e.g. with ``rasterio.warp.reproject``).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
import rasterio.errors
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from torch.utils.data import Dataset

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data.io.positions import checked_positions
from rspretrain.data.pretrain.patch_extraction import (
    FILTER_REASONS,
    PERCENTILE_SUBSAMPLE,
    apply_stretch,
    patch_filter_reasons,
    stretch_limits,
)

#: GDAL block cache (MB) while a whole file is read or scanned: the cache would only hold a second copy of it.
WHOLE_FILE_CACHE_MB = 64

#: Object-storage URL schemes and the GDAL virtual file system that reads them with ranged requests.
_VIRTUAL_FILE_SYSTEMS = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}


def gdal_path(path: str | os.PathLike) -> Path:
    """``path`` as GDAL reads it: a local path (``~`` expanded), or an object-storage URL as its virtual path
    (``s3://bucket/key.tif`` -> ``/vsis3/bucket/key.tif``; also ``gs://``, ``az://`` and ``/vsi...`` as given).

    GDAL reads only the blocks a window needs, so tiles of a scene on S3 cost their bytes, not the scene's. Endpoint
    and credentials come from GDAL's settings (environment): ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, and
    for an S3-compatible server ``AWS_S3_ENDPOINT=host:port``, ``AWS_VIRTUAL_HOSTING=FALSE`` (and ``AWS_HTTPS=NO``
    over plain HTTP).
    """
    text = os.fspath(path)
    scheme, separator, rest = text.partition("://")
    if separator and scheme.lower() in _VIRTUAL_FILE_SYSTEMS:
        return Path(_VIRTUAL_FILE_SYSTEMS[scheme.lower()] + rest)
    return Path(text).expanduser()


def is_virtual(path: str | os.PathLike) -> bool:
    """True for a GDAL virtual path (object storage): its existence is known only by opening it."""
    return os.fspath(path).startswith("/vsi")


class WindowReader:
    """Windows of a stack of raster files that share one grid, read when asked (the scene is never held whole).

    Files are opened on first use in each process (a DataLoader worker opens its own handles: GDAL handles must not
    cross a fork). Tile reads go through GDAL's block cache, which neighbouring tiles share; it is bounded by
    ``GDAL_CACHEMAX`` (default 5 % of RAM; set the environment variable to bound it lower). Whole-scene passes (the
    nodata mask, the stretch sample) run inside :meth:`bounded_cache`, at ``cache_mb``, so they do not fill it with
    every scene.
    """

    def __init__(
        self, files: Sequence[Path], dtype: np.dtype, shape: tuple[int, int, int], cache_mb: int = WHOLE_FILE_CACHE_MB
    ) -> None:
        self.files = tuple(files)
        self.dtype = np.dtype(dtype)
        self.shape = shape
        self.cache_mb = int(cache_mb)
        self._handles: list | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": None, "_pid": None}

    def _sources(self) -> list:
        if self._handles is None or self._pid != os.getpid():
            self._handles = [rasterio.open(path) for path in self.files]
            self._pid = os.getpid()
        return self._handles

    def bounded_cache(self) -> rasterio.Env:
        """A context in which GDAL's block cache holds at most :attr:`cache_mb` MB."""
        return rasterio.Env(GDAL_CACHEMAX=self.cache_mb)

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        """``(C, rows, cols)`` in :attr:`dtype`."""
        window = Window.from_slices(rows, cols, height=self.shape[1], width=self.shape[2])
        parts = []
        for path, source in zip(self.files, self._sources()):
            try:
                parts.append(source.read(window=window))
            except (rasterio.errors.RasterioError, OSError, ValueError) as error:
                raise DataError(f"{path}: reading window {window} failed ({_one_line(error)})") from None
        return np.concatenate([part.astype(self.dtype, copy=False) for part in parts])


@dataclass(frozen=True, eq=False)
class Raster:
    """A raster with its georeferencing: in memory (``array``), or read by window from its files (``reader``).

    Attributes:
        array: pixel values ``(C, H, W)`` in the file's dtype (the common dtype for stacked files); None for a
            windowed raster (``read_raster(..., windowed=True)``).
        band_names: one name per band.
        crs: coordinate reference system, or None (only with ``require_crs=False``).
        transform: affine map from (col, row) pixel corners to CRS coordinates.
        nodata: value marking missing pixels, or None. NaN is always treated as missing in float rasters.
        paths: the file(s) the bands came from, in band order of appearance.
        reader: the :class:`WindowReader` of a windowed raster, else None.
    """

    array: np.ndarray | None
    band_names: tuple[str, ...]
    crs: CRS | None
    transform: Affine
    nodata: float | int | None
    paths: tuple[Path, ...]
    reader: WindowReader | None = None

    def __post_init__(self) -> None:
        if (self.array is None) == (self.reader is None):
            raise ValueError("a Raster has either an array or a reader")
        if len(self.shape) != 3:
            raise ValueError(f"Raster.array must be (C, H, W), got shape {self.shape}")
        if len(self.band_names) != self.shape[0]:
            raise ValueError(f"{len(self.band_names)} band names for {self.shape[0]} bands")

    @property
    def shape(self) -> tuple[int, ...]:
        """``(C, H, W)``."""
        return tuple(self.array.shape) if self.array is not None else self.reader.shape

    @property
    def dtype(self) -> np.dtype:
        """The pixel dtype (e.g. ``uint16`` for Landsat 8 DN, ``int16`` for Sentinel-2 reflectance x 10000)."""
        return self.array.dtype if self.array is not None else self.reader.dtype

    def reading(self) -> contextlib.AbstractContextManager:
        """Wrap a pass over the whole scene: a windowed raster's reads then keep GDAL's cache small."""
        return self.reader.bounded_cache() if self.reader is not None else contextlib.nullcontext()

    def window(self, rows: slice, cols: slice) -> np.ndarray:
        """Pixel values ``(C, h, w)`` of a window (a view of :attr:`array`, or read from the files)."""
        return self.array[:, rows, cols] if self.array is not None else self.reader.read(rows, cols)

    def subsample(self, step: int) -> np.ndarray:
        """``(C, ceil(H / step), ceil(W / step))``: every ``step``-th row and column (equal to
        ``array[:, ::step, ::step]``; a windowed raster reads one row at a time)."""
        if self.array is not None:
            return self.array[:, ::step, ::step]
        with self.reading():
            rows = [self.window(slice(r, r + 1), slice(None))[:, 0, ::step] for r in range(0, self.height, step)]
        return np.stack(rows, axis=1)

    def invalid_pixels(self, values: np.ndarray) -> np.ndarray:
        """``(h, w)`` bool of a ``(C, h, w)`` window: True where any band equals ``nodata`` or is NaN."""
        invalid = np.zeros(values.shape[1:], dtype=bool)
        if self.nodata is not None and not (isinstance(self.nodata, float) and np.isnan(self.nodata)):
            invalid |= (values == self.nodata).any(axis=0)
        if np.issubdtype(values.dtype, np.floating):
            invalid |= np.isnan(values).any(axis=0)
        return invalid

    @property
    def path(self) -> Path:
        """The first (or only) file."""
        return self.paths[0]

    @property
    def count(self) -> int:
        """Number of bands."""
        return self.shape[0]

    @property
    def height(self) -> int:
        return self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[2]

    def valid_mask(self, strip_rows: int = 512) -> np.ndarray:
        """``(H, W)`` bool: True where no band equals ``nodata`` (or is NaN), computed ``strip_rows`` rows at a time.

        A pixel missing in any band is treated as missing as a whole, since a partial spectrum is not usable.
        """
        valid = np.empty((self.height, self.width), dtype=bool)
        with self.reading():
            for row in range(0, self.height, strip_rows):
                rows = slice(row, min(row + strip_rows, self.height))
                valid[rows] = ~self.invalid_pixels(self.window(rows, slice(None)))
        return valid


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _stem_name(path: Path) -> str:
    """A readable band name from a single-band file's name: the last ``_`` token of the stem.

    ``landsat8_LC80380342015230_b2.tif -> "b2"``; ``S2A_MSIL2A_..._B04.tif -> "B04"``; ``nir.tif -> "nir"``.
    """
    return path.stem.rsplit("_", 1)[-1] or path.stem


def _names(paths: Sequence[Path]) -> str:
    return str(paths[0]) if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} more files)"


def read_raster(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    band_names: Sequence[str] | None = None,
    require_crs: bool = True,
    expected_bands: int | None = None,
    windowed: bool = False,
) -> Raster:
    """Read a multi-band raster, or stack several rasters that share one pixel grid, with all their bands.

    Band names come, per band, from the file's band description if it has one; otherwise from ``band_names``;
    otherwise, for a single-band file, from its file name (the last ``_`` token of the stem, e.g. ``b2``); otherwise
    ``band_<i>`` (1-based position in the stack). Names that would repeat are prefixed with their file's stem. When
    both a description and ``band_names`` exist for a band and disagree (case-insensitively), it is an error: the
    caller's idea of the band order does not match the file.

    Args:
        paths: one file, or a list of files stacked in order on the first file's grid.
        band_names: expected name of every band of the stack (see above).
        require_crs: reject files without a CRS.
        expected_bands: required total number of bands.
        windowed: check the files and keep their georeferencing, but read pixels only when a window is asked for
            (:meth:`Raster.window`): for scenes, or many scenes, larger than memory.

    Returns:
        The :class:`Raster`; stacked files are cast to their common dtype (``numpy.result_type``).

    Raises:
        DataError: a file is missing, not a raster or unreadable; has no CRS (with ``require_crs``); lies on a grid
            (shape, transform or CRS) other than the first file's; has a nodata value other than the first file's;
            the band count differs from ``expected_bands`` or from ``len(band_names)``; a description contradicts
            ``band_names``.
    """
    files = [gdal_path(paths)] if isinstance(paths, (str, os.PathLike)) else [gdal_path(p) for p in paths]
    if not files:
        raise DataError("read_raster: no raster file given")
    seen: set[str] = set()
    for path in files:
        if os.path.abspath(path) in seen:
            raise DataError(f"{path}: listed twice")
        seen.add(os.path.abspath(path))

    arrays: list[np.ndarray] = []
    dtypes: list[np.dtype] = []
    descriptions: list[str | None] = []
    stem_names: list[str | None] = []
    band_files: list[Path] = []
    crs = transform = None
    nodata: float | int | None = None
    shape: tuple[int, int] | None = None
    for k, path in enumerate(files):
        if not is_virtual(path) and not path.exists():
            raise DataError(f"{path}: no such file")
        try:
            with warnings.catch_warnings():
                # A missing georeference is reported below as a one-line DataError (or accepted without require_crs).
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                with rasterio.Env(GDAL_CACHEMAX=WHOLE_FILE_CACHE_MB), rasterio.open(path) as source:
                    file_crs, file_transform = source.crs, source.transform
                    file_shape = (source.height, source.width)
                    nodatavals = [None if v is None else float(v) for v in source.nodatavals]
                    file_descriptions = list(source.descriptions)
                    file_count = source.count
                    dtypes.append(np.result_type(*source.dtypes))
                    data = None if windowed else source.read()
        except (rasterio.errors.RasterioError, OSError, ValueError) as error:
            raise DataError(f"{path}: not a readable raster ({_one_line(error)})") from None
        if require_crs and file_crs is None:
            raise DataError(f"{path}: GeoTIFF has no CRS; to read it without one set require_crs false (pretraining: "
                            "--data.dataset_options '{require_crs: false}')")
        file_nodata = nodatavals[0]
        if not all(_same_nodata(v, file_nodata) for v in nodatavals):
            raise DataError(f"{path}: bands have different nodata values {nodatavals}")
        if k == 0:
            crs, transform, nodata, shape = file_crs, file_transform, file_nodata, file_shape
        else:
            if file_shape != shape:
                raise DataError(
                    f"{path}: grid differs from {files[0].name}: shape {file_shape[0]}x{file_shape[1]} vs "
                    f"{shape[0]}x{shape[1]} px (stacking does not resample)"
                )
            if file_crs != crs:
                raise DataError(
                    f"{path}: grid differs from {files[0].name}: CRS {file_crs} vs {crs} (stacking does not resample)"
                )
            # A tolerance of 0.1% of a pixel absorbs float noise in stored transforms, not real offsets.
            tolerance = 1e-3 * min(abs(transform.a) or 1.0, abs(transform.e) or 1.0)
            if not file_transform.almost_equals(transform, precision=tolerance):
                raise DataError(
                    f"{path}: grid differs from {files[0].name}: transform {tuple(file_transform)[:6]} vs "
                    f"{tuple(transform)[:6]} (stacking does not resample)"
                )
            if not _same_nodata(file_nodata, nodata):
                raise DataError(f"{path}: nodata {file_nodata} differs from {files[0].name}'s {nodata}")
        arrays.append(data)
        descriptions += [d if d else None for d in file_descriptions]
        stem_names += [_stem_name(path)] if file_count == 1 else [None] * file_count
        band_files += [path] * file_count

    dtype = np.result_type(*dtypes)
    count = len(descriptions)
    array = reader = None
    if windowed:
        reader = WindowReader(files, dtype, (count, *shape))
    else:
        array = arrays[0] if len(arrays) == 1 else np.concatenate([a.astype(dtype, copy=False) for a in arrays])
    if expected_bands is not None and count != expected_bands:
        raise DataError(f"{_names(files)}: has {count} bands, expected {expected_bands}")
    names = _band_names(descriptions, stem_names, band_files, band_names, files)
    if isinstance(nodata, float) and not np.isnan(nodata) and nodata.is_integer() and np.issubdtype(dtype, np.integer):
        nodata = int(nodata)  # rasterio reports 65535.0 for uint16; an int compares exactly with integer pixels
    return Raster(array=array, band_names=names, crs=crs, transform=transform, nodata=nodata, paths=tuple(files),
                  reader=reader)


def _same_nodata(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (np.isnan(a) and np.isnan(b)) or a == b


def _band_names(
    descriptions: list[str | None],
    stem_names: list[str | None],
    band_files: list[Path],
    band_names: Sequence[str] | None,
    files: list[Path],
) -> tuple[str, ...]:
    count = len(descriptions)
    if band_names is not None:
        band_names = [str(n) for n in band_names]
        if len(band_names) != count:
            raise DataError(f"{_names(files)}: has {count} bands but band_names lists {len(band_names)}")
        if len(set(band_names)) != count:
            raise DataError(f"{_names(files)}: band_names repeats a name ({', '.join(band_names)})")
        for i, (described, given) in enumerate(zip(descriptions, band_names)):
            if described is not None and described.lower() != given.lower():
                raise DataError(
                    f"{band_files[i]}: band {i + 1} is described as {described!r} in the file but band_names "
                    f"gives {given!r}"
                )
        names = [d if d is not None else g for d, g in zip(descriptions, band_names)]
    else:
        names = [d or s or f"band_{i + 1}" for i, (d, s) in enumerate(zip(descriptions, stem_names))]
    counts = {n: names.count(n) for n in names}
    names = [f"{band_files[i].stem}_{n}" if counts[n] > 1 else n for i, n in enumerate(names)]
    if len(set(names)) != count:  # still repeated (e.g. one file stem with repeated descriptions): number them
        names = [f"{n}_{i + 1}" for i, n in enumerate(names)]
    return tuple(names)


def default_value_scale(dtype: np.dtype) -> float:
    """The raw value that maps to 1.0 for a dtype: its maximum for integers (255, 65535, ...), 1.0 for floats."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


class RasterTiles(Dataset):
    """Square tiles of a :class:`Raster` on a regular grid, as float32 tensors of the raw pixel values.

    Tiles start at rows/cols ``0, stride, 2*stride, ...`` and must fit entirely: a remainder narrower than ``tile``
    at the right/bottom edge is not covered (use ``stride < tile`` for overlap). A pixel is nodata if any band
    equals the raster's nodata value or is NaN; tiles with a larger fraction of nodata pixels than
    ``max_nodata_fraction`` are dropped (their number is :attr:`dropped`). In kept tiles nodata pixels are set to 0
    in every band.

    A sample is ``{"image": float32 (C, tile, tile), "bounds": (minx, miny, maxx, maxy) in the raster CRS, "crs":
    "EPSG:...", "window": (row, col, height, width), "valid_fraction": float}``; ``"crs"`` is ``""`` for a raster
    without CRS. :meth:`__getitems__` returns the batch directly: ``image`` ``(B, C, tile, tile)`` float32 (equal to
    stacking the samples), ``bounds`` float64 ``(B, 4)``, ``crs`` a list of B strings, ``window`` int64 ``(B, 4)``,
    ``valid_fraction`` float64 ``(B,)``; use :func:`~rspretrain.data.io.collate.collate_batched` in the DataLoader.

    Args:
        raster: the raster to tile.
        tile: tile height and width in pixels.
        stride: step between tile origins; None means ``tile`` (no overlap).
        max_nodata_fraction: largest fraction of nodata pixels a kept tile may have (0 keeps only complete tiles).
        value_scale: the raw value that maps to 1.0 (views and band statistics divide by it); None chooses it from
            the dtype: the largest value of an integer dtype (255 for uint8, 65535 for uint16 Landsat DN), 1.0 for
            floats. Pass it for scaled reflectances (e.g. 10000 for Sentinel-2 L1C/L2A).
        within: ``(minx, miny, maxx, maxy)`` in the raster CRS: keep only tiles whose footprint lies inside it (to
            cut spatially disjoint regions of one scene); tiles outside are not requested, so not counted as dropped.
        stretch: ``"none"`` (raw values) or ``"percentile"``: GeoKR's per-scene 1-99 % stretch of each band to 8
            bits (:func:`~rspretrain.data.pretrain.patch_extraction.stretch_limits` once,
            :func:`~rspretrain.data.pretrain.patch_extraction.apply_stretch` per tile; ``value_scale`` then defaults to
            255).
        patch_filters: drop tiles as GeoKR's patch extraction does (dark, mostly dark, low contrast, cloud;
            :mod:`rspretrain.data.pretrain.patch_extraction`); needs ``stretch="percentile"``. Counted per reason in
            :attr:`filtered`.

    Attributes:
        raster: the source raster.
        band_names: its band names.
        value_scale: see ``value_scale``.
        windows: int64 array ``(N, 2)`` of the kept tiles' (row, col) origins.
        dropped: number of tiles dropped for too much nodata.
        filtered: with ``patch_filters``, the number of tiles dropped for each reason (``{"dark": n, ...}``).

    Raises:
        ConfigError: invalid ``tile``, ``stride``, ``max_nodata_fraction``, ``value_scale``, ``within``,
            ``stretch`` or ``patch_filters``.
        DataError: the raster is smaller than one tile, or every (requested) tile has too much nodata or fails
            the patch filters.
    """

    def __init__(
        self,
        raster: Raster,
        tile: int = 64,
        stride: int | None = None,
        max_nodata_fraction: float = 0.0,
        value_scale: float | None = None,
        within: Sequence[float] | None = None,
        stretch: str = "none",
        patch_filters: bool = False,
    ) -> None:
        stride = tile if stride is None else stride
        if stretch not in ("none", "percentile"):
            raise ConfigError(f"RasterTiles: stretch must be 'none' or 'percentile', got {stretch!r}")
        if patch_filters and stretch != "percentile":
            raise ConfigError("RasterTiles: patch_filters work on 8-bit values; use them with stretch='percentile'")
        for name, value in (("tile", tile), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"RasterTiles: {name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(max_nodata_fraction) <= 1.0:
            raise ConfigError(f"RasterTiles: max_nodata_fraction must lie in [0, 1], got {max_nodata_fraction!r}")
        if value_scale is not None and not float(value_scale) > 0:
            raise ConfigError(f"RasterTiles: value_scale must be > 0, got {value_scale!r}")
        if within is not None:
            within = tuple(float(v) for v in within)
            if len(within) != 4 or not (within[0] < within[2] and within[1] < within[3]):
                raise ConfigError(f"RasterTiles: within must be (minx, miny, maxx, maxy) with min < max, got {within!r}")
        height, width = raster.height, raster.width
        if height < tile or width < tile:
            raise DataError(f"{raster.path}: raster is {height}x{width} px, smaller than one {tile}x{tile} tile")
        self.raster = raster
        self.band_names = raster.band_names
        self.tile = tile
        self.stride = stride
        self.max_nodata_fraction = float(max_nodata_fraction)

        invalid = ~raster.valid_mask()
        # Summed-area table: the nodata count of any window is four lookups, for all windows at once.
        # Summed in place (no scene-sized temporaries), in int32 unless the count could overflow it.
        count_dtype = np.int32 if height * width < 2**31 else np.int64
        table = np.zeros((height + 1, width + 1), dtype=count_dtype)
        np.cumsum(invalid, axis=0, dtype=count_dtype, out=table[1:, 1:])
        np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
        rows = np.arange(0, height - tile + 1, stride)
        cols = np.arange(0, width - tile + 1, stride)
        r, c = np.meshgrid(rows, cols, indexing="ij")
        r, c = r.ravel(), c.ravel()
        missing = table[r + tile, c + tile] - table[r, c + tile] - table[r + tile, c] + table[r, c]
        # Tile corners in CRS coordinates (x = a col + b row + c, y = d col + e row + f, written out so it is
        # vectorised); min/max over the four corners is right for rotated transforms too.
        a, b, c0, d, e, f0 = tuple(raster.transform)[:6]
        corner_cols = c[None, :] + np.array([0, tile, 0, tile])[:, None]
        corner_rows = r[None, :] + np.array([0, 0, tile, tile])[:, None]
        xs = a * corner_cols + b * corner_rows + c0
        ys = d * corner_cols + e * corner_rows + f0
        bounds = np.stack([xs.min(0), ys.min(0), xs.max(0), ys.max(0)], axis=1)
        requested = np.ones(len(r), dtype=bool)
        if within is not None:
            requested = (
                (bounds[:, 0] >= within[0]) & (bounds[:, 1] >= within[1])
                & (bounds[:, 2] <= within[2]) & (bounds[:, 3] <= within[3])
            )  # fmt: skip
            if not requested.any():
                raise DataError(f"{raster.path}: no {tile}x{tile} px tile lies within {within}")
        self.within = within
        complete = missing <= self.max_nodata_fraction * tile * tile + 1e-9
        keep = requested & complete
        self.dropped = int((requested & ~complete).sum())
        if not keep.any():
            raise DataError(
                f"{raster.path}: all {int(requested.sum())} tiles of {tile}x{tile} px have more than "
                f"{self.max_nodata_fraction:.0%} nodata pixels; raise max_nodata_fraction"
            )
        # GeoKR's 8-bit stretch: the scene's per-band limits, from every 20th row and column; tiles are stretched
        # as they are read.
        self.stretch = stretch
        self._limits = None
        if stretch == "percentile":
            step = PERCENTILE_SUBSAMPLE
            self._limits = stretch_limits(raster.subsample(step), ~invalid[::step, ::step], name=str(raster.path))
        self.filtered: dict[str, int] = {}
        if patch_filters:
            candidates = np.flatnonzero(keep)
            chunks = [candidates[start : start + 256] for start in range(0, len(candidates), 256)]  # bounded memory
            band_means = (self._read(r[chunk], c[chunk]).mean(axis=1) for chunk in chunks)
            reasons = np.concatenate([patch_filter_reasons(means) for means in band_means])
            self.filtered = {name: int((reasons == k + 1).sum()) for k, name in enumerate(FILTER_REASONS)}
            keep[candidates[reasons > 0]] = False
            if not keep.any():
                raise DataError(
                    f"{raster.path}: every {tile}x{tile} px tile fails GeoKR's patch filters {self.filtered}"
                )
        self.windows = np.stack([r[keep], c[keep]], axis=1).astype(np.int64)
        self._valid_fraction = 1.0 - missing[keep] / float(tile * tile)
        self._bounds = bounds[keep]
        default_scale = 255.0 if stretch == "percentile" else default_value_scale(raster.dtype)
        self.value_scale = float(value_scale) if value_scale is not None else default_scale
        self.crs = raster.crs
        self._crs_string = raster.crs.to_string() if raster.crs is not None else ""
        # Nothing scene-sized is kept besides the raster itself (its array, or nothing for a windowed raster):
        # each tile is read, converted and its nodata found again when asked for.

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def bounds(self) -> np.ndarray:
        """float64 ``(N, 4)``: every kept tile's ``(minx, miny, maxx, maxy)`` in the raster CRS (a copy)."""
        return self._bounds.copy()

    @property
    def valid_fraction(self) -> np.ndarray:
        """float64 ``(N,)``: every kept tile's fraction of pixels that are not nodata (a copy)."""
        return self._valid_fraction.copy()

    def _index(self, indices: Sequence[int]) -> np.ndarray:
        return checked_positions(indices, len(self))

    @property
    def stored_dtype(self) -> np.dtype:
        """The dtype that holds every tile value exactly: uint8 after the percentile stretch, else the raster's."""
        return np.dtype(np.uint8) if self._limits is not None else np.dtype(self.raster.dtype)

    def stored_tiles(self, indices: Sequence[int]) -> np.ndarray:
        """``(N, C, tile, tile)`` in :attr:`stored_dtype`: the tiles ``indices`` as :meth:`__getitems__` gives them
        (stretched, nodata pixels 0) before its float32 conversion, so ``image == stored.astype(float32)``; what
        ``rspretrain prepare`` writes (lossless, and as compact as the source)."""
        windows = self.windows[self._index(indices)]
        return self._read(windows[:, 0], windows[:, 1], self.stored_dtype)

    def _read(self, rows: np.ndarray, cols: np.ndarray, dtype: np.dtype = np.float32) -> np.ndarray:
        """``(N, C, tile, tile)`` of ``dtype``: the tiles at ``(rows[i], cols[i])``, stretched if asked, nodata 0."""
        out = np.empty((len(rows), self.raster.count, self.tile, self.tile), dtype=dtype)
        for k, (row, col) in enumerate(zip(rows.tolist(), cols.tolist())):
            values = self.raster.window(slice(row, row + self.tile), slice(col, col + self.tile))
            out[k] = values if self._limits is None else apply_stretch(values, self._limits)  # a copy
            out[k][:, self.raster.invalid_pixels(values)] = 0.0
        return out

    def __getitem__(self, index: int) -> dict:
        i = int(self._index([index])[0])
        row, col = (int(v) for v in self.windows[i])
        return {
            "image": torch.from_numpy(self._read(self.windows[i : i + 1, 0], self.windows[i : i + 1, 1])[0]),
            "bounds": tuple(float(v) for v in self._bounds[i]),
            "crs": self._crs_string,
            "window": (row, col, self.tile, self.tile),
            "valid_fraction": float(self._valid_fraction[i]),
        }

    def __getitems__(self, indices: Sequence[int]) -> dict:
        """The batch of tiles ``indices`` (see the class docstring for its keys)."""
        index = self._index(indices)
        windows = self.windows[index]
        sizes = np.full((len(index), 2), self.tile, dtype=np.int64)
        return {
            "image": torch.from_numpy(self._read(windows[:, 0], windows[:, 1])),
            "bounds": torch.from_numpy(self._bounds[index].copy()),
            "crs": [self._crs_string] * len(index),
            "window": torch.from_numpy(np.concatenate([windows, sizes], axis=1)),
            "valid_fraction": torch.from_numpy(self._valid_fraction[index].astype(np.float64)),
        }

    def __repr__(self) -> str:
        return (
            f"RasterTiles({len(self)} tiles of {self.raster.count}x{self.tile}x{self.tile} from {self.raster.path}, "
            f"{self.dropped} dropped for nodata)"
        )
