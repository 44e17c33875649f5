"""Class-per-folder scene-classification datasets in their published layout, from a folder or a zip archive.

Most remote-sensing scene datasets are distributed as one folder per class, e.g.

* AID: G.-S. Xia et al. "AID: A Benchmark Data Set for Performance Evaluation of Aerial Scene Classification."
  IEEE TGRS 55(7):3965-3981, 2017 (30 classes, 10,000 images of 600x600 px);
* NWPU-RESISC45: G. Cheng, J. Han, X. Lu. "Remote Sensing Image Scene Classification: Benchmark and State of the
  Art." Proceedings of the IEEE 105(10):1865-1883, 2017 (45 classes x 700 images of 256x256 px);
* RSSCN7: Q. Zou et al. "Deep Learning Based Feature Selection for Remote Sensing Scene Classification." IEEE GRSL
  12(11):2321-2325, 2015 (7 classes x 400 images of 400x400 px);
* WHU-RS19: G.-S. Xia et al. "Structural High-resolution Satellite Image Indexing." ISPRS TC VII Symposium, 2010
  (19 classes, 1,005 images of 600x600 px).

None of them defines an official train/test split; :func:`split_indices` draws a deterministic stratified one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data.io.in_memory import InMemoryImageDataset
from rspretrain.data.io.listing import IMAGE_EXTENSIONS, is_image, list_tree, normalize_extensions


class SceneFolder(InMemoryImageDataset):
    """Images in ``<path>/<class>/<image>``, labelled by folder, decoded once into memory.

    ``path`` is a folder or a ``.zip`` archive with that layout. Wrapper folders are skipped: while every image lies
    at least two levels below one common top-level folder (``NWPU-RESISC45/<class>/<image>`` inside a zip, or
    ``PatternNet/images/<class>/<image>``), that folder is treated as the root. Classes are the class folders' names
    sorted alphabetically (Python's ``sorted``, as torchvision's ``ImageFolder``); label ``i`` is ``classes[i]``.
    Images are the files ending in one of ``extensions`` (case-insensitive), sorted by name; other files and hidden
    files/folders (``.*``, ``__MACOSX``) are ignored.

    Samples are ``{"image": uint8 (3, H, W), "label": int64}``; see :class:`InMemoryImageDataset`. Datasets whose
    images differ in size (or are large, like AID's 600x600) need ``image_size``.

    Args:
        path: the dataset folder or zip archive.
        image_size: resize every image to this square size (bilinear); None requires all images to share one size.
        extensions: file extensions that are images.
        cache: use the on-disk decoded-array cache (:mod:`rspretrain.data.io.cache`).
        skip_corrupt: skip undecodable images (listed in :attr:`skipped`) instead of raising.

    Raises:
        DataError: ``path`` missing; no class folder with images; a class folder without images; an image outside a
            class folder or nested below one; an undecodable image; differing sizes without ``image_size``.
    """

    def __init__(
        self,
        path: str | Path,
        image_size: int | None = None,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        cache: bool = True,
        skip_corrupt: bool = False,
    ) -> None:
        path = Path(path).expanduser()
        extensions = normalize_extensions(extensions)
        searched = f"searched for {', '.join(extensions)}"
        entries = list_tree(path)
        images = [e for e in entries if is_image(e, extensions)]
        if not images:
            raise DataError(f"{path}: no class folders with images ({searched})")
        depth = 0
        while all(len(e.parts) - depth >= 3 for e in images) and len({e.parts[depth] for e in images}) == 1:
            depth += 1
        prefix = images[0].parts[:depth]
        for entry in images:
            relative = entry.parts[depth:]
            if len(relative) == 1:
                raise DataError(f"{entry.display}: image outside a class folder (expected <class>/<image>)")
            if len(relative) > 2:
                raise DataError(
                    f"{entry.display}: image nested below class folder {relative[0]!r} (expected <class>/<image>)"
                )
        classes = sorted({e.parts[depth] for e in images})
        # A class folder without images is almost always an incomplete download or extraction: fail, do not drop it.
        for entry in entries:
            if entry.is_dir and len(entry.parts) == depth + 1 and entry.parts[:depth] == prefix:
                if entry.parts[depth] not in classes:
                    raise DataError(f"{entry.display}: class folder has no images ({searched})")
        index = {name: i for i, name in enumerate(classes)}
        self.root = path
        self._init_from_sources(
            [e.source for e in images], [index[e.parts[depth]] for e in images], classes, image_size, cache,
            skip_corrupt,
        )


def split_indices(
    dataset: InMemoryImageDataset | Sequence[int] | np.ndarray | torch.Tensor,
    train_fraction: float = 0.8,
    seed: int = 0,
) -> tuple[list[int], list[int]]:
    """Deterministic stratified train/test split for datasets without an official one.

    For each class in increasing label order, the indices of its images are permuted with one shared
    ``numpy.random.RandomState(seed)``; the first ``round(train_fraction * n)`` (rounding halves up) go to train and
    the rest to test. This is the procedure ``shared/data/MANIFEST.md`` uses for its own splits.

    Args:
        dataset: a labelled dataset (anything with a ``labels`` attribute) or the labels themselves.
        train_fraction: fraction of each class for training, strictly between 0 and 1.
        seed: seed of the ``RandomState``.

    Returns:
        ``(train_indices, test_indices)``, each sorted ascending; together they cover every index exactly once.

    Raises:
        ConfigError: ``train_fraction`` not in (0, 1).
        ValueError: the dataset has no labels.
    """
    if not 0.0 < float(train_fraction) < 1.0:
        raise ConfigError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction!r}")
    labels = getattr(dataset, "labels", dataset)
    if labels is None:
        raise ValueError("split_indices() needs a labelled dataset")
    labels = torch.as_tensor(labels).cpu().numpy().reshape(-1)
    rng = np.random.RandomState(seed)
    train: list[int] = []
    test: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        permuted = members[rng.permutation(len(members))]
        n_train = math.floor(float(train_fraction) * len(members) + 0.5)
        train += permuted[:n_train].tolist()
        test += permuted[n_train:].tolist()
    return sorted(train), sorted(test)
