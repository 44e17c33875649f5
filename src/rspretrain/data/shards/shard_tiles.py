"""Raster tiles written by ``rspretrain prepare geotiff:... | landcover:...``, streamed: :class:`ShardTiles`.

The tiles were cut once (:mod:`.prepare_tiles`); here each rank and DataLoader worker reads its own chunks and turns a
record back into the sample the in-memory :class:`~rspretrain.data.RasterTiles` /
:class:`~rspretrain.data.pretrain.land_cover.LandCoverTiles` gives: ``{"image": float32 (C, tile, tile) raw values,
"bounds": float64 (4,), "window": int64 (2,) (row, col) in its scene, "scene": int64, "index": int64, and for
land-cover tiles "label": float32 (K,) class proportions, "land_cover_fraction": float64}``. Tiles are fixed-size,
so there is no decode-time crop: the views crop them on the device, as they crop in-memory tiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rspretrain.core.errors import DataError
from rspretrain.data.shards.decode_crops import DecodePlan
from rspretrain.data.shards.shard_images import ShardImages


class ShardTiles(ShardImages):
    """Stream a prepared set of raster tiles (same arguments as :class:`ShardImages`, whose reading it shares).

    Attributes:
        classes, num_classes, target_kind: land-cover tiles' classes and ``"proportions"`` (GeoKR's labels); None for
            unlabelled tiles.
        band_names, value_scale, manifest: from the set's manifest.

    Raises:
        DataError: the set is not a tile set (or see :class:`ShardImages`).
    """

    def __init__(self, location: str, **kwargs: Any) -> None:
        super().__init__(location, **kwargs)
        if self.manifest.kind != "tiles":
            raise DataError(f"{location}: a prepared set of {self.manifest.kind}, not of raster tiles")
        self.target_kind = self.manifest.target_kind
        self.num_classes = len(self.classes) if self.classes else 0
        self.plan = None

    decodes_images = False

    def set_plan(self, plan: DecodePlan) -> None:
        """Nothing to plan: tiles are stored at their size and cropped, if at all, on the device."""

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        position = int(getattr(index, "index", index))
        record = self.raw_record(index)
        image = np.asarray(record["image"])
        if image.ndim != 3 or image.shape[0] != self.manifest.in_chans:
            raise DataError(f"{self.location} sample {position} (scene {int(record['scene'])} tile "
                            f"{int(record['tile'])}): a {image.shape} array, not "
                            f"({self.manifest.in_chans}, tile, tile)")
        sample = {
            "image": torch.from_numpy(image.astype(np.float32)),
            "bounds": torch.from_numpy(np.asarray(record["bounds"], dtype=np.float64)),
            "window": torch.from_numpy(np.asarray(record["window"], dtype=np.int64)),
            "scene": torch.tensor(int(record["scene"]), dtype=torch.int64),
            "index": torch.tensor(position, dtype=torch.int64),
        }
        if "label" in record:
            sample["label"] = torch.from_numpy(np.asarray(record["label"], dtype=np.float32))
            sample["land_cover_fraction"] = torch.tensor(float(record["land_cover_fraction"]), dtype=torch.float64)
        return sample

    @property
    def labelled(self) -> bool:
        return self.target_kind is not None
