"""Two image sources in one batch: unlabeled RS images + labeled natural images (GeRSP [0]).

Item ``i`` is RS image ``i mod |RS|`` and natural image ``i mod |N|`` with its label, as in
GeRSP's official multi-source dataset; the epoch length is the larger source (configurable),
so the shorter source is cycled. RS items keep their own ``label`` where they have one (the land-cover
proportions of georeferenced tiles: the ``land_cover`` and ``natural_images`` terms together).

References:
    - [0] GeRSP, Huang et al., IEEE TGRS 2024, https://arxiv.org/abs/2401.04614
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from rspretrain.core.errors import DataError


class PairedDataset(Dataset):
    """Pairs an RS dataset with a labeled natural-image dataset by index modulo their lengths.

    Args:
        rs: unlabeled (or label-ignored) RS images with ``__getitems__``.
        natural: labeled natural images with ``__getitems__`` returning ``"label"``.
        length: epoch length (default: the larger of the two).
        rs_name, natural_name: names used in error messages.
    """

    def __init__(self, rs, natural, length: int | None = None, rs_name: str = "rs", natural_name: str = "natural"):
        if len(rs) == 0:
            raise DataError(f"{rs_name}: the RS image source is empty")
        if len(natural) == 0:
            raise DataError(f"{natural_name}: the natural image source is empty")
        if getattr(natural, "labels", None) is None:
            raise DataError(f"{natural_name}: the natural image source has no labels (the natural_images knowledge "
                            "term, GeRSP's supervised branch, learns from them)")
        rs_bands = rs.__getitems__([0])["image"].shape[1]
        nat_bands = natural.__getitems__([0])["image"].shape[1]
        if rs_bands != nat_bands:
            raise DataError(f"{natural_name}: natural images have {nat_bands} bands but the RS images have {rs_bands}")
        self.rs, self.natural = rs, natural
        self.length = int(length) if length else max(len(rs), len(natural))
        self.band_names = getattr(rs, "band_names", None)
        self.value_scale = getattr(rs, "value_scale", 255.0)
        # Natural images are put on the RS source's value scale, so one conversion serves both
        # halves of the batch (e.g. uint8 photos beside 3-band uint16 rasters).
        self.natural_rescale = float(self.value_scale) / float(getattr(natural, "value_scale", 255.0))
        self.classes = getattr(natural, "classes", None)
        self.num_classes = len(self.classes) if self.classes else int(natural.labels.max()) + 1
        #: ``"proportions"`` when the RS items are land-cover tiles (their classes: ``rs.classes``), else None.
        self.rs_target_kind = getattr(rs, "target_kind", None)

    def __len__(self) -> int:
        return self.length

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        rs = self.rs.__getitems__([i % len(self.rs) for i in indices])
        nat = self.natural.__getitems__([i % len(self.natural) for i in indices])
        natural = nat["image"] if self.natural_rescale == 1.0 else nat["image"].float() * self.natural_rescale
        out = {"image": rs["image"], "natural_image": natural, "natural_label": nat["label"]}
        if "label" in rs:
            out["label"] = rs["label"]
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([index])
        return {key: value[0] for key, value in batch.items()}
