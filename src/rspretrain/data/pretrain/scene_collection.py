"""Tiles of several georeferenced scenes as one dataset.

Pretraining on rasters means many scenes, not one: GeoKR cuts its patches from a whole archive of
Gaofen scenes (W. Li, K. Chen, H. Chen, Z. Shi, "Geographical Knowledge-Driven Representation
Learning for Remote Sensing Images", IEEE TGRS 60, 2022; METHODS.md §3.2), each with its own
geotransform and projection. :class:`SceneCollection` joins per-scene
:class:`~rspretrain.data.RasterTiles` or :class:`~rspretrain.data.LandCoverTiles` (each
scene keeps its own CRS and its own alignment to the land-cover product) into one dataset whose
batches mix scenes, like :class:`torch.utils.data.ConcatDataset` but batched (``__getitems__``)
and with the checks a model's input needs: the same bands, value scale and, for land-cover
tiles, the same class list in every scene.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rspretrain.core.errors import DataError
from rspretrain.data.io.positions import checked_positions


def _scene_name(scene) -> str:
    tiles = getattr(scene, "tiles", scene)  # LandCoverTiles wraps RasterTiles
    return str(tiles.raster.path)


class SceneCollection(Dataset):
    """Several scenes' tiles as one dataset; sample ``i`` of scene ``s`` comes after every sample of scenes ``< s``.

    A sample (and a batch from :meth:`__getitems__`) has the scenes' keys plus ``"scene"``: the scene's position in
    ``scenes`` (int, or int64 ``(B,)`` in a batch). ``"bounds"`` are in each sample's own scene CRS (``"crs"``).

    Args:
        scenes: per-scene :class:`~rspretrain.data.RasterTiles` or
            :class:`~rspretrain.data.LandCoverTiles`, all of the same kind.

    Attributes:
        scenes: the per-scene datasets.
        band_names, value_scale: shared by every scene.
        scene_of: int64 ``(N,)``: each sample's scene.
        classes, num_classes, targets, target_kind: of land-cover scenes (``targets`` concatenated), else absent.

    Raises:
        DataError: no scene; scenes of different kinds, band counts, band names, value scales or class lists (the
            message names the first scene that differs and the first scene).
    """

    def __init__(self, scenes: Sequence[Dataset]) -> None:
        scenes = list(scenes)
        if not scenes:
            raise DataError("a scene collection needs at least one scene")
        first, first_name = scenes[0], _scene_name(scenes[0])
        for scene in scenes[1:]:
            name = _scene_name(scene)
            if type(scene) is not type(first):
                raise DataError(f"{name}: a {type(scene).__name__}, but {first_name} is a {type(first).__name__}")
            if tuple(scene.band_names) != tuple(first.band_names):
                raise DataError(f"{name}: bands {list(scene.band_names)} differ from {first_name}'s "
                                f"{list(first.band_names)}")
            if scene.value_scale != first.value_scale:
                raise DataError(f"{name}: value scale {scene.value_scale:g} differs from {first_name}'s "
                                f"{first.value_scale:g} (give value_scale)")
            if getattr(scene, "classes", None) != getattr(first, "classes", None):
                raise DataError(
                    f"{name}: classes {list(scene.classes)} differ from {first_name}'s {list(first.classes)}"
                )
        self.scenes = scenes
        self.band_names = tuple(first.band_names)
        self.value_scale = first.value_scale
        sizes = [len(scene) for scene in scenes]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.scene_of = np.repeat(np.arange(len(scenes), dtype=np.int64), sizes)
        if getattr(first, "target_kind", None) == "proportions":
            self.target_kind = first.target_kind
            self.classes = tuple(first.classes)
            self.num_classes = len(self.classes)
            self.targets = torch.cat([scene.targets for scene in scenes])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        index = checked_positions(indices, len(self))
        scene = self.scene_of[index]
        return scene, index - self._starts[scene]

    def __getitem__(self, index: int) -> dict:
        scene, local = self._locate([index])
        sample = self.scenes[int(scene[0])][int(local[0])]
        sample["scene"] = int(scene[0])
        return sample

    def __getitems__(self, indices: Sequence[int]) -> dict:
        """The batch of samples ``indices``, in that order, each scene read once."""
        scene_of, local = self._locate(indices)
        batch: dict[str, Any] = {}
        for s in np.unique(scene_of).tolist():
            where = np.flatnonzero(scene_of == s)
            part = self.scenes[s].__getitems__(local[where].tolist())
            for key, value in part.items():
                if torch.is_tensor(value):
                    if key not in batch:
                        batch[key] = value.new_empty((len(scene_of), *value.shape[1:]))
                    batch[key][torch.from_numpy(where)] = value
                else:
                    batch.setdefault(key, [None] * len(scene_of))
                    for position, item in zip(where.tolist(), value, strict=True):
                        batch[key][position] = item
        if not batch:  # an empty request: the first scene's empty batch has every key and shape
            batch = self.scenes[0].__getitems__([])
        batch["scene"] = torch.from_numpy(scene_of)
        return batch

    @property
    def bounds(self) -> np.ndarray:
        """float64 ``(N, 4)`` footprints, each in its own scene's CRS."""
        return np.concatenate([scene.bounds for scene in self.scenes])

    def dominant_class(self) -> np.ndarray:
        """int64 ``(N,)``: each sample's dominant land-cover class (land-cover scenes only)."""
        return np.concatenate([scene.dominant_class() for scene in self.scenes])

    def __repr__(self) -> str:
        names = ", ".join(map(_scene_name, self.scenes))
        return f"SceneCollection({len(self)} tiles from {len(self.scenes)} scenes: {names})"
