"""UC Merced Land Use: 2,100 aerial RGB images (1 ft / 0.3 m USGS orthoimagery) in 21 classes of 100.

Reference:
    Y. Yang, S. Newsam. "Bag-Of-Visual-Words and Spatial Extensions for Land-Use Classification." ACM SIGSPATIAL
    International Conference on Advances in Geographic Information Systems (ACM GIS), 2010.
"""

from __future__ import annotations

import math
from pathlib import Path

from rspretrain.core.errors import ConfigError
from rspretrain.data.io.in_memory import InMemoryImageDataset
from rspretrain.data.scenes import split_tables as _tables


class UCMerced(InMemoryImageDataset):
    """UC Merced Land Use read straight from the stored zip archive, decoded once into memory.

    Expects the layout of ``shared/data/ucmerced`` (see its MANIFEST.md)::

        ucmerced/UCMerced_LandUse_jpg_q85.zip   members UCMerced_LandUse/Images/<class_name>/<filename>
        ucmerced/splits.csv                     filename,label,class_name,split,rank_in_class,width,height
        ucmerced/classes.txt                    agricultural, airplane, ..., tenniscourt (label = line index)

    The stored images are JPEG (quality 85) re-encodings of the original TIFFs. 2,056 images are 256x256 and 44 are
    slightly smaller (e.g. 247x247, 253x256) as in the original release; all are resized (bilinear) to
    ``image_size`` (default 256), since one tensor needs one size.

    Two ways to choose the split:

    * ``train_ratio=None`` (default): the manifest's split by ``rank_in_class`` (a per-class ``RandomState(0)``
      permutation): ranks 0-59 train, 60-79 val, 80-99 test (1260 / 420 / 420); ``"trainval"`` = ranks 0-79.
    * ``train_ratio=r``: the literature's "r train" protocols: per class of n images, ``"train"`` = the rows with
      ``rank_in_class < round(r * n)`` and ``"test"`` = the rest. ``r=0.5`` gives 50 / 50 per class; ``r=0.8``
      gives 80 / 20, i.e. manifest train + val vs manifest test. Only ``"train"``, ``"test"`` and ``"all"`` exist.

    ``max_per_class=k`` then keeps, per class, the ``k`` rows of the split with the lowest ``rank_in_class`` (see
    :class:`~rspretrain.data.EuroSAT`). Images are ordered by label, then by ``rank_in_class``, so the first
    ``k`` images of a class in dataset order are a random stratified sample.

    Args:
        root: the shared data root (the folder that holds ``ucmerced/``), or ``ucmerced/`` itself; None uses
            :func:`~rspretrain.data.default_data_root`.
        split: ``"train"``, ``"val"``, ``"test"``, ``"trainval"`` or ``"all"`` (with ``train_ratio``: train/test/all).
        image_size: square size every image is resized to; None requires equal sizes (and fails on this dataset's
            smaller images, with a message saying so).
        train_ratio: fraction of each class used for training (in (0, 1)), or None for the manifest split.
        max_per_class: keep at most this many images per class; None keeps all.
        cache: use the on-disk decoded-array cache (:mod:`rspretrain.data.io.cache`).
        skip_corrupt: skip undecodable images (listed in :attr:`skipped`) instead of raising.

    Raises:
        DataError: missing files, inconsistent ``splits.csv`` / ``classes.txt`` / archive, undecodable image.
        ConfigError: unknown ``split``, ``train_ratio`` outside (0, 1), invalid ``max_per_class``.
    """

    folder = "ucmerced"
    archive_name = "UCMerced_LandUse_jpg_q85.zip"
    member_prefix = "UCMerced_LandUse/Images"
    splits = ("train", "val", "test", "trainval", "all")
    ratio_splits = ("train", "test", "all")

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        image_size: int | None = 256,
        train_ratio: float | None = None,
        max_per_class: int | None = None,
        cache: bool = True,
        skip_corrupt: bool = False,
    ) -> None:
        if train_ratio is None:
            _tables.check_split(split, self.splits, "UCMerced")
        else:
            if not isinstance(train_ratio, (int, float)) or not 0.0 < float(train_ratio) < 1.0:
                raise ConfigError(f"UCMerced: train_ratio must lie strictly between 0 and 1, got {train_ratio!r}")
            _tables.check_split(split, self.ratio_splits, f"UCMerced with train_ratio={train_ratio}")
        _tables.check_max_per_class(max_per_class, "UCMerced")
        t = _tables.read_split_table(root, self.folder, self.archive_name)
        if train_ratio is None:
            keep = _tables.rows_in_split(t.rows, split, t.table)
        else:
            labels, ranks = t.labels, t.ranks
            per_class = {label: labels.count(label) for label in set(labels)}
            # round half up (not Python's banker's rounding), so 0.5 * 25 images gives 13 training images.
            cut = {label: math.floor(float(train_ratio) * n + 0.5) for label, n in per_class.items()}
            in_train = [ranks[p] < cut[labels[p]] for p in range(len(labels))]
            keep = [p for p in range(len(labels)) if split == "all" or in_train[p] == (split == "train")]
        sources, labels = _tables.zip_members_by_rank(
            t.archive, self.member_prefix, t.table, t.rows, t.labels, t.ranks, keep, max_per_class
        )
        self.root = t.folder
        self.split = split
        self.train_ratio = train_ratio
        self._init_from_sources(sources, labels, t.classes, image_size, cache, skip_corrupt)
