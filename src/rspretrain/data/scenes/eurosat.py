"""EuroSAT RGB: 27,000 Sentinel-2 patches (64x64 px, 10 m) in 10 land-use / land-cover classes.

Reference:
    P. Helber, B. Bischke, A. Dengel, D. Borth. "EuroSAT: A Novel Dataset and Deep Learning Benchmark for Land Use and
    Land Cover Classification." IEEE Journal of Selected Topics in Applied Earth Observations and Remote Sensing
    12(7):2217-2226, 2019 (also IGARSS 2018). Contains modified Copernicus Sentinel data.
"""

from __future__ import annotations

from pathlib import Path

from rspretrain.data.io.in_memory import InMemoryImageDataset
from rspretrain.data.scenes import split_tables as _tables


class EuroSAT(InMemoryImageDataset):
    """EuroSAT RGB read straight from the stored zip archive, decoded once into memory.

    Expects the layout of ``shared/data/eurosat_rgb`` (see its MANIFEST.md)::

        eurosat_rgb/EuroSAT_RGB.zip   members EuroSAT_RGB/<class_name>/<filename>, original JPEGs
        eurosat_rgb/splits.csv        filename,label,class_name,split,rank_in_class
        eurosat_rgb/classes.txt       AnnualCrop, Forest, ..., SeaLake (label = line index)

    The split is the manifest's deterministic stratified split (per class, ``rank_in_class`` is the position in a
    ``RandomState(0)`` permutation; ranks ``< 0.6 n`` are train, the next ``0.2 n`` val, the rest test), giving
    16,200 / 5,400 / 5,400 images. It has the sizes of the split of Neumann et al. but not its membership.

    ``max_per_class=k`` keeps, within the chosen split and for each class, the ``k`` rows with the lowest
    ``rank_in_class``. For ``"train"``, ``"trainval"`` and ``"all"`` (which start at rank 0) these are exactly the
    rows with ``rank_in_class < k``; for ``"val"`` and ``"test"`` they are the first ``k`` ranks of that split (for a
    class of n images, ranks ``0.6 n .. 0.6 n + k - 1`` of val). Because the ranks are a random permutation, this
    is a stratified random sample, and a smaller ``k`` always gives a subset of a larger one. A class with fewer than
    ``k`` rows keeps all of them.

    Images are ordered by label, then by ``rank_in_class`` (not by file name), so the first ``k`` images of each
    class in dataset order are a random stratified sample too, the same one ``max_per_class=k`` selects.

    Samples are ``{"image": uint8 (3, 64, 64), "label": int64}``; see :class:`InMemoryImageDataset`.

    Args:
        root: the shared data root (the folder that holds ``eurosat_rgb/``), or ``eurosat_rgb/`` itself; None uses
            :func:`~rspretrain.data.default_data_root`.
        split: ``"train"``, ``"val"``, ``"test"``, ``"trainval"`` (train + val) or ``"all"``.
        max_per_class: keep at most this many images per class (see above); None keeps all.
        image_size: resize to this square size (bilinear); None keeps 64x64.
        cache: use the on-disk decoded-array cache (:mod:`rspretrain.data.io.cache`).
        skip_corrupt: skip undecodable images (listed in :attr:`skipped`) instead of raising.

    Raises:
        DataError: missing files, inconsistent ``splits.csv`` / ``classes.txt`` / archive, undecodable image.
        ConfigError: unknown ``split`` or invalid ``max_per_class``.
    """

    folder = "eurosat_rgb"
    archive_name = "EuroSAT_RGB.zip"
    member_prefix = "EuroSAT_RGB"
    splits = ("train", "val", "test", "trainval", "all")

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        max_per_class: int | None = None,
        image_size: int | None = None,
        cache: bool = True,
        skip_corrupt: bool = False,
    ) -> None:
        _tables.check_split(split, self.splits, "EuroSAT")
        _tables.check_max_per_class(max_per_class, "EuroSAT")
        t = _tables.read_split_table(root, self.folder, self.archive_name)
        keep = _tables.rows_in_split(t.rows, split, t.table)
        sources, labels = _tables.zip_members_by_rank(
            t.archive, self.member_prefix, t.table, t.rows, t.labels, t.ranks, keep, max_per_class
        )
        self.root = t.folder
        self.split = split
        self._init_from_sources(sources, labels, t.classes, image_size, cache, skip_corrupt)
