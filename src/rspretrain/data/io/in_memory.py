"""Images decoded once into one ``uint8`` tensor, indexed per sample or per batch.

Every image-file dataset of :mod:`rspretrain.data` (EuroSAT, UC Merced, CIFAR-10, scene folders, unlabeled
images) is an :class:`InMemoryImageDataset`: JPEG decoding is paid once (and cached on disk, see
:mod:`rspretrain.data.io.cache`), and later epochs only gather rows of an ``(N, C, H, W)`` tensor. The DataLoader's
fetcher calls :meth:`InMemoryImageDataset.__getitems__` with a whole batch of indices when the method exists, which
turns a batch into a single ``index_select``. Because that method returns an already batched dict, loaders must use
:func:`rspretrain.data.io.collate.collate_batched` as ``collate_fn``.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from rspretrain.data.io import cache as _cache
from rspretrain.data.io import decode as _decode
from rspretrain.data.io.decode import ZipMember

logger = logging.getLogger("rspretrain")

#: Band names of the RGB images Pillow decodes.
RGB_BANDS: tuple[str, ...] = ("red", "green", "blue")


def load_images(
    sources: Sequence[str | os.PathLike | ZipMember],
    image_size: int | None = None,
    cache: bool = True,
    skip_corrupt: bool = False,
) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode ``sources`` (or load their decoded array from the disk cache) into a ``(K, 3, H, W)`` uint8 tensor.

    Args:
        sources: image files or zip members.
        image_size: resize every image to this square size; None requires equal sizes.
        cache: read/write the decoded array in the disk cache (:mod:`rspretrain.data.io.cache`).
        skip_corrupt: skip undecodable images instead of raising :class:`DataError`.

    Returns:
        ``(images, kept, skipped)``: the tensor, the source index of each of its rows, and the skipped sources.
    """
    items = [_decode.as_source(s) for s in sources]
    key = _cache.cache_key(items, image_size, skip_corrupt) if cache else None
    if key is None:
        logger.info("decoding %d images (first: %s)", len(items), items[0])
        decoded = _decode.decode_images(items, image_size=image_size, skip_corrupt=skip_corrupt)
        return torch.from_numpy(decoded.array), decoded.kept, decoded.skipped
    # One process of the machine decodes; the others wait here and then map what it wrote.
    with _cache.entry_lock(key):
        hit = _cached(key, items)
        if hit is not None:
            return hit
        logger.info("decoding %d images (first: %s)", len(items), items[0])
        decoded = _decode.decode_images(items, image_size=image_size, skip_corrupt=skip_corrupt)
        skipped_set = set(range(len(items))) - set(decoded.kept)
        saved = _cache.save_cached(key, decoded.array, sorted(skipped_set), f"{len(items)} images, first {items[0]}")
    if saved is not None:
        # This process maps the shared file like the others (its private copy is freed); the bytes were checksummed
        # as they were written, a moment ago, so they are not hashed again.
        hit = _cached(key, items, verify=False)
        if hit is not None:
            return hit
    return torch.from_numpy(decoded.array), decoded.kept, decoded.skipped


def _cached(key: str, items: list, verify: bool = True) -> tuple[torch.Tensor, list[int], list[str]] | None:
    """The cache entry of ``items`` as a tensor over its read-only memory map, or None."""
    hit = _cache.load_cached(key, verify=verify)
    if hit is None:
        return None
    array, skipped_idx = hit
    if array.shape[0] + len(skipped_idx) != len(items):
        logger.warning("ignoring cache entry %s: it holds a different number of images; decoding again", key)
        return None
    skipped_set = set(skipped_idx)
    skipped = [str(items[i]) for i in sorted(skipped_set)]
    if skipped:
        logger.warning("skipped %d of %d images that could not be decoded (first: %s)",
                       len(skipped), len(items), skipped[0])
    logger.debug("mapped %d decoded images from the cache (key %s)", array.shape[0], key)
    kept = [i for i in range(len(items)) if i not in skipped_set]
    with warnings.catch_warnings():
        # Read-only on purpose: every process shares the one mapped copy; the dataset only ever copies rows out
        # (index_select, clone), never writes into its storage.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array), kept, skipped


class SourceList(NamedTuple):
    """The image files of a dataset and their labels, before any decoding (see :func:`list_sources`)."""

    sources: list
    labels: list[int] | None
    classes: list[str] | None


def list_sources(cls: type, *args, **kwargs) -> SourceList:
    """The files an :class:`InMemoryImageDataset` subclass would decode for these constructor arguments, and their
    labels, without decoding anything (``rspretrain prepare`` writes them to shards as they are).

    Example: ``list_sources(EuroSAT, split="train")``, ``list_sources(SceneFolder, "imagenet/train")``.
    """
    dataset = cls.__new__(cls)
    dataset._list_only = True
    cls.__init__(dataset, *args, **kwargs)
    listed = getattr(dataset, "_listed", None)
    if listed is None:
        raise TypeError(f"{cls.__name__} does not read image files through _init_from_sources")
    return listed


class InMemoryImageDataset(Dataset):
    """Images held in memory as one contiguous ``uint8`` tensor, with optional integer labels.

    Samples are dicts ``{"image": uint8 (C, H, W), "label": int64 0-dim}`` (no ``"label"`` key when unlabeled); the
    batched :meth:`__getitems__` returns ``{"image": uint8 (B, C, H, W), "label": int64 (B,)}``. Images stay
    ``uint8``: divide by :attr:`value_scale` to get floats in [0, 1] (views/augmentations do this on the batch).

    Attributes:
        labels: ``int64`` tensor ``(N,)`` or None.
        classes: class names indexed by label, or None.
        band_names: names of the C channels, e.g. ``("red", "green", "blue")``.
        files: per image, its path or ``"archive.zip:member"``.
        value_scale: the value that maps to 1.0 (255.0 for uint8 images).
        skipped: files that were skipped as corrupt while decoding.

    Args:
        images: ``uint8`` tensor ``(N, C, H, W)``; it is stored as given (made contiguous), not copied.
        labels: ``N`` class indices, or None for unlabeled images.
        classes: class names; labels must lie in ``[0, len(classes))``.
        band_names: channel names; defaults to :data:`RGB_BANDS` for 3 channels, else ``band_1``, ...
        files: per-image file names; defaults to ``"#<index>"``.
        value_scale: float range of the pixel values.
        skipped: files skipped as corrupt when the images were decoded.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | Sequence[int] | None = None,
        classes: Sequence[str] | None = None,
        band_names: Sequence[str] | None = None,
        files: Sequence[str] | None = None,
        value_scale: float = 255.0,
        skipped: Sequence[str] = (),
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"images must be a uint8 tensor of shape (N, C, H, W), got {_describe(images)}")
        self._storage = images.contiguous()
        self._rows: torch.Tensor | None = None
        self._setup(len(images), labels, classes, band_names, files, value_scale, skipped)

    def _setup(self, n, labels, classes, band_names, files, value_scale, skipped) -> None:
        channels = self._storage.shape[1]
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.int64)
            if labels.shape != (n,):
                raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
            if classes is not None and n and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
                low, high = int(labels.min()), int(labels.max())
                raise ValueError(f"labels must lie in [0, {len(classes)}), got values in [{low}, {high}]")
        if band_names is None:
            band_names = RGB_BANDS if channels == 3 else tuple(f"band_{i + 1}" for i in range(channels))
        if len(band_names) != channels:
            raise ValueError(f"{len(band_names)} band names for {channels} channels")
        files = [f"#{i}" for i in range(n)] if files is None else [str(f) for f in files]
        if len(files) != n:
            raise ValueError(f"{len(files)} file names for {n} images")
        self.labels: torch.Tensor | None = labels
        self.classes: list[str] | None = None if classes is None else [str(c) for c in classes]
        self.band_names: tuple[str, ...] = tuple(band_names)
        self.files: list[str] = files
        self.value_scale = float(value_scale)
        self.skipped: list[str] = list(skipped)

    def _init_from_sources(
        self,
        sources: Sequence[str | os.PathLike | ZipMember],
        labels: Sequence[int] | None,
        classes: Sequence[str] | None,
        image_size: int | None,
        cache: bool,
        skip_corrupt: bool,
    ) -> None:
        """Decode (or load from cache) ``sources`` and initialise this dataset; used by the named datasets.

        Under :func:`list_sources` it only records what it would decode (the one funnel of every image-file
        dataset, so their layout rules -- split tables, class folders, list files, zips -- are written once).
        """
        if getattr(self, "_list_only", False):
            self._listed = SourceList(list(sources), None if labels is None else [int(v) for v in labels],
                                      None if classes is None else [str(c) for c in classes])
            return
        images, kept, skipped = load_images(sources, image_size=image_size, cache=cache, skip_corrupt=skip_corrupt)
        kept_labels = None if labels is None else [int(labels[i]) for i in kept]
        files = [str(_decode.as_source(sources[i])) for i in kept]
        InMemoryImageDataset.__init__(
            self, images, labels=kept_labels, classes=classes, files=files, value_scale=255.0, skipped=skipped
        )

    @classmethod
    def from_sources(
        cls,
        sources: Sequence[str | os.PathLike | ZipMember],
        labels: Sequence[int] | None = None,
        classes: Sequence[str] | None = None,
        image_size: int | None = None,
        cache: bool = True,
        skip_corrupt: bool = False,
    ) -> InMemoryImageDataset:
        """Decode image files or zip members (once; see :func:`load_images`) into a dataset.

        Args:
            sources: image paths or :class:`~rspretrain.data.io.decode.ZipMember` objects.
            labels: one class index per source, or None.
            classes: class names.
            image_size: resize every image to ``image_size x image_size``; None requires equal sizes.
            cache: use the on-disk decoded-array cache.
            skip_corrupt: skip undecodable images (listed in :attr:`skipped`) instead of raising.
        """
        if labels is not None and len(labels) != len(sources):
            raise ValueError(f"{len(labels)} labels for {len(sources)} sources")
        dataset = InMemoryImageDataset.__new__(InMemoryImageDataset)
        dataset._init_from_sources(sources, labels, classes, image_size, cache, skip_corrupt)
        return dataset

    # ----------------------------------------------------------------------------------------------- storage access

    @property
    def storage(self) -> torch.Tensor:
        """The ``uint8`` tensor shared by this dataset and every :meth:`subset` of it (rows may not all belong here)."""
        return self._storage

    @property
    def rows(self) -> torch.Tensor | None:
        """For a subset, the row of :attr:`storage` holding each sample; None when sample ``i`` is row ``i``."""
        return self._rows

    @property
    def images(self) -> torch.Tensor:
        """All images ``(N, C, H, W)`` uint8: the storage itself, or (for a subset) a gathered copy of its rows."""
        return self._storage if self._rows is None else self._storage.index_select(0, self._rows)

    @property
    def num_classes(self) -> int | None:
        """Number of classes, or None if the dataset has no class list."""
        return None if self.classes is None else len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(self._storage.shape[1:])

    # ------------------------------------------------------------------------------------------------------ indexing

    def __len__(self) -> int:
        return len(self.files)

    def _check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        n = len(self)
        if indices.ndim != 1:
            raise IndexError(f"expected a flat list of indices, got shape {tuple(indices.shape)}")
        if len(indices) and (int(indices.min()) < -n or int(indices.max()) >= n):
            raise IndexError(f"index out of range for a dataset of {n} images")
        return torch.where(indices < 0, indices + n, indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n = len(self)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        index %= n
        row = index if self._rows is None else int(self._rows[index])
        # clone(): a view would let an in-place augmentation silently alter the stored image for later epochs.
        sample = {"image": self._storage[row].clone()}
        if self.labels is not None:
            sample["label"] = self.labels[index].clone()
        return sample

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Gather a whole batch with one ``index_select``: ``{"image": (B, C, H, W) uint8, "label": (B,) int64}``."""
        index = self._check_indices(torch.as_tensor(list(indices), dtype=torch.int64))
        rows = index if self._rows is None else self._rows.index_select(0, index)
        batch = {"image": self._storage.index_select(0, rows)}
        if self.labels is not None:
            batch["label"] = self.labels.index_select(0, index)
        return batch

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> InMemoryImageDataset:
        """A dataset of the samples at ``indices`` that shares this dataset's image storage (no image is copied)."""
        index = self._check_indices(torch.as_tensor(np.asarray(indices), dtype=torch.int64).reshape(-1))
        subset = InMemoryImageDataset.__new__(InMemoryImageDataset)
        subset._storage = self._storage
        subset._rows = index if self._rows is None else self._rows.index_select(0, index)
        subset._setup(
            len(index),
            None if self.labels is None else self.labels.index_select(0, index),
            self.classes,
            self.band_names,
            [self.files[i] for i in index.tolist()],
            self.value_scale,
            self.skipped,
        )
        return subset

    def class_counts(self) -> dict[str, int]:
        """Number of images per class, in label order (classes without images count 0)."""
        if self.labels is None:
            raise ValueError("class_counts() needs a labelled dataset")
        names = self.classes if self.classes is not None else [str(i) for i in range(int(self.labels.max()) + 1)]
        counts = torch.bincount(self.labels, minlength=len(names)).tolist()
        return dict(zip(names, counts))

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        labelled = ""
        if self.labels is not None:
            labelled = f", {self.num_classes} classes" if self.classes is not None else ", labelled"
        return f"{type(self).__name__}({len(self)} images, {c}x{h}x{w} uint8{labelled})"


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


__all__ = ["InMemoryImageDataset", "RGB_BANDS", "SourceList", "list_sources", "load_images"]
