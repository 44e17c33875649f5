"""Datasets: named remote-sensing benchmarks read from their archives, generic folders, unlabeled images, rasters.

Image-file datasets decode every image once into one ``uint8`` tensor (:class:`InMemoryImageDataset`, cached on disk
under ``$RSPRETRAIN_CACHE``); samples are dicts ``{"image": ..., "label": ...}``, and ``__getitems__`` returns a whole
batch, so DataLoaders take ``collate_fn=collate_batched``. Multispectral GeoTIFFs go through :func:`read_raster`
and :class:`RasterTiles`; :class:`LandCoverTiles` adds the land-cover class proportions of each tile's footprint
(GeoKR's labels, :mod:`rspretrain.data.pretrain.land_cover`); :class:`SceneCollection` joins several scenes' tiles.
:func:`build_dataset` builds any of them from a spec string.
"""

from rspretrain.data.build import SPEC_FORMS, build_dataset
from rspretrain.data.io.collate import collate_batched
from rspretrain.data.io.data_root import default_data_root
from rspretrain.data.io.decode import ZipMember, decode_images
from rspretrain.data.io.in_memory import RGB_BANDS, InMemoryImageDataset, load_images
from rspretrain.data.io.rasters import Raster, RasterTiles, read_raster
from rspretrain.data.pretrain.land_cover import (
    DominantClassTiles,
    LandCoverLabels,
    LandCoverScheme,
    LandCoverTiles,
    available_schemes,
    land_cover_proportions,
    load_scheme,
    read_land_cover_labels,
)
from rspretrain.data.pretrain.scene_collection import SceneCollection
from rspretrain.data.pretrain.unlabeled import UnlabeledImages
from rspretrain.data.scenes.cifar10 import CIFAR10Subset
from rspretrain.data.scenes.eurosat import EuroSAT
from rspretrain.data.scenes.scene_folder import SceneFolder, split_indices
from rspretrain.data.scenes.ucmerced import UCMerced

__all__ = [
    "CIFAR10Subset",
    "DominantClassTiles",
    "EuroSAT",
    "InMemoryImageDataset",
    "LandCoverLabels",
    "LandCoverScheme",
    "LandCoverTiles",
    "RGB_BANDS",
    "Raster",
    "RasterTiles",
    "SPEC_FORMS",
    "SceneCollection",
    "SceneFolder",
    "UCMerced",
    "UnlabeledImages",
    "available_schemes",
    "ZipMember",
    "build_dataset",
    "collate_batched",
    "decode_images",
    "default_data_root",
    "land_cover_proportions",
    "load_images",
    "load_scheme",
    "read_land_cover_labels",
    "read_raster",
    "split_indices",
]
