"""Sliding-window inference with overlap and blending, over in-memory images and whole GeoTIFFs.

A dense model sees fixed-size windows; a scene of any size is covered by windows that overlap by ``overlap`` pixels,
the last one in each row / column flush with the far edge, so every pixel lies in at least one window. Each window's
per-pixel scores are weighted by a separable ramp that is 1 in the window's interior and falls linearly towards its
edges across the overlap (never to 0), the weighted scores are summed, and the sum is divided by the summed weights.
Pixels near a window border, where the receptive field is cut off, thus count less than pixels seen in a window's
interior, and seams vanish; where one window alone covers a pixel its score is taken as is. (Overlap-tile
inference: O. Ronneberger et al., "U-Net", MICCAI 2015; weighted blending as in ``pytorch-toolbelt``'s tiler.)

:func:`predict_image` blends a ``(C, H, W)`` tensor in memory. :func:`predict_raster` streams one or more co-registered
GeoTIFFs (several for change detection) in strips of window rows, so memory holds about two strips whatever the
raster's size, and writes a GeoTIFF with the input's CRS, transform and size: class ids (uint8, nodata 255 where the
input is nodata) or the blended float32 scores.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import torch
from rasterio.windows import Window
from tqdm.auto import tqdm

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data.io.image_files import raster_band_names

__all__ = ["blend_weights", "predict_image", "predict_raster", "window_starts"]

logger = logging.getLogger("rspretrain")

#: Output value of pixels that are nodata in the input (class-id output).
NODATA_LABEL = 255

#: A window predictor: raw input windows ``[(B, C, t, t), ...]`` (one per input raster) -> scores ``(B, K, t, t)``.
Predictor = Callable[[Sequence[torch.Tensor]], torch.Tensor]


def window_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Window origins along one axis: step ``tile - overlap``, the last window flush with the end (``[0]`` if short)."""
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ConfigError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, tile - overlap))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def blend_weights(tile: int, overlap: int) -> torch.Tensor:
    """``(tile, tile)`` weights: 1 inside, ramping linearly to ``1 / (overlap + 1)`` over the outer ``overlap`` px."""
    distance = torch.minimum(torch.arange(tile), torch.arange(tile).flip(0)).float()  # px to the nearest edge
    ramp = ((distance + 1) / (overlap + 1)).clamp(max=1.0)
    return ramp[:, None] * ramp[None, :]


def _pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad the last two dims of ``x`` up to ``(height, width)`` (bottom / right)."""
    pad_h, pad_w = height - x.shape[-2], width - x.shape[-1]
    if pad_h <= 0 and pad_w <= 0:
        return x
    return torch.nn.functional.pad(x, (0, max(0, pad_w), 0, max(0, pad_h)))


@torch.no_grad()
def _predict_windows(predictor: Predictor, inputs: Sequence[torch.Tensor], tile: int) -> torch.Tensor:
    scores = predictor([_pad_to(x, tile, tile) for x in inputs])
    if scores.ndim != 4 or scores.shape[0] != inputs[0].shape[0] or tuple(scores.shape[-2:]) != (tile, tile):
        raise ConfigError(f"predictor must return (B, K, {tile}, {tile}) scores, got {tuple(scores.shape)}")
    return scores.float()


def predict_image(
    predictor: Predictor,
    images: Sequence[torch.Tensor],
    tile: int,
    overlap: int,
    batch_size: int = 8,
) -> torch.Tensor:
    """Blended scores ``(K, H, W)`` of co-registered images ``[(C, H, W), ...]`` (one per input of the predictor).

    Images smaller than ``tile`` are zero-padded to it and the scores cropped back.
    """
    height, width = images[0].shape[-2:]
    if any(tuple(im.shape[-2:]) != (height, width) for im in images):
        raise ConfigError(f"images to blend must share one size, got {[tuple(im.shape) for im in images]}")
    weights = blend_weights(tile, overlap)
    positions = [(r, c) for r in window_starts(height, tile, overlap) for c in window_starts(width, tile, overlap)]
    total = weight_sum = None
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        batch = [torch.stack([im[:, r : r + tile, c : c + tile] for r, c in chunk]) for im in images]
        scores = _predict_windows(predictor, batch, tile).cpu()
        if total is None:
            total = torch.zeros(scores.shape[1], height, width)
            weight_sum = torch.zeros(height, width)
        for (r, c), s in zip(chunk, scores):
            h, w = min(tile, height - r), min(tile, width - c)
            total[:, r : r + h, c : c + w] += s[:, :h, :w] * weights[:h, :w]
            weight_sum[r : r + h, c : c + w] += weights[:h, :w]
    return total / weight_sum


def _open(path: Path) -> rasterio.io.DatasetReader:
    if not path.is_file():
        raise DataError(f"{path}: no such raster")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except (rasterio.errors.RasterioError, OSError) as error:
        raise DataError(f"{path}: not a readable raster ({' '.join(str(error).split())})") from None


def raster_inputs_info(paths: Sequence[str | os.PathLike]) -> tuple[int, tuple[str, ...] | None]:
    """``(band count, band names or None)`` of the first raster, for the model's band check before any compute."""
    with _open(Path(paths[0])) as source:
        return source.count, raster_band_names(source)


def predict_raster(
    predictor: Predictor,
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    tile: int,
    overlap: int,
    num_outputs: int,
    to_labels: Callable[[torch.Tensor], torch.Tensor] | None = None,
    fill_values: Sequence[float] | None = None,
    batch_size: int = 8,
    progress: bool = True,
    tags: dict[str, str] | None = None,
) -> Path:
    """Predict over whole co-registered rasters window by window and write the blended result as a GeoTIFF.

    Args:
        predictor: raw windows (one batch per input raster, float32 in the file's values) -> ``(B, K, t, t)`` scores.
        inputs: the raster file(s); all must share size, CRS and transform (e.g. the two dates of a change pair).
        output: the GeoTIFF to write; it gets the first input's CRS, transform and size.
        tile: window side in pixels.
        overlap: overlap of neighbouring windows in pixels.
        num_outputs: K, the number of score channels the predictor returns.
        to_labels: maps blended scores ``(K, h, W)`` to class ids ``(h, W)``; the output is then one uint8 band with
            nodata 255 where any input is nodata. None writes the K blended float32 score bands instead.
        fill_values: raw value per band put in nodata pixels before prediction (e.g. the band means, so the model sees
            an average value there); default 0.
        batch_size: windows per predictor call.
        progress: show a progress bar over windows.
        tags: extra GeoTIFF metadata (e.g. class names).

    Returns:
        The path written.

    Raises:
        DataError: an input is missing or unreadable, or the inputs' grids differ.
    """
    paths = [Path(p) for p in inputs]
    output = Path(output)
    sources = [_open(p) for p in paths]
    try:
        first = sources[0]
        for path, source in zip(paths[1:], sources[1:]):
            if (source.height, source.width) != (first.height, first.width) or source.crs != first.crs or \
                    not source.transform.almost_equals(first.transform) or source.count != first.count:
                raise DataError(f"{path}: grid or band count differs from {paths[0]} (inputs must be co-registered)")
        height, width, count = first.height, first.width, first.count
        fill = np.zeros(count, np.float32) if fill_values is None else np.asarray(fill_values, np.float32)
        if fill.shape != (count,):
            raise ConfigError(f"fill_values has {fill.size} values for {count} bands")
        weights = blend_weights(tile, overlap).numpy()
        rows, cols = window_starts(height, tile, overlap), window_starts(width, tile, overlap)
        profile = {
            "driver": "GTiff", "height": height, "width": width, "crs": first.crs, "transform": first.transform,
            "compress": "deflate",
        }
        if to_labels is not None:
            profile.update(count=1, dtype="uint8", nodata=NODATA_LABEL)
        else:
            profile.update(count=num_outputs, dtype="float32", nodata=None)
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.tmp")
        # Rolling buffers over the rows [buffer_top, buffer_top + rows held): rows above the next window row are final.
        span = min(tile, height)
        total = np.zeros((num_outputs, 0, width), np.float32)
        weight_sum = np.zeros((0, width), np.float32)
        valid = np.zeros((0, width), bool)
        buffer_top = 0

        def flush(dst, until: int) -> None:
            nonlocal total, weight_sum, valid, buffer_top
            n = until - buffer_top
            if n <= 0:
                return
            if (weight_sum[:n] <= 0).any():  # cannot happen with window_starts; guards the invariant
                raise RuntimeError("sliding window left pixels uncovered")
            scores = total[:, :n] / weight_sum[:n]
            if to_labels is not None:
                labels = to_labels(torch.from_numpy(scores)).numpy().astype(np.uint8)
                labels[~valid[:n]] = NODATA_LABEL
                dst.write(labels[None], window=Window(0, buffer_top, width, n))
            else:
                dst.write(scores.astype(np.float32), window=Window(0, buffer_top, width, n))
            total, weight_sum, valid = total[:, n:], weight_sum[n:], valid[n:]
            buffer_top = until

        with rasterio.open(tmp, "w", **profile) as dst, tqdm(
            total=len(rows) * len(cols), desc=f"predict {paths[0].name}", unit="win", disable=not progress,
            leave=False,
        ) as bar:
            if tags:
                dst.update_tags(**tags)
            for r in rows:
                flush(dst, r)
                strips, strip_valid = [], np.ones((span, width), bool)
                for source in sources:
                    strip = source.read(window=Window(0, r, width, span)).astype(np.float32)
                    if source.nodata is not None and not np.isnan(source.nodata):
                        strip_valid &= ~(strip == np.float32(source.nodata)).any(axis=0)
                    if np.issubdtype(np.dtype(source.dtypes[0]), np.floating):
                        strip_valid &= ~np.isnan(strip).any(axis=0)
                    strips.append(strip)
                for strip in strips:
                    strip[:, ~strip_valid] = fill[:, None]
                strips_t = [torch.from_numpy(s) for s in strips]
                grow = r + span - buffer_top - weight_sum.shape[0]
                if grow > 0:
                    total = np.concatenate([total, np.zeros((num_outputs, grow, width), np.float32)], axis=1)
                    weight_sum = np.concatenate([weight_sum, np.zeros((grow, width), np.float32)])
                    valid = np.concatenate([valid, np.ones((grow, width), bool)])
                offset = r - buffer_top
                valid[offset : offset + span] &= strip_valid
                for start in range(0, len(cols), batch_size):
                    chunk = cols[start : start + batch_size]
                    batch = [torch.stack([s[:, :, c : c + tile] for c in chunk]) for s in strips_t]
                    scores = _predict_windows(predictor, batch, tile).cpu().numpy()
                    if scores.shape[1] != num_outputs:
                        raise ConfigError(
                            f"predictor returned {scores.shape[1]} score channels, expected {num_outputs}"
                        )
                    for c, s in zip(chunk, scores):
                        w = min(tile, width - c)
                        total[:, offset : offset + span, c : c + w] += s[:, :span, :w] * weights[:span, :w]
                        weight_sum[offset : offset + span, c : c + w] += weights[:span, :w]
                    bar.update(len(chunk))
            flush(dst, height)
        tmp.replace(output)
    except BaseException:
        output.with_name(f".{output.name}.tmp").unlink(missing_ok=True)
        raise
    finally:
        for source in sources:
            source.close()
    logger.info("wrote %s (%d x %d px, %d windows of %d px, overlap %d)", output, width, height,
                len(rows) * len(cols), tile, overlap)
    return output


def default_overlap(tile: int) -> int:
    """A quarter of the window, the overlap used when none is given."""
    return max(0, math.floor(tile / 4))
