"""Semantic segmentation: image / mask folder pairs of any band count, and the Dubai aerial imagery set.

Images are kept whole in memory (sizes differ; test images are scored whole with sliding windows), masks as class
ids. Masks are either class-id maps (single band, value = class index, ``ignore_index`` = unlabelled) or colour masks
(RGB, one colour per class) translated with a class-colour table.

Layouts, tried in this order:

1. split folders: ``root/{train,val,test}/images`` + ``.../masks`` (e.g. LoveDA-, Potsdam-style re-packings);
2. groups: ``root/<group>/images`` + ``root/<group>/masks`` for several groups (tiles, scenes, cities); the split is
   by group, so neighbouring parts of one tile never sit on both sides (``test_groups``, default the last group);
3. flat: ``root/images`` + ``root/masks``, split by image with ``numpy.random.RandomState(seed)``.

An image's mask is the file with the same stem in the mask folder. The class list comes from ``classes`` or, in
this order, ``root/class_colors.csv`` (colour masks), ``root/classes.txt``, or the largest id in the masks.

The Dubai set (Humans in the Loop, "Semantic segmentation of aerial imagery", Kaggle 2020, imagery by MBRSC) is
layout 2 with colour masks: :class:`DubaiAerialSegmentation` reads ``class_colors.csv`` (the colours the masks really
use; the shipped ``classes.json`` lists colours that occur in none of them), maps ``#000000`` to ``ignore_index`` and
holds out ``Tile 6``.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Sequence

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

logger = logging.getLogger("rspretrain")

#: Columns of a class-colour table (``class_index`` optional; rows are then in file order).
CLASS_COLOR_COLUMNS = ("class_name", "mask_rgb_hex")
_SPLIT_DIRS = ("train", "val", "test")


def parse_hex_colour(text: str, where: str) -> tuple[int, int, int]:
    """``"#3C1098"`` (or ``3C1098``) -> ``(60, 16, 152)``."""
    value = text.strip().lstrip("#")
    if len(value) != 6:
        raise DataError(f"{where}: {text!r} is not an RGB hex colour like #3C1098")
    try:
        return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
    except ValueError:
        raise DataError(f"{where}: {text!r} is not an RGB hex colour like #3C1098") from None


def read_class_colors(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Class names and their mask colours ``(K, 3)`` uint8 from a CSV with columns ``class_name,mask_rgb_hex``.

    With a ``class_index`` column the rows are ordered by it, and the indices must be ``0..K-1``.

    Raises:
        DataError: the file is missing, lacks a column, repeats a colour, or has bad indices or colours.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class-colour table not found")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in CLASS_COLOR_COLUMNS if c not in fields]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(fields) or 'none'})")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise DataError(f"{path}: no classes listed")
    if "class_index" in fields:
        try:
            rows.sort(key=lambda r: int(r["class_index"]))
            indices = [int(r["class_index"]) for r in rows]
        except ValueError:
            raise DataError(f"{path}: class_index must be integers") from None
        if indices != list(range(len(rows))):
            raise DataError(f"{path}: class_index must be 0..{len(rows) - 1}, got {indices}")
    names = [r["class_name"] for r in rows]
    colours = np.array([parse_hex_colour(r["mask_rgb_hex"], f"{path} ({r['class_name']})") for r in rows], np.uint8)
    if len({tuple(c) for c in colours.tolist()}) != len(colours):
        raise DataError(f"{path}: two classes share one colour")
    return names, colours


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colours_to_ids(
    mask: np.ndarray,
    colours: np.ndarray,
    ignore_colours: np.ndarray | None = None,
    ignore_index: int = 255,
    where: str = "mask",
) -> np.ndarray:
    """Translate an ``(H, W, 3)`` colour mask to ``(H, W)`` uint8 class ids (``colours[i]`` -> ``i``).

    Pixels of an ``ignore_colours`` colour get ``ignore_index``.

    Raises:
        DataError: a pixel has a colour that is neither a class nor ignored (the message names the colours).
    """
    keys = _pack(mask)
    table = _pack(colours)
    values = np.arange(len(colours), dtype=np.int64)
    if ignore_colours is not None and len(ignore_colours):
        table = np.concatenate([table, _pack(np.asarray(ignore_colours, np.uint8))])
        values = np.concatenate([values, np.full(len(ignore_colours), ignore_index, np.int64)])
    order = np.argsort(table)
    table, values = table[order], values[order]
    pos = np.clip(np.searchsorted(table, keys), 0, len(table) - 1)
    known = table[pos] == keys
    if not known.all():
        unknown, counts = np.unique(keys[~known], return_counts=True)
        listed = ", ".join(f"#{k:06X} ({n} px)" for k, n in zip(unknown[:3].tolist(), counts[:3].tolist()))
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise DataError(f"{where}: colour(s) {listed}{more} are not in the class-colour table")
    return values[pos].astype(np.uint8)


class SegmentationFolder:
    """Image / mask pairs for semantic segmentation, whole images in memory, with a deterministic split.

    See the module docstring for the layouts and how classes are found.

    Args:
        root: the dataset folder.
        split: ``"train"``, ``"test"``; with split folders also ``"val"`` and ``"trainval"``.
        class_colors: CSV (``class_name,mask_rgb_hex[,class_index]``) for colour masks; default
            ``root/class_colors.csv`` if present, else masks hold class ids.
        classes: class names for class-id masks (default ``root/classes.txt`` one per line, else ``class_<i>`` up to
            the largest id found in the masks).
        ignore_colors: colours of a colour mask that mean "unlabelled" (``"#000000"`` style).
        ignore_index: id of unlabelled pixels (must not be a class index).
        scale: resize factor for images (bilinear, antialiased) and masks (nearest), e.g. 0.5 for quick CPU runs.
        test_groups: group folders held out as test in layout 2 (default: the last group in name order).
        test_fraction: share of images held out as test in layout 3.
        seed: seed of the layout-3 split.
        images_dir, masks_dir: folder names of images and masks.

    Attributes:
        images: ``(C, H, W)`` arrays in the files' dtype.
        masks: ``(H, W)`` uint8 (or int64 beyond 255 classes) class ids, ``ignore_index`` unlabelled.
        names: ``group/stem`` of every image.
        classes: class names; ``num_classes`` their number.
        palette: ``(num_classes, 3)`` uint8 display colours (the mask colours when known).
        band_names: band names of the images, or None when the files do not say.
        value_scale: divisor mapping raw values to [0, 1].

    Raises:
        DataError: no layout found, an image without mask, sizes that differ, unknown colours or ids, empty split.
        ConfigError: an unknown split, or a bad ``scale`` / ``test_fraction`` / ``ignore_index``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        class_colors: str | Path | None = None,
        classes: Sequence[str] | None = None,
        ignore_colors: Sequence[str] = (),
        ignore_index: int = 255,
        scale: float = 1.0,
        test_groups: Sequence[str] | None = None,
        test_fraction: float = 0.2,
        seed: int = 0,
        images_dir: str = "images",
        masks_dir: str = "masks",
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: segmentation dataset folder not found")
        if not 0 < scale <= 4:
            raise ConfigError(f"scale must lie in (0, 4], got {scale}")
        if not 0 < test_fraction < 1:
            raise ConfigError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        self.split = split
        self.scale = float(scale)
        self.ignore_index = int(ignore_index)
        self._images_dir, self._masks_dir = images_dir, masks_dir

        if class_colors is None and (self.root / "class_colors.csv").is_file():
            class_colors = self.root / "class_colors.csv"
        self._colours: np.ndarray | None = None
        self._ignore_colours = np.array(
            [parse_hex_colour(c, "ignore_colors") for c in ignore_colors], np.uint8
        ).reshape(-1, 3)
        if class_colors is not None:
            names, self._colours = read_class_colors(class_colors)
            if classes is not None and list(classes) != names:
                raise ConfigError(f"classes {list(classes)} differ from {class_colors}'s {names}")
            classes = names
        elif classes is None and (self.root / "classes.txt").is_file():
            classes = [c.strip() for c in (self.root / "classes.txt").read_text().splitlines() if c.strip()]
        if classes is not None and self.ignore_index < len(classes):
            raise ConfigError(f"ignore_index {self.ignore_index} is a class index (there are {len(classes)} classes)")

        groups = self._groups()
        pairs = self._select(groups, split, test_groups, test_fraction, seed)
        if not pairs:
            raise DataError(f"{self.root}: split {split!r} has no images")
        self.names = [name for name, _, _ in pairs]
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        bands: tuple[str, ...] | None = None
        for i, (_, image_path, mask_path) in enumerate(pairs):
            image = read_image_file(image_path)
            mask = self._read_mask(mask_path)
            if mask.shape != image.array.shape[1:]:
                raise DataError(
                    f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} px but its image is "
                    f"{image.array.shape[1]}x{image.array.shape[2]} px"
                )
            if i == 0:
                bands, self.value_scale, count = image.band_names, image.value_scale, image.array.shape[0]
            elif image.array.shape[0] != count or image.band_names != bands:
                raise DataError(f"{image_path}: bands {image.band_names or image.array.shape[0]} differ from "
                                f"{pairs[0][1].name}'s {bands or count}")
            array = resize_image(image.array, self.scale)
            self.images.append(array)
            self.masks.append(resize_labels(mask, array.shape[1:]))
        self.band_names = bands
        if classes is None:
            classes = self._infer_classes(groups)
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        for name, mask in zip(self.names, self.masks):
            labelled = mask[mask != self.ignore_index]
            if labelled.size and int(labelled.max()) >= self.num_classes:
                raise DataError(f"{self.root}/{name}: mask holds class id {int(labelled.max())} but there are "
                                f"{self.num_classes} classes")
        self.palette = self._colours if self._colours is not None else default_palette(self.num_classes)

    # -- layout ------------------------------------------------------------------------------------------
    def _pairs_in(self, folder: Path, group: str) -> list[tuple[str, Path, Path]]:
        images = list_images(folder / self._images_dir)
        masks = folder / self._masks_dir
        pairs = []
        for image in images:
            mask = find_partner(masks, image.stem)
            if mask is None:
                raise DataError(f"{image}: no mask named {image.stem}.* in {masks}")
            pairs.append((f"{group}/{image.stem}" if group else image.stem, image, mask))
        return pairs

    def _is_pair_folder(self, folder: Path) -> bool:
        return (folder / self._images_dir).is_dir() and (folder / self._masks_dir).is_dir()

    def _groups(self) -> dict[str, list[tuple[str, Path, Path]]]:
        """``{group: pairs}``; the layout is recorded in ``self.layout``."""
        split_dirs = [d for d in _SPLIT_DIRS if self._is_pair_folder(self.root / d)]
        if "train" in split_dirs and ("test" in split_dirs or "val" in split_dirs):
            self.layout = "split_folders"
            return {d: self._pairs_in(self.root / d, d) for d in split_dirs}
        if self._is_pair_folder(self.root):
            self.layout = "flat"
            return {"": self._pairs_in(self.root, "")}
        subdirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        groups = [d for d in subdirs if self._is_pair_folder(d)]
        if len(groups) >= 2:
            self.layout = "groups"
            return {d.name: self._pairs_in(d, d.name) for d in groups}
        raise DataError(
            f"{self.root}: no segmentation layout found: expected {self._images_dir}/ + {self._masks_dir}/ folders "
            "(at the top, in train/ and test/, or in two or more group folders)"
        )

    def _select(self, groups, split, test_groups, test_fraction, seed) -> list[tuple[str, Path, Path]]:
        if self.layout == "split_folders":
            wanted = {"trainval": ("train", "val")}.get(split, (split,))
            if any(w not in _SPLIT_DIRS for w in wanted):
                raise ConfigError(f"split {split!r}: valid are train, val, test, trainval")
            return [p for w in wanted for p in groups.get(w, [])]
        if split not in ("train", "test"):
            raise ConfigError(f"split {split!r}: this {self.layout} layout has train and test only")
        if self.layout == "groups":
            held = list(test_groups) if test_groups is not None else [sorted(groups)[-1]]
            unknown = [g for g in held if g not in groups]
            if unknown:
                raise ConfigError(f"test_groups {unknown} not found in {self.root} (groups: {', '.join(groups)})")
            if len(held) == len(groups):
                raise ConfigError(f"test_groups {held} leave no group for training")
            self.test_groups = tuple(held)
            chosen = [g for g in groups if (g in held) == (split == "test")]
            return [p for g in chosen for p in groups[g]]
        pairs = groups[""]
        n_test = max(1, round(test_fraction * len(pairs)))
        if n_test >= len(pairs):
            raise DataError(f"{self.root}: {len(pairs)} image(s) are too few to hold out a test split")
        order = np.random.RandomState(seed).permutation(len(pairs))
        test = set(order[len(pairs) - n_test :].tolist())
        return [p for i, p in enumerate(pairs) if (i in test) == (split == "test")]

    # -- masks ----------------------------------------------------------------------------------------
    def _read_mask(self, path: Path) -> np.ndarray:
        if self._colours is not None:
            return colours_to_ids(read_label_file(path, colour=True), self._colours, self._ignore_colours,
                                  self.ignore_index, str(path))
        mask = read_label_file(path)
        if not np.issubdtype(mask.dtype, np.integer):
            raise DataError(f"{path}: class-id mask must hold integers, has {mask.dtype}")
        if mask.size and int(mask.min()) < 0:
            raise DataError(f"{path}: class-id mask holds negative ids")
        return mask.astype(np.uint8) if mask.size == 0 or int(mask.max()) <= 255 else mask.astype(np.int64)

    def _infer_classes(self, groups) -> list[str]:
        """``class_<i>`` up to the largest id in every mask of the dataset (both splits, so they agree)."""
        top = -1
        for pairs in groups.values():
            for _, _, mask_path in pairs:
                mask = self._read_mask(mask_path)
                labelled = mask[mask != self.ignore_index]
                if labelled.size:
                    top = max(top, int(labelled.max()))
        if top < 0:
            raise DataError(f"{self.root}: every mask pixel is {self.ignore_index} (ignored); no classes found")
        logger.info("%s: %d classes inferred from the masks (add classes.txt to name them)", self.root, top + 1)
        return [f"class_{i}" for i in range(top + 1)]

    # -- access -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        """``{"image": (C, H, W) raw values, "mask": int64 (H, W), "name": str}``."""
        return {
            "image": torch.from_numpy(self.images[index]),
            "mask": torch.from_numpy(self.masks[index].astype(np.int64)),
            "name": self.names[index],
        }

    def class_pixel_counts(self) -> np.ndarray:
        """Labelled pixels per class over the split (ignored pixels left out)."""
        counts = np.zeros(self.num_classes, np.int64)
        for mask in self.masks:
            labelled = mask[mask != self.ignore_index]
            counts += np.bincount(labelled.ravel().astype(np.int64), minlength=self.num_classes)[: self.num_classes]
        return counts

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.root}, split={self.split!r}, {len(self)} images, "
                f"{self.num_classes} classes, scale={self.scale})")


class DubaiAerialSegmentation(SegmentationFolder):
    """The Dubai aerial-imagery segmentation set (Humans in the Loop / MBRSC, Kaggle 2020), split by tile.

    Six classes from ``class_colors.csv`` (Building, Land, Road, Vegetation, Water, Unlabeled); the 1,675 black
    pixels are ignored. "Unlabeled" (#9B9B9B) is the dataset's own sixth class (the annotators' label for areas
    outside the five), so it is predicted and scored in mIoU like the others; a :class:`SegmentationFolder` with
    ``ignore_colors=("#000000", "#9B9B9B")`` leaves it out. ``Tile 6`` is the test split by default (the
    manifest's suggestion: whole tiles are held out so no test pixel neighbours a training pixel).

    Args:
        root: the ``dubai_aerial_seg`` folder (default: under :func:`~rspretrain.data.default_data_root`).
        split: ``"train"`` or ``"test"``.
        scale: image resize factor (the images are 509x544 to 1126x1058 px).
        test_tiles: tile folders held out for testing.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        scale: float = 1.0,
        test_tiles: Sequence[str] = ("Tile 6",),
    ) -> None:
        if root is None:
            from rspretrain.data.io.data_root import default_data_root

            root = default_data_root() / "dubai_aerial_seg"
        root = Path(root)
        super().__init__(root, split, class_colors=root / "class_colors.csv", ignore_colors=("#000000",),
                         scale=scale, test_groups=test_tiles)


def default_palette(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` uint8 display colours (matplotlib's tab20, cycled)."""
    from matplotlib import colormaps

    colours = colormaps["tab20"](np.arange(num_classes) % 20)[:, :3]
    return np.round(colours * 255).astype(np.uint8)
