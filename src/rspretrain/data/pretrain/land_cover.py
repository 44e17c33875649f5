"""Land-cover class proportions over each image tile's footprint: GeoKR's labels, from any land-cover product [0].

GeoKR pairs every georeferenced image patch with the land-cover map over its exact footprint and learns to predict
the class proportions in it (METHODS.md §3.2). The official code does this for GlobeLand30 only, by cutting the
window between the patch's projected corners from the GlobeLand30 tile of the same UTM zone. Here the same idea
works for any product, in any CRS and at any resolution:

1. **Scheme.** A :class:`LandCoverScheme` maps the product's codes to the target classes (several codes may share a
   class; a code listed without a class, or the product's nodata value, is not counted). Tables ship for NLCD
   (``nlcd``: the 20 original classes; ``nlcd8``: the 8 Level I classes, also reading already-simplified 1-8
   rasters), GlobeLand30 (``globeland30``: 10 classes; ``globeland30_8``: GeoKR's released 8-class list) and ESA
   WorldCover (``worldcover``: 11 classes); any CSV with the same columns works too.
2. **Alignment.** Only the part of the product under the image is read. Its codes are mapped to class indices on
   the product's own grid, then reprojected with :func:`rasterio.warp.reproject` (GDAL/PROJ, so datum shifts are
   handled) onto the image's pixel grid by nearest neighbour, refined ``supersample`` times per image pixel when the
   product is finer than the image (``"auto"``: the resolution ratio), so a tile's class fractions come from the
   product's own detail. Nearest neighbour on the image grid is pointwise, so warping the whole image grid once and
   cutting tiles from it gives exactly what warping the product onto each tile's footprint would.
3. **Counting.** For every tile, the class counts over its footprint give the target ``a_c = n_c / sum_c' n_c'``
   (the official normalisation, without its ``+1e-6``: tiles with no counted pixel are dropped instead, as
   METHODS.md §3.7 recommends). Pixels that are nodata in the image are not counted either. Tiles entirely
   outside the product's extent are dropped and counted as ``dropped_outside``; tiles inside it with no counted
   pixel (only nodata / classless codes), or with a counted fraction of their footprint below
   ``min_land_cover_fraction``, are dropped and counted as ``dropped_no_land_cover``.

:func:`land_cover_proportions` computes a :class:`LandCoverLabels` table (written to / read from Parquet);
:class:`LandCoverTiles` is the pretraining dataset (``{"image", "label": proportions, "bounds", ...}``), built from
precomputed labels or computing them on construction; :class:`DominantClassTiles` turns it into a scene-
classification set (label = the tile's dominant class) for downstream evaluation.

Choices where METHODS.md leaves one: nearest-neighbour resampling (class codes are categorical; the supersampling
makes the fractions area-weighted to within one product pixel), and only tiles with no counted pixel are dropped by
default (``min_land_cover_fraction=0``, as in the official code).

References:
    - [0] W. Li, K. Chen, H. Chen, Z. Shi, "Geographical Knowledge-Driven Representation Learning for Remote Sensing
      Images", IEEE TGRS 60, 2022, https://arxiv.org/abs/2107.05276; code
      github.com/flyakon/Geographical-Knowledge-driven-Representaion-Learning (``tool/create_labels.py``).
    - [1] NLCD: Homer et al., PE&RS 81(5), 2015; GlobeLand30: Chen et al., ISPRS J. 103, 2015; ESA WorldCover:
      Zanaga et al., Zenodo 2021/2022.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import array_bounds
from rasterio.warp import calculate_default_transform, reproject, transform_bounds
from rasterio.windows import Window, from_bounds
from torch.utils.data import Dataset

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data.io.positions import checked_positions
from rspretrain.data.io.rasters import RasterTiles, gdal_path, is_virtual, read_raster

log = logging.getLogger("rspretrain")

#: Folder of the shipped scheme tables (``<name>.csv``).
SCHEMES_DIR = Path(__file__).parent / "land_cover_schemes"

# Class-map values besides the class indices 0..K-1.
NOT_COUNTED = -1  #: the product's nodata, or a code the scheme lists without a class
UNKNOWN_CODE = -2  #: a code the scheme does not list (not counted; reported)
OUTSIDE = -3  #: beyond the product's extent

#: Metadata key of the JSON provenance in a labels Parquet file.
PARQUET_META_KEY = b"rspretrain.land_cover"
#: Prefix of the proportion columns in the labels table (``p_<class name>``).
PROPORTION_PREFIX = "p_"


# -- schemes -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LandCoverScheme:
    """A mapping from a land-cover product's codes to target classes.

    Attributes:
        name: scheme name (the CSV's stem).
        classes: target class names, in target-vector order (order of first appearance in the table).
        codes: product code -> class index, or :data:`NOT_COUNTED` for codes listed without a class.
        source: the table file it came from.
    """

    name: str
    classes: tuple[str, ...]
    codes: dict[int, int]
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_map(self, codes: np.ndarray, nodata: float | None = None) -> tuple[np.ndarray, dict[int, int]]:
        """Class index of every pixel of ``codes`` (int16), and the pixel count of each code the scheme lacks.

        Pixels equal to ``nodata`` (or NaN) and codes listed without a class get :data:`NOT_COUNTED`; codes not
        in the table get :data:`UNKNOWN_CODE`.
        """
        codes = np.asarray(codes)
        missing = np.zeros(codes.shape, dtype=bool)
        if np.issubdtype(codes.dtype, np.floating):
            missing |= np.isnan(codes)
        if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
            missing |= codes == nodata
        # One lookup per distinct code (a product has few), not per pixel.
        values, inverse = np.unique(codes, return_inverse=True)
        inverse = inverse.reshape(codes.shape)
        lookup = np.full(len(values), UNKNOWN_CODE, dtype=np.int16)
        for i, value in enumerate(values.tolist()):
            if not (isinstance(value, float) and math.isnan(value)) and float(value).is_integer():
                lookup[i] = self.codes.get(int(value), UNKNOWN_CODE)
        out = lookup[inverse]
        out[missing] = NOT_COUNTED
        pixels = np.bincount(inverse[~missing], minlength=len(values))
        unknown = {
            (int(v) if float(v).is_integer() else float(v)): int(pixels[i])
            for i, v in enumerate(values.tolist())
            if lookup[i] == UNKNOWN_CODE and pixels[i] > 0
        }
        return out, unknown


def available_schemes() -> list[str]:
    """Names of the shipped scheme tables."""
    return sorted(p.stem for p in SCHEMES_DIR.glob("*.csv"))


def load_scheme(scheme: str | os.PathLike | LandCoverScheme) -> LandCoverScheme:
    """A shipped scheme by name (``"nlcd8"``, see :func:`available_schemes`) or a CSV table by path.

    The CSV has the header ``code,class[,description]`` (lines starting with ``#`` are comments); ``class`` empty
    means "not counted". Classes are numbered in order of first appearance.

    Raises:
        ConfigError: unknown scheme name.
        DataError: the table is malformed (the message names the file and line).
    """
    if isinstance(scheme, LandCoverScheme):
        return scheme
    text = str(scheme)
    path = Path(text).expanduser()
    if not (path.suffix.lower() == ".csv" or path.exists()):
        path = SCHEMES_DIR / f"{text.lower()}.csv"
        if not path.is_file():
            raise ConfigError(
                f"unknown land-cover scheme {text!r}; shipped: {', '.join(available_schemes())} (or a CSV path)"
            )
    if not path.is_file():
        raise DataError(f"{path}: land-cover scheme table not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    body = [(n, line) for n, line in enumerate(lines, start=1) if line.strip() and not line.lstrip().startswith("#")]
    if not body:
        raise DataError(f"{path}: empty land-cover scheme table")
    reader = csv.reader(io.StringIO("\n".join(line for _, line in body)))
    rows = list(reader)
    header = [h.strip().lower() for h in rows[0]]
    if header[:2] != ["code", "class"]:
        raise DataError(f"{path}: line {body[0][0]}: header must start with 'code,class', got {','.join(rows[0])!r}")
    classes: list[str] = []
    codes: dict[int, int] = {}
    for (number, _), row in zip(body[1:], rows[1:]):
        if len(row) < 2:
            raise DataError(f"{path}: line {number}: expected 'code,class[,description]', got {row!r}")
        try:
            code = int(row[0].strip())
        except ValueError:
            raise DataError(f"{path}: line {number}: code {row[0]!r} is not an integer") from None
        if code in codes:
            raise DataError(f"{path}: line {number}: code {code} is listed twice")
        name = row[1].strip()
        if name and name not in classes:
            classes.append(name)
        codes[code] = classes.index(name) if name else NOT_COUNTED
    if not classes:
        raise DataError(f"{path}: the scheme has no class")
    return LandCoverScheme(path.stem, tuple(classes), codes, str(path))


# -- alignment ---------------------------------------------------------------------------------------
def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _pixel_size(transform: Affine) -> float:
    return math.sqrt(abs(transform.determinant))


@dataclass
class AlignedLandCover:
    """A land-cover product's classes resampled onto an image pixel grid.

    Attributes:
        class_map: int16 ``(H * s, W * s)``: class index, or :data:`NOT_COUNTED` / :data:`UNKNOWN_CODE` /
            :data:`OUTSIDE`, of every sub-pixel.
        transform: affine transform of ``class_map`` (the image's, refined by ``supersample``).
        supersample: sub-pixels per image pixel side (``s``).
        unknown_codes: code -> pixel count (in the read product window) of codes the scheme does not list.
        product_resolution: the product's pixel size expressed in the image CRS units.
    """

    class_map: np.ndarray
    transform: Affine
    supersample: int
    unknown_codes: dict[int, int] = field(default_factory=dict)
    product_resolution: float = float("nan")


def align_land_cover(
    product: str | os.PathLike,
    scheme: LandCoverScheme | str,
    crs: CRS,
    transform: Affine,
    height: int,
    width: int,
    supersample: int | str = "auto",
    max_supersample: int = 8,
    image_name: str = "the image",
) -> AlignedLandCover:
    """Resample the classes of a land-cover raster onto a pixel grid (nearest neighbour, see the module docstring).

    Args:
        product: a single-band land-cover raster (GeoTIFF, VRT mosaic, ... with a CRS).
        scheme: code -> class mapping (name or :class:`LandCoverScheme`).
        crs, transform, height, width: the target grid (an image, or the part of it that holds the tiles).
        supersample: sub-pixels per target pixel side, or ``"auto"``: the ratio of the target's pixel size to the
            product's (at least 1, at most ``max_supersample``).
        max_supersample: cap of the automatic factor.
        image_name: how the target is named in error messages.

    Raises:
        DataError: the product is missing, unreadable, has no CRS or more than one band, or does not overlap the
            target footprint (the message names the file).
        ConfigError: invalid ``supersample``.
    """
    scheme = load_scheme(scheme)
    path = gdal_path(product)
    if crs is None:
        raise DataError(f"{image_name}: image has no CRS; it cannot be aligned with the land-cover product {path}")
    if not is_virtual(path) and not path.exists():
        raise DataError(f"{path}: no such land-cover file")
    target_bounds = array_bounds(height, width, transform)  # (west, south, east, north)
    target_bounds = (target_bounds[0], target_bounds[1], target_bounds[2], target_bounds[3])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as source:
                if source.crs is None:
                    raise DataError(f"{path}: land-cover raster has no CRS, so it cannot be aligned with {image_name}")
                if source.count != 1:
                    raise DataError(f"{path}: a land-cover product must have one band, it has {source.count}")
                product_crs, nodata = source.crs, source.nodata
                window = _product_window(source, crs, target_bounds, path, image_name)
                codes = source.read(1, window=window)
                product_transform = source.window_transform(window)
    except (rasterio.errors.RasterioError, OSError) as error:
        raise DataError(f"{path}: not a readable land-cover raster ({_one_line(error)})") from None
    classes, unknown = scheme.class_map(codes, nodata)

    rows, cols = classes.shape
    wb = array_bounds(rows, cols, product_transform)
    resolution_transform, _, _ = calculate_default_transform(product_crs, crs, cols, rows, *wb)
    product_resolution = _pixel_size(resolution_transform)
    if supersample == "auto":
        ratio = _pixel_size(transform) / product_resolution if product_resolution > 0 else 1.0
        factor = int(min(max(1, round(ratio)), max_supersample))
    elif isinstance(supersample, int) and not isinstance(supersample, bool) and supersample >= 1:
        factor = supersample
    else:
        raise ConfigError(f"supersample must be 'auto' or a positive integer, got {supersample!r}")

    fine_transform = transform @ Affine.scale(1.0 / factor)
    class_map = np.full((height * factor, width * factor), OUTSIDE, dtype=np.int16)
    # No src_nodata: NOT_COUNTED/UNKNOWN_CODE are copied like classes; only the untouched destination stays OUTSIDE.
    reproject(
        classes,
        class_map,
        src_transform=product_transform,
        src_crs=product_crs,
        dst_transform=fine_transform,
        dst_crs=crs,
        dst_nodata=OUTSIDE,
        resampling=Resampling.nearest,
    )
    if (class_map == OUTSIDE).all():
        raise DataError(f"{path}: land-cover product does not overlap {image_name}")
    if unknown:
        listed = ", ".join(f"{c} ({n} px)" for c, n in sorted(unknown.items(), key=lambda kv: -kv[1])[:8])
        log.warning("%s: codes not in scheme %r are not counted: %s", path, scheme.name, listed)
    return AlignedLandCover(class_map, fine_transform, factor, unknown, product_resolution)


def _product_window(source, crs: CRS, bounds: tuple[float, ...], path: Path, image_name: str) -> Window:
    """The window of ``source`` under ``bounds`` (in ``crs``), padded by 2 px; raises if they do not overlap."""
    full = Window(0, 0, source.width, source.height)
    try:
        left, bottom, right, top = transform_bounds(crs, source.crs, *bounds, densify_pts=21)
        window = from_bounds(left, bottom, right, top, transform=source.transform)
    except Exception:  # noqa: BLE001 - rotated product grid or a CRS pair PROJ cannot bound: read it all
        return full
    col0, row0 = math.floor(window.col_off) - 2, math.floor(window.row_off) - 2
    col1 = math.ceil(window.col_off + window.width) + 2
    row1 = math.ceil(window.row_off + window.height) + 2
    col0, row0 = max(col0, 0), max(row0, 0)
    col1, row1 = min(col1, source.width), min(row1, source.height)
    if col0 >= col1 or row0 >= row1 or not all(map(math.isfinite, (left, bottom, right, top))):
        product_bounds = tuple(round(v, 3) for v in source.bounds)
        raise DataError(
            f"{path}: land-cover product does not overlap {image_name} (product bounds {product_bounds} in "
            f"{source.crs.to_string() or 'its CRS'})"
        )
    return Window(col0, row0, col1 - col0, row1 - row0)


# -- labels ------------------------------------------------------------------------------------------
@dataclass
class LandCoverLabels:
    """Class proportions of the kept tiles, and what was dropped.

    Attributes:
        classes: target classes (column order of :attr:`proportions`).
        windows: int64 ``(N, 2)`` tile origins (row, col) in the image.
        bounds: float64 ``(N, 4)`` tile footprints ``(minx, miny, maxx, maxy)`` in the image CRS.
        proportions: float64 ``(N, K)``, each row sums to 1.
        land_cover_fraction: float64 ``(N,)``: counted fraction of each tile's footprint.
        tile: tile side in image pixels.
        crs: the image CRS as a string.
        dropped_outside: tiles entirely outside the product's extent.
        dropped_no_land_cover: tiles inside it without (enough) counted land cover.
        meta: provenance (images, product, scheme, stride, supersample, unknown codes, ...).
    """

    classes: tuple[str, ...]
    windows: np.ndarray
    bounds: np.ndarray
    proportions: np.ndarray
    land_cover_fraction: np.ndarray
    tile: int
    crs: str
    dropped_outside: int = 0
    dropped_no_land_cover: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def dominant_class(self) -> np.ndarray:
        """int64 ``(N,)``: index of each tile's largest proportion (ties: the lower index)."""
        return self.proportions.argmax(axis=1).astype(np.int64)

    def summary(self) -> dict[str, Any]:
        """Counts and the mean proportion of every class, for logs and the CLI."""
        mean = self.proportions.mean(axis=0) if len(self) else np.zeros(len(self.classes))
        return {
            "tiles": len(self),
            "dropped_outside": self.dropped_outside,
            "dropped_no_land_cover": self.dropped_no_land_cover,
            "dropped_image_nodata": int(self.meta.get("dropped_image_nodata", 0)),
            "mean_proportions": {c: round(float(m), 4) for c, m in zip(self.classes, mean)},
        }

    def to_frame(self):
        """A :class:`pandas.DataFrame`: ``row, col, tile, minx, miny, maxx, maxy, land_cover_fraction, p_<class>...``."""
        import pandas as pd

        columns: dict[str, Any] = {
            "row": self.windows[:, 0],
            "col": self.windows[:, 1],
            "tile": np.full(len(self), self.tile, dtype=np.int64),
            "minx": self.bounds[:, 0],
            "miny": self.bounds[:, 1],
            "maxx": self.bounds[:, 2],
            "maxy": self.bounds[:, 3],
            "land_cover_fraction": self.land_cover_fraction,
        }
        for k, name in enumerate(self.classes):
            columns[PROPORTION_PREFIX + name] = self.proportions[:, k]
        return pd.DataFrame(columns)

    def to_parquet(self, path: str | os.PathLike) -> Path:
        """Write the table with its provenance (classes, counts, meta) in the Parquet schema metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from rspretrain.core.checkpoint_io import atomic_write

        path = Path(path)
        table = pa.Table.from_pandas(self.to_frame(), preserve_index=False)
        info = {
            "classes": list(self.classes),
            "tile": self.tile,
            "crs": self.crs,
            "dropped_outside": self.dropped_outside,
            "dropped_no_land_cover": self.dropped_no_land_cover,
            "meta": self.meta,
        }
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), PARQUET_META_KEY: json.dumps(info)})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = sink.getvalue().to_pybytes()
        atomic_write(path, lambda f: f.write(data), size=len(data))
        return path


def read_land_cover_labels(path: str | os.PathLike) -> LandCoverLabels:
    """Read a labels file written by :meth:`LandCoverLabels.to_parquet` (``rspretrain landcover-labels``)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: land-cover labels file not found")
    try:
        table = pq.read_table(path)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise DataError(f"{path}: not a readable Parquet file ({_one_line(error)})") from None
    raw = (table.schema.metadata or {}).get(PARQUET_META_KEY)
    if raw is None:
        raise DataError(f"{path}: not a land-cover labels file (no rspretrain metadata; write it with "
                        "'rspretrain landcover-labels')")
    info = json.loads(raw)
    frame = table.to_pandas()
    classes = tuple(info["classes"])
    columns = [PROPORTION_PREFIX + c for c in classes]
    absent = [c for c in ("row", "col", "minx", "miny", "maxx", "maxy", "land_cover_fraction", *columns)
              if c not in frame.columns]
    if absent:
        raise DataError(f"{path}: labels table lacks column(s) {', '.join(absent)}")
    return LandCoverLabels(
        classes=classes,
        windows=frame[["row", "col"]].to_numpy(dtype=np.int64),
        bounds=frame[["minx", "miny", "maxx", "maxy"]].to_numpy(dtype=np.float64),
        proportions=frame[columns].to_numpy(dtype=np.float64),
        land_cover_fraction=frame["land_cover_fraction"].to_numpy(dtype=np.float64),
        tile=int(info["tile"]),
        crs=str(info["crs"]),
        dropped_outside=int(info["dropped_outside"]),
        dropped_no_land_cover=int(info["dropped_no_land_cover"]),
        meta={**dict(info.get("meta") or {}), "labels_file": str(path)},
    )


def land_cover_proportions(
    tiles: RasterTiles,
    product: str | os.PathLike,
    scheme: LandCoverScheme | str,
    min_land_cover_fraction: float = 0.0,
    supersample: int | str = "auto",
    max_supersample: int = 8,
) -> LandCoverLabels:
    """Class proportions of ``product`` over every tile of ``tiles`` (see the module docstring).

    Args:
        tiles: the image tiles (their raster must have a CRS).
        product: single-band land-cover raster in any CRS and resolution.
        scheme: code -> class mapping.
        min_land_cover_fraction: drop tiles whose counted land-cover pixels cover less than this fraction of the
            footprint (0: only tiles with none are dropped).
        supersample, max_supersample: see :func:`align_land_cover`.

    Raises:
        DataError: the image has no CRS; the product is unreadable, has no CRS or does not overlap the image; no
            tile has counted land cover (each names the file).
        ConfigError: ``min_land_cover_fraction`` outside [0, 1].
    """
    if not 0.0 <= float(min_land_cover_fraction) <= 1.0:
        raise ConfigError(f"min_land_cover_fraction must lie in [0, 1], got {min_land_cover_fraction!r}")
    scheme = load_scheme(scheme)
    raster = tiles.raster
    image_name = str(raster.path) if len(raster.paths) == 1 else f"{raster.path} (+{len(raster.paths) - 1} files)"
    if raster.crs is None:
        raise DataError(f"{raster.path}: image has no CRS; it cannot be aligned with the land-cover product {product}")
    tile = tiles.tile
    windows = tiles.windows
    # Warp only the part of the image grid that holds the tiles (e.g. one region of a scene).
    row0, col0 = int(windows[:, 0].min()), int(windows[:, 1].min())
    row1, col1 = int(windows[:, 0].max()) + tile, int(windows[:, 1].max()) + tile
    sub_transform = raster.transform @ Affine.translation(col0, row0)
    aligned = align_land_cover(
        product, scheme, raster.crs, sub_transform, row1 - row0, col1 - col0, supersample, max_supersample, image_name
    )
    s = aligned.supersample

    def footprint(row: int, col: int) -> np.ndarray:  # a view of the class map under one tile
        return aligned.class_map[(row - row0) * s : (row - row0 + tile) * s, (col - col0) * s : (col - col0 + tile) * s]

    # Image nodata pixels (kept tiles may have up to max_nodata_fraction of them) count no land cover: the
    # proportions describe the part of the footprint the image shows. Only the tiles the tiling found nodata in
    # are read again (none with the default max_nodata_fraction of 0).
    for row, col in windows[tiles.valid_fraction < 1.0].tolist():
        missing = raster.invalid_pixels(raster.window(slice(row, row + tile), slice(col, col + tile)))
        block = footprint(row, col)
        block[missing.repeat(s, axis=0).repeat(s, axis=1) & (block != OUTSIDE)] = NOT_COUNTED
    k = scheme.num_classes
    offset = -OUTSIDE  # class-map values start at OUTSIDE = -3
    counts = np.empty((len(windows), k + offset), dtype=np.int64)
    for i, (row, col) in enumerate(windows.tolist()):
        counts[i] = np.bincount(footprint(row, col).ravel().astype(np.int64) + offset, minlength=k + offset)
    pixels = float((tile * s) ** 2)
    outside = counts[:, OUTSIDE + offset] == pixels
    class_counts = counts[:, offset:]
    counted = class_counts.sum(axis=1)
    fraction = counted / pixels
    keep = ~outside & (counted > 0) & (fraction >= float(min_land_cover_fraction) - 1e-12)
    dropped_outside = int(outside.sum())
    dropped_no_land_cover = int((~outside & ~keep).sum())
    if not keep.any():
        raise DataError(
            f"{product}: none of the {len(windows)} tiles of {image_name} has counted land cover "
            f"({dropped_outside} outside the product, {dropped_no_land_cover} without land cover in scheme "
            f"{scheme.name!r})"
        )
    proportions = class_counts[keep] / counted[keep, None].astype(np.float64)
    meta = {
        "images": [str(p) for p in raster.paths],
        "band_names": list(raster.band_names),
        "land_cover": str(product),
        "scheme": scheme.name,
        "scheme_table": scheme.source,
        "stride": int(tiles.stride),
        "max_nodata_fraction": float(tiles.max_nodata_fraction),
        "dropped_image_nodata": int(tiles.dropped),
        "min_land_cover_fraction": float(min_land_cover_fraction),
        "supersample": s,
        "product_resolution": aligned.product_resolution,
        "unknown_codes": {str(c): n for c, n in aligned.unknown_codes.items()},
    }
    labels = LandCoverLabels(
        classes=scheme.classes,
        windows=windows[keep].copy(),
        bounds=tiles.bounds[keep],
        proportions=proportions,
        land_cover_fraction=fraction[keep],
        tile=tile,
        crs=raster.crs.to_string(),
        dropped_outside=dropped_outside,
        dropped_no_land_cover=dropped_no_land_cover,
        meta=meta,
    )
    log.info(
        "land cover %s (%s): %d tiles kept, %d outside the product, %d without land cover",
        Path(product).name, scheme.name, len(labels), dropped_outside, dropped_no_land_cover,
    )  # fmt: skip
    return labels


# -- datasets ----------------------------------------------------------------------------------------
class LandCoverTiles(Dataset):
    """Image tiles with the land-cover class proportions of their footprints (GeoKR's pretraining samples [0]).

    A sample is the :class:`~rspretrain.data.RasterTiles` sample plus ``"label"``: float32 ``(K,)`` proportions
    summing to 1, and ``"land_cover_fraction"``: the counted fraction of the footprint. :meth:`__getitems__`
    returns the batch (``label`` ``(B, K)``); use :func:`~rspretrain.data.collate_batched`.

    Args:
        tiles: the image tiles.
        labels: their proportions (from :func:`land_cover_proportions` or :func:`read_land_cover_labels`); tiles
            without a label row are left out, label rows without a tile are ignored.

    Attributes:
        classes, num_classes, band_names, value_scale: of the labels and the image.
        targets: float32 ``(N, K)`` proportions of the samples; ``land_cover_labels``: the whole label table.
        target_kind: ``"proportions"`` (the datamodule passes the classes to methods that learn from them).
        dropped_outside, dropped_no_land_cover: tiles dropped by the labelling; ``dropped_image_nodata``: by the
            tiling; ``dropped_patch_filters``: by GeoKR's patch filters, per reason (``patch_filters=True``).

    Raises:
        DataError: the labels were made for another grid (tile size, CRS or footprints differ), or match no tile.
    """

    target_kind = "proportions"

    def __init__(self, tiles: RasterTiles, labels: LandCoverLabels) -> None:
        source = labels.meta.get("labels_file", "land-cover labels")
        if labels.tile != tiles.tile:
            raise DataError(f"{source}: labels are for {labels.tile} px tiles, the dataset cuts {tiles.tile} px tiles")
        image_crs = tiles.raster.crs
        if image_crs is None or CRS.from_user_input(labels.crs) != image_crs:
            raise DataError(f"{source}: labels are in CRS {labels.crs}, the image {tiles.raster.path} in {image_crs}")
        position = {(int(r), int(c)): i for i, (r, c) in enumerate(labels.windows.tolist())}
        pairs = [(t, position[key]) for t, key in enumerate(map(tuple, tiles.windows.tolist())) if key in position]
        if not pairs:
            raise DataError(f"{source}: no labelled tile matches a tile of {tiles.raster.path} (other tiling?)")
        tile_index = np.asarray([t for t, _ in pairs], dtype=np.int64)
        label_index = np.asarray([j for _, j in pairs], dtype=np.int64)
        # Same (row, col) must be the same ground: a label file made for another image would pass the index match.
        pixel = _pixel_size(tiles.raster.transform)
        offset = np.abs(tiles.bounds[tile_index] - labels.bounds[label_index]).max()
        if offset > 1e-3 * pixel:
            raise DataError(
                f"{source}: label footprints differ from the tiles of {tiles.raster.path} by up to {offset:.3g} CRS "
                "units (labels made for another image?)"
            )
        self.tiles = tiles
        self.land_cover_labels = labels
        self.tile_index = tile_index
        self.targets = torch.from_numpy(labels.proportions[label_index].astype(np.float32))
        self.land_cover_fraction = torch.from_numpy(labels.land_cover_fraction[label_index].astype(np.float64))
        self.classes = tuple(labels.classes)
        self.num_classes = len(self.classes)
        self.band_names = tiles.band_names
        self.value_scale = tiles.value_scale
        self.dropped_outside = labels.dropped_outside
        self.dropped_no_land_cover = labels.dropped_no_land_cover
        self.dropped_image_nodata = tiles.dropped
        self.dropped_patch_filters = dict(tiles.filtered)
        self.unlabelled = len(tiles) - len(pairs)

    @classmethod
    def from_files(
        cls,
        images: str | os.PathLike | Sequence[str | os.PathLike],
        land_cover: str | os.PathLike | None = None,
        scheme: str | os.PathLike | None = None,
        labels: str | os.PathLike | None = None,
        min_land_cover_fraction: float = 0.0,
        supersample: int | str = "auto",
        band_names: Sequence[str] | None = None,
        expected_bands: int | None = None,
        tile: int = 64,
        stride: int | None = None,
        max_nodata_fraction: float = 0.0,
        value_scale: float | None = None,
        within: Sequence[float] | None = None,
        stretch: str = "none",
        patch_filters: bool = False,
        windowed: bool = False,
    ) -> LandCoverTiles:
        """Read the image (stacking single-band files), tile it and attach labels.

        Labels come from ``labels`` (a Parquet file of ``rspretrain landcover-labels``), or are computed now from
        ``land_cover`` with ``scheme``. The other arguments are :func:`~rspretrain.data.read_raster`'s and
        :class:`~rspretrain.data.RasterTiles`' (the image must have a CRS).

        Raises:
            ConfigError: neither or both of ``land_cover`` and ``labels``; ``scheme`` missing with ``land_cover``.
        """
        if (land_cover is None) == (labels is None):
            raise ConfigError("land-cover tiles need exactly one of land_cover (a product raster) or labels (a file)")
        if land_cover is not None and scheme is None:
            raise ConfigError(f"land_cover={land_cover}: give its scheme ({', '.join(available_schemes())} or a CSV)")
        raster = read_raster(images, band_names=band_names, expected_bands=expected_bands, windowed=windowed)
        tiles = RasterTiles(raster, tile, stride, max_nodata_fraction, value_scale, within, stretch, patch_filters)
        if labels is not None:
            table = read_land_cover_labels(labels)
            if scheme is not None and load_scheme(scheme).classes != table.classes:
                raise DataError(f"{labels}: labels have classes {list(table.classes)}, not scheme {scheme}'s")
        else:
            table = land_cover_proportions(tiles, land_cover, scheme, min_land_cover_fraction, supersample)
        return cls(tiles, table)

    def __len__(self) -> int:
        return len(self.tile_index)

    def _index(self, indices: Sequence[int]) -> np.ndarray:
        return checked_positions(indices, len(self))

    def __getitem__(self, index: int) -> dict:
        i = int(self._index([index])[0])
        sample = self.tiles[int(self.tile_index[i])]
        sample["label"] = self.targets[i].clone()
        sample["land_cover_fraction"] = float(self.land_cover_fraction[i])
        return sample

    def __getitems__(self, indices: Sequence[int]) -> dict:
        index = self._index(indices)
        batch = self.tiles.__getitems__(self.tile_index[index].tolist())
        batch["label"] = self.targets[torch.from_numpy(index)]
        batch["land_cover_fraction"] = self.land_cover_fraction[torch.from_numpy(index)]
        return batch

    @property
    def bounds(self) -> np.ndarray:
        """float64 ``(N, 4)`` footprints of the samples, in the image CRS."""
        return self.tiles.bounds[self.tile_index]

    def dominant_class(self) -> np.ndarray:
        """int64 ``(N,)``: each sample's dominant land-cover class."""
        return self.targets.argmax(dim=1).numpy().astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"LandCoverTiles({len(self)} tiles of {self.tiles.raster.count}x{self.tiles.tile}x{self.tiles.tile} "
            f"from {self.tiles.raster.path}, {self.num_classes} classes; dropped: {self.dropped_outside} outside "
            f"the product, {self.dropped_no_land_cover} without land cover, {self.dropped_image_nodata} image nodata)"
        )


class DominantClassTiles:
    """A scene-classification view of :class:`LandCoverTiles`: label = the tile's dominant land-cover class.

    Follows the scene-dataset contract of :mod:`rspretrain.downstream.frozen` (``__getitems__`` -> ``{"image", "label":
    int64}``, ``labels``, ``classes``, ``value_scale``, ``band_names``), so frozen-feature protocols (kNN, linear
    probe) score backbones on it. ``classes`` keeps every class of the scheme, present or not.

    Args:
        tiles: the land-cover tiles.
        indices: the subset to expose (default: all).
    """

    def __init__(self, tiles: LandCoverTiles, indices: Sequence[int] | None = None) -> None:
        self.tiles = tiles
        self.indices = np.arange(len(tiles)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.classes = list(tiles.classes)
        self.band_names = tiles.band_names
        self.value_scale = tiles.value_scale
        self.labels = torch.from_numpy(tiles.dominant_class()[self.indices])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        picked = self.indices[np.asarray(indices, dtype=np.int64)]
        batch = self.tiles.__getitems__(picked.tolist())
        return {"image": batch["image"], "label": batch["label"].argmax(dim=1)}


__all__ = [
    "AlignedLandCover",
    "DominantClassTiles",
    "LandCoverLabels",
    "LandCoverScheme",
    "LandCoverTiles",
    "align_land_cover",
    "available_schemes",
    "land_cover_proportions",
    "load_scheme",
    "read_land_cover_labels",
]
