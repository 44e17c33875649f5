"""Object detection: boxes from CSV tables, Pascal VOC XML and COCO json, on images of any band count.

Annotation formats (boxes are pixel corners ``xmin, ymin, xmax, ymax``; everything is converted to that order):

- CSV as written by DeepForest (B. Weinstein et al., "Individual Tree-Crown Detection in RGB Imagery Using
  Semi-Supervised Deep Learning Neural Networks", Remote Sensing 11(11):1309, 2019): one row per box with columns
  ``image_path, xmin, ymin, xmax, ymax[, label]``. Columns are read **by name**, never by position: some published
  files order them differently (NEON's ``2018_SJER_3_..._truth.csv`` has ``xmin, xmax, ymin, ymax``).
- Pascal VOC XML (M. Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 88, 2010): one file
  per image, ``<filename>`` and ``<object><name>/<bndbox>``.
- COCO json (T.-Y. Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014): ``images``, ``annotations``
  with ``bbox = [x, y, width, height]``, ``categories``.

:class:`DetectionFolder` reads a COCO json file, a VOC folder (``Annotations/`` + ``JPEGImages/``, splits from
``ImageSets/Main/*.txt`` when present) or a folder of images with CSV / XML files beside them (DeepForest's layout).
Without a published split, datasets of five or more images are split by image (``numpy.random.RandomState(seed)``);
smaller ones by region: the bottom ``test_fraction`` of every image's rows is the test split, so a three-image set such
as the NEON crops still tests on every site. A box cut by a region border is kept, clipped, when at least half its
area lies inside (the usual random-crop rule).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data.io.image_files import DENSE_IMAGE_SUFFIXES, find_partner, read_image_file

logger = logging.getLogger("rspretrain")

CSV_BOX_COLUMNS = ("image_path", "xmin", "ymin", "xmax", "ymax")
#: Label given to boxes of a CSV without a ``label`` column.
DEFAULT_LABEL = "object"
#: Fewer images than this are split by region instead of by image (``split_by="auto"``).
MIN_IMAGES_FOR_IMAGE_SPLIT = 5


@dataclass
class Boxes:
    """The boxes of one image: ``xyxy`` float32 ``(N, 4)`` pixel corners and one label name per box."""

    xyxy: np.ndarray
    labels: list[str]
    source: Path

    def same_as(self, other: Boxes) -> bool:
        """True if both hold the same (box, label) set, in any order."""
        key = lambda b: sorted(zip(np.round(b.xyxy, 3).tolist(), b.labels))  # noqa: E731
        return len(self.labels) == len(other.labels) and key(self) == key(other)


def _number(text: str | None, where: str) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: coordinate {text!r} is not finite")
    return value


def _check_box(box: Sequence[float], where: str) -> None:
    if not (box[2] > box[0] and box[3] > box[1]):
        raise DataError(f"{where}: box xmin={box[0]:g} ymin={box[1]:g} xmax={box[2]:g} ymax={box[3]:g} is empty or "
                        "inverted")


def read_boxes_csv(path: str | Path) -> dict[str, Boxes]:
    """``{image file name: Boxes}`` from a DeepForest-style CSV (columns matched by name, in any order).

    Raises:
        DataError: the file is missing, lacks a column, or a row has a bad number or an empty box.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation CSV not found")
    out: dict[str, tuple[list, list]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in CSV_BOX_COLUMNS if c not in fields]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(fields) or 'none'})")
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            where = f"{path}:{line}"
            box = [_number(row[c], f"{where} ({c})") for c in ("xmin", "ymin", "xmax", "ymax")]
            _check_box(box, where)
            image = Path(row["image_path"]).name
            if not image:
                raise DataError(f"{where}: empty image_path")
            boxes, labels = out.setdefault(image, ([], []))
            boxes.append(box)
            labels.append(row.get("label") or DEFAULT_LABEL)
    return {k: Boxes(np.asarray(b, np.float32).reshape(-1, 4), lab, path) for k, (b, lab) in out.items()}


def read_voc_xml(path: str | Path) -> tuple[str, Boxes]:
    """``(image file name, Boxes)`` from one Pascal VOC annotation file.

    Raises:
        DataError: unreadable XML, no ``<filename>``, an object without name or box, a bad coordinate.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise DataError(f"{path}: not a readable VOC XML file ({error})") from None
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise DataError(f"{path}: no <filename>")
    boxes, labels = [], []
    for k, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        bndbox = obj.find("bndbox")
        if not name or bndbox is None:
            raise DataError(f"{path}: object {k} has no <name> or <bndbox>")
        box = [_number(bndbox.findtext(c), f"{path}: object {k} <{c}>") for c in ("xmin", "ymin", "xmax", "ymax")]
        _check_box(box, f"{path}: object {k}")
        boxes.append(box)
        labels.append(name)
    return Path(filename).name, Boxes(np.asarray(boxes, np.float32).reshape(-1, 4), labels, path)


def read_coco_json(path: str | Path) -> tuple[dict[str, Boxes], list[str]]:
    """``({image file_name: Boxes}, category names in id order)`` from a COCO detection json.

    Images without annotations get empty boxes (they still count as negatives). Crowd annotations are skipped.

    Raises:
        DataError: unreadable json, missing keys, an annotation naming an unknown image or category, a bad box.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        images = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        annotations = data.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a readable COCO json ({type(error).__name__}: {error})") from None
    per_image: dict[int, tuple[list, list]] = {i: ([], []) for i in images}
    for k, ann in enumerate(annotations):
        where = f"{path}: annotation {ann.get('id', k)}"
        if ann.get("iscrowd"):
            continue
        if int(ann.get("image_id", -1)) not in images:
            raise DataError(f"{where}: image_id {ann.get('image_id')} is not in images")
        if int(ann.get("category_id", -1)) not in categories:
            raise DataError(f"{where}: category_id {ann.get('category_id')} is not in categories")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(f"{where}: bbox must be [x, y, width, height]")
        x, y, w, h = (_number(v, where) for v in bbox)
        box = [x, y, x + w, y + h]
        _check_box(box, where)
        boxes, labels = per_image[int(ann["image_id"])]
        boxes.append(box)
        labels.append(categories[int(ann["category_id"])])
    names = [categories[i] for i in sorted(categories)]
    return {images[i]: Boxes(np.asarray(b, np.float32).reshape(-1, 4), lab, path)
            for i, (b, lab) in per_image.items()}, names


def crop_boxes(
    xyxy: np.ndarray, window: tuple[int, int, int, int], min_visible: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes seen through a window ``(row, col, height, width)``: shifted to its origin and clipped to it.

    Returns ``(boxes, kept)``: the boxes with at least ``min_visible`` of their area inside (clipped), and the indices
    of those boxes in ``xyxy``.
    """
    row, col, height, width = window
    shifted = xyxy - np.array([col, row, col, row], np.float32)
    clipped = shifted.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]).clip(0) * (clipped[:, 3] - clipped[:, 1]).clip(0)
    kept = np.flatnonzero((inside > 0) & (inside >= min_visible * area))
    return clipped[kept], kept


class DetectionFolder:
    """Images with boxes for object detection, whole in memory, with a deterministic split.

    Args:
        path: a COCO json file, a VOC folder, or a folder of images with CSV / XML annotations beside them.
        split: ``"train"`` or ``"test"`` (VOC folders with ``ImageSets/Main`` also ``"val"``, ``"trainval"``).
        single_class: merge every label into this one class (e.g. ``"Tree"`` for tree crowns labelled
            ``Tree`` / ``Alive`` / ``Dead`` / ``0`` by different sites).
        classes: class names in index order (default: the COCO categories, else the labels found, sorted).
        split_by: ``"image"``, ``"region"`` or ``"auto"`` (region below five images); see the module docstring.
        test_fraction: share of images (or of every image's rows) held out as test.
        seed: seed of the by-image split.

    Attributes:
        images: ``(C, H, W)`` arrays (for a region split: the image's train or test rows).
        boxes: ``(N, 4)`` float32 ``xyxy`` pixel boxes per image.
        labels: ``(N,)`` int64 class indices per image.
        names: image stems (``stem[rows a:b]`` for regions).
        classes: class names; band_names, value_scale: as for the other dense datasets.

    Raises:
        DataError: no annotations, an annotated image missing, two annotation files that disagree on one image, a
            box outside its image, a label not in ``classes``, an empty split.
        ConfigError: a bad split, ``split_by`` or ``test_fraction``.
    """

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        single_class: str | None = None,
        classes: Sequence[str] | None = None,
        split_by: str = "auto",
        test_fraction: float = 0.3,
        seed: int = 0,
    ) -> None:
        self.path = Path(path)
        if split_by not in ("auto", "image", "region"):
            raise ConfigError(f"split_by {split_by!r}: valid are auto, image, region")
        if not 0 < test_fraction < 1:
            raise ConfigError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        self.split = split
        annotations, image_dir, coco_classes, voc_splits = self._annotations()
        if not annotations:
            raise DataError(f"{self.path}: no box annotations found")
        if single_class is not None:
            annotations = {k: Boxes(v.xyxy, [single_class] * len(v.labels), v.source) for k, v in annotations.items()}
            classes = [single_class]
        if classes is None:
            classes = coco_classes or sorted({lab for b in annotations.values() for lab in b.labels})
        self.classes = list(classes)
        index = {c: i for i, c in enumerate(self.classes)}

        names = sorted(annotations)
        if voc_splits is not None:
            if split not in voc_splits:
                raise ConfigError(f"split {split!r}: {self.path} lists {', '.join(sorted(voc_splits))}")
            chosen = [n for n in names if Path(n).stem in voc_splits[split]]
            mode = "published"
        else:
            if split not in ("train", "test"):
                raise ConfigError(f"split {split!r}: valid are train and test")
            mode = split_by if split_by != "auto" else (
                "image" if len(names) >= MIN_IMAGES_FOR_IMAGE_SPLIT else "region")
            if mode == "image":
                n_test = max(1, round(test_fraction * len(names)))
                if n_test >= len(names):
                    raise DataError(f"{self.path}: {len(names)} image(s) are too few to split by image")
                order = np.random.RandomState(seed).permutation(len(names))
                test = set(order[len(names) - n_test :].tolist())
                chosen = [n for i, n in enumerate(names) if (i in test) == (split == "test")]
            else:
                chosen = names
        self.split_mode = mode
        self.test_fraction = test_fraction

        self.images: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.names: list[str] = []
        self.band_names: tuple[str, ...] | None = None
        for k, name in enumerate(chosen):
            ann = annotations[name]
            image_path = self._image_path(image_dir, name, ann.source)
            image = read_image_file(image_path)
            if k == 0:
                self.band_names, self.value_scale, count = image.band_names, image.value_scale, image.array.shape[0]
            elif image.array.shape[0] != count or image.band_names != self.band_names:
                raise DataError(f"{image_path}: bands {image.band_names or image.array.shape[0]} differ from the "
                                f"first image's {self.band_names or count}")
            height, width = image.array.shape[1:]
            xyxy = ann.xyxy.copy()
            outside = (xyxy[:, 0] >= width) | (xyxy[:, 1] >= height) | (xyxy[:, 2] <= 0) | (xyxy[:, 3] <= 0)
            if outside.any():
                b = xyxy[np.flatnonzero(outside)[0]]
                raise DataError(f"{ann.source}: box {b.tolist()} lies outside {image_path.name} ({width}x{height} px)")
            xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
            xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
            unknown = sorted(set(ann.labels) - set(index))
            if unknown:
                raise DataError(f"{ann.source}: label(s) {unknown} not among classes {self.classes}")
            labels = np.array([index[lab] for lab in ann.labels], np.int64)
            array, stem = image.array, Path(name).stem
            if mode == "region":
                split_row = height - max(1, round(test_fraction * height))
                rows = (0, split_row) if split == "train" else (split_row, height)
                xyxy, kept = crop_boxes(xyxy, (rows[0], 0, rows[1] - rows[0], width))
                labels = labels[kept]
                array = array[:, rows[0] : rows[1]]
                stem = f"{stem}[rows {rows[0]}:{rows[1]}]"
            self.images.append(np.ascontiguousarray(array))
            self.boxes.append(xyxy.astype(np.float32))
            self.labels.append(labels)
            self.names.append(stem)
        if not self.images:
            raise DataError(f"{self.path}: split {split!r} has no images")

    # -- sources ----------------------------------------------------------------------------------------
    def _annotations(self) -> tuple[dict[str, Boxes], Path, list[str] | None, dict[str, set[str]] | None]:
        """``(annotations by image file name, image folder, COCO categories or None, VOC split lists or None)``."""
        path = self.path
        if path.is_file() and path.suffix.lower() == ".json":
            annotations, categories = read_coco_json(path)
            image_dir = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
            self.format = "coco"
            return annotations, image_dir, categories, None
        if not path.is_dir():
            raise DataError(f"{path}: detection data not found (a COCO .json, a VOC folder or a folder of images)")
        if (path / "Annotations").is_dir():
            self.format = "voc"
            annotations = self._merge(read_voc_xml(p) for p in sorted((path / "Annotations").glob("*.xml")))
            image_dir = path / "JPEGImages" if (path / "JPEGImages").is_dir() else path / "Annotations"
            sets = path / "ImageSets" / "Main"
            voc_splits = None
            if sets.is_dir():
                voc_splits = {p.stem: {line.split()[0] for line in p.read_text().splitlines() if line.strip()}
                              for p in sets.glob("*.txt") if p.stem in ("train", "val", "trainval", "test")}
                voc_splits = voc_splits or None
            return annotations, image_dir, None, voc_splits
        jsons = sorted(path.glob("*.json"))
        csvs, xmls = sorted(path.glob("*.csv")), sorted(path.glob("*.xml"))
        if len(jsons) == 1 and not csvs and not xmls:
            self.path = jsons[0]
            return self._annotations()
        self.format = "csv_xml"
        items: list[tuple[str, Boxes]] = []
        for csv_path in csvs:
            items += list(read_boxes_csv(csv_path).items())
        items += [read_voc_xml(p) for p in xmls]
        return self._merge(items), path, None, None

    @staticmethod
    def _merge(items) -> dict[str, Boxes]:
        """One annotation per image; a second file for the same image must agree with the first."""
        out: dict[str, Boxes] = {}
        for name, boxes in items:
            if name in out:
                if not out[name].same_as(boxes):
                    raise DataError(f"{boxes.source}: boxes for {name} disagree with {out[name].source}")
                continue
            out[name] = boxes
        return out

    @staticmethod
    def _image_path(image_dir: Path, name: str, source: Path) -> Path:
        for candidate in (image_dir / name, source.parent / name):
            if candidate.is_file():
                return candidate
        partner = find_partner(image_dir, Path(name).stem, DENSE_IMAGE_SUFFIXES)
        if partner is None:
            raise DataError(f"{source}: annotated image {name} not found in {image_dir}")
        return partner

    # -- access -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        """``{"image": (C, H, W) raw values, "boxes": float32 (N, 4) xyxy, "labels": int64 (N,), "name": str}``."""
        return {
            "image": torch.from_numpy(self.images[index]),
            "boxes": torch.from_numpy(self.boxes[index]),
            "labels": torch.from_numpy(self.labels[index]),
            "name": self.names[index],
        }

    @property
    def num_boxes(self) -> int:
        return int(sum(len(b) for b in self.boxes))

    def __repr__(self) -> str:
        return (f"DetectionFolder({self.path}, split={self.split!r}, {len(self)} images, {self.num_boxes} boxes, "
                f"classes={self.classes}, split by {self.split_mode})")


class NeonTreeCrowns(DetectionFolder):
    """NEON airborne RGB crops with tree-crown boxes from DeepForest's test data, as one class ``Tree``.

    The three sites label crowns differently (``Tree``; ``Alive`` / ``Dead``; ``0``, DeepForest's numeric id for a
    tree); detection of tree crowns, as DeepForest scores it, is one class. With three images the split is by region.

    Args:
        root: the ``deepforest_neon_trees`` folder (default: under the shared data root).
        split: ``"train"`` or ``"test"``.
        test_fraction: share of every image's rows held out for testing.
    """

    def __init__(self, root: str | Path | None = None, split: str = "train", test_fraction: float = 0.3) -> None:
        if root is None:
            from rspretrain.data.io.data_root import default_data_root

            root = default_data_root() / "deepforest_neon_trees"
        super().__init__(root, split, single_class="Tree", split_by="region", test_fraction=test_fraction)
