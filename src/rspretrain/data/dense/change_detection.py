"""Bitemporal change detection in the LEVIR-CD layout: ``A/`` (before), ``B/`` (after), ``label/`` (change mask).

LEVIR-CD (H. Chen, Z. Shi, "A Spatial-Temporal Attention-Based Method and a New Dataset for Remote Sensing Image
Change Detection", Remote Sensing 12(10):1662, 2020) and the sets re-packed like it (WHU-CD, DSIFN, S2Looking in
their LEVIR-style releases) store one image per date and a 0/255 mask under the same file name. Accepted layouts:

1. split folders: ``root/{train,val,test}/{A,B,label}`` (the published LEVIR-CD layout);
2. flat: ``root/{A,B,label}``. When every name starts with ``train_``, ``val_`` or ``test_`` (as the crops the
   LEVIR-CD authors publish, e.g. ``test_2_0000_0512`` = test image 2 at offset (0, 512)), that prefix is the
   split; otherwise a ``numpy.random.RandomState(seed)`` split by pair.

Any label value above 0 is change (1); 0 is no change. Both dates must share size and bands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data.io.image_files import (
    find_partner,
    list_images,
    read_image_file,
    read_label_file,
    resize_image,
    resize_labels,
)

_SPLITS = ("train", "val", "test")
_FOLDERS = ("A", "B", "label")


class ChangeDetectionFolder:
    """Image pairs and change masks in the LEVIR-CD layout (see the module docstring), whole in memory.

    Args:
        root: the dataset folder (default: ``levir_cd_samples`` under the shared data root).
        split: ``"train"``, ``"val"``, ``"test"``, or ``"trainval"`` (train + val).
        scale: resize factor (bilinear for images, nearest for masks).
        test_fraction: share of pairs held out as test when the names carry no split.
        seed: seed of that split.

    Attributes:
        images_a, images_b: ``(C, H, W)`` arrays of the two dates.
        masks: ``(H, W)`` uint8, 1 = change.
        names: file stems.
        band_names: band names, or None when the files do not say.
        value_scale: divisor mapping raw values to [0, 1].
        classes: ``["no change", "change"]``.

    Raises:
        DataError: folder or layout missing, an image without its partner or label, sizes or bands that differ.
        ConfigError: an unknown split or a bad ``scale`` / ``test_fraction``.
    """

    classes = ["no change", "change"]

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        scale: float = 1.0,
        test_fraction: float = 0.3,
        seed: int = 0,
    ) -> None:
        if root is None:
            from rspretrain.data.io.data_root import default_data_root

            root = default_data_root() / "levir_cd_samples"
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: change-detection dataset folder not found")
        if split not in (*_SPLITS, "trainval"):
            raise ConfigError(f"split {split!r}: valid are train, val, test, trainval")
        if not 0 < scale <= 4:
            raise ConfigError(f"scale must lie in (0, 4], got {scale}")
        if not 0 < test_fraction < 1:
            raise ConfigError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        self.split, self.scale = split, float(scale)
        wanted = ("train", "val") if split == "trainval" else (split,)
        triples = self._select(wanted, test_fraction, seed)
        if not triples:
            raise DataError(f"{self.root}: split {split!r} has no image pairs")
        self.names: list[str] = []
        self.images_a: list[np.ndarray] = []
        self.images_b: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.band_names: tuple[str, ...] | None = None
        for i, (name, path_a, path_b, path_label) in enumerate(triples):
            a, b = read_image_file(path_a), read_image_file(path_b)
            label = read_label_file(path_label)
            if b.array.shape != a.array.shape or b.band_names != a.band_names:
                raise DataError(f"{path_b}: date B has shape {b.array.shape} / bands {b.band_names}, "
                                f"date A has {a.array.shape} / {a.band_names}")
            if label.shape != a.array.shape[1:]:
                raise DataError(f"{path_label}: label is {label.shape[0]}x{label.shape[1]} px, images are "
                                f"{a.array.shape[1]}x{a.array.shape[2]} px")
            if i == 0:
                self.band_names, self.value_scale, count = a.band_names, a.value_scale, a.array.shape[0]
            elif a.array.shape[0] != count or a.band_names != self.band_names:
                raise DataError(f"{path_a}: bands {a.band_names or a.array.shape[0]} differ from "
                                f"{triples[0][1].name}'s {self.band_names or count}")
            image_a = resize_image(a.array, self.scale)
            self.names.append(name)
            self.images_a.append(image_a)
            self.images_b.append(resize_image(b.array, self.scale))
            self.masks.append(resize_labels((label > 0).astype(np.uint8), image_a.shape[1:]))

    def _triples(self, folder: Path) -> list[tuple[str, Path, Path, Path]]:
        out = []
        for path_a in list_images(folder / "A"):
            path_b = find_partner(folder / "B", path_a.stem)
            path_label = find_partner(folder / "label", path_a.stem)
            if path_b is None:
                raise DataError(f"{path_a}: no after-image named {path_a.stem}.* in {folder / 'B'}")
            if path_label is None:
                raise DataError(f"{path_a}: no change label named {path_a.stem}.* in {folder / 'label'}")
            out.append((path_a.stem, path_a, path_b, path_label))
        return out

    def _select(self, wanted: tuple[str, ...], test_fraction: float, seed: int) -> list:
        if all((self.root / s / f).is_dir() for s in ("train", "test") for f in _FOLDERS):
            self.layout = "split_folders"
            return [t for s in wanted if (self.root / s / "A").is_dir() for t in self._triples(self.root / s)]
        if not all((self.root / f).is_dir() for f in _FOLDERS):
            raise DataError(
                f"{self.root}: not in the LEVIR-CD layout (A/, B/, label/ at the top or in train/ and test/)"
            )
        triples = self._triples(self.root)
        if not triples:
            raise DataError(f"{self.root / 'A'}: no images")
        prefixes = [t[0].split("_", 1)[0] for t in triples]
        if all(p in _SPLITS for p in prefixes):
            self.layout = "name_prefix"
            return [t for t, p in zip(triples, prefixes) if p in wanted]
        self.layout = "random"
        if "val" in wanted and len(wanted) == 1:
            raise ConfigError(f"{self.root}: names carry no split, so there is no val split (use train or test)")
        n_test = max(1, round(test_fraction * len(triples)))
        if n_test >= len(triples):
            raise DataError(f"{self.root}: {len(triples)} pair(s) are too few to hold out a test split")
        order = np.random.RandomState(seed).permutation(len(triples))
        test = set(order[len(triples) - n_test :].tolist())
        return [t for i, t in enumerate(triples) if (i in test) == ("test" in wanted)]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        """``{"image_a", "image_b": (C, H, W) raw values, "mask": int64 (H, W) 0/1, "name": str}``."""
        return {
            "image_a": torch.from_numpy(self.images_a[index]),
            "image_b": torch.from_numpy(self.images_b[index]),
            "mask": torch.from_numpy(self.masks[index].astype(np.int64)),
            "name": self.names[index],
        }

    def change_fraction(self) -> float:
        """Share of changed pixels over the split."""
        total = sum(m.size for m in self.masks)
        return float(sum(int(m.sum()) for m in self.masks) / max(1, total))

    def __repr__(self) -> str:
        return (f"ChangeDetectionFolder({self.root}, split={self.split!r}, {len(self)} pairs, layout={self.layout}, "
                f"{100 * self.change_fraction():.1f} % change)")
