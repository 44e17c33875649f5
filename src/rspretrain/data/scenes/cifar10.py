"""A 10,000-image subset of CIFAR-10 (32x32 natural images, 10 classes), stored as JPEGs in a zip archive.

Used as a small labelled natural-image set (a stand-in for ImageNet in GeRSP's supervised branch).

Reference:
    A. Krizhevsky. "Learning Multiple Layers of Features from Tiny Images." Technical report, University of Toronto,
    2009.
"""

from __future__ import annotations

from pathlib import Path

from rspretrain.core.errors import DataError
from rspretrain.data.io.decode import ZipMember
from rspretrain.data.io.in_memory import InMemoryImageDataset
from rspretrain.data.scenes import split_tables as _tables


class CIFAR10Subset(InMemoryImageDataset):
    """The stored CIFAR-10 subset read straight from its zip archive, decoded once into memory.

    Expects the layout of ``shared/data/cifar10_subset`` (see its MANIFEST.md)::

        cifar10_subset/cifar10_subset.zip   members {train,test}/<class>/NNNN.jpg
        cifar10_subset/labels.csv           path,label,class_name,split  (path = member name)
        cifar10_subset/classes.txt          airplane, automobile, ..., truck (label = line index)

    ``split`` is the original CIFAR-10 split: 800 images per class from its training set (``"train"``, 8,000) and
    200 per class from its test set (``"test"``, 2,000); ``"all"`` is both. The JPEGs are the source repository's
    lossy re-encodings of the original arrays. Images keep the order of ``labels.csv``.

    Args:
        root: the shared data root (the folder that holds ``cifar10_subset/``), or that folder itself; None uses
            :func:`~rspretrain.data.default_data_root`.
        split: ``"train"``, ``"test"`` or ``"all"``.
        image_size: resize to this square size (bilinear); None keeps 32x32.
        cache: use the on-disk decoded-array cache (:mod:`rspretrain.data.io.cache`).
        skip_corrupt: skip undecodable images (listed in :attr:`skipped`) instead of raising.

    Raises:
        DataError: missing files, inconsistent ``labels.csv`` / ``classes.txt`` / archive, undecodable image.
        ConfigError: unknown ``split``.
    """

    folder = "cifar10_subset"
    archive_name = "cifar10_subset.zip"
    splits = ("train", "test", "all")

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        image_size: int | None = None,
        cache: bool = True,
        skip_corrupt: bool = False,
    ) -> None:
        _tables.check_split(split, self.splits, "CIFAR10Subset")
        folder = _tables.dataset_folder(root, self.folder, "labels.csv")
        table, classes_file, archive = folder / "labels.csv", folder / "classes.txt", folder / self.archive_name
        classes = _tables.read_classes(classes_file)
        rows = _tables.read_table(table, ("path", "label", "class_name", "split"))
        for row in rows:
            if row["split"] not in ("train", "test"):
                raise DataError(f"{table}:{row.line}: unknown split {row['split']!r}")
        rows = [row for row in rows if split == "all" or row["split"] == split]
        labels = _tables.check_labels(rows, classes, table, classes_file)
        members = [row["path"] for row in rows]
        _tables.check_members(archive, members, table)
        self.root = folder
        self.split = split
        self._init_from_sources(
            [ZipMember(archive, m) for m in members], labels, classes, image_size, cache, skip_corrupt
        )
