"""Shared fixtures: the real data in ../shared/data (see its MANIFEST.md), and a prepared (sharded) set of real JPEGs
of mixed sizes in class folders, written by ``rspretrain prepare``."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RSPRETRAIN_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the shared real data; tests that need it fail loudly if it is absent."""
    assert SHARED_DATA.is_dir(), f"shared data not found at {SHARED_DATA} (set RSPRETRAIN_DATA)"
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _rspretrain_logger_as_found():
    """The CLI's ``main`` gives the "rspretrain" logger its own handler and stops propagation (right for a process);
    a test that calls it in this process must not take caplog's records away from the tests after it."""
    logger = logging.getLogger("rspretrain")
    state = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = state[0], state[1], state[2]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Decoded-image caches go to a per-session temp dir unless the caller chose one."""
    if "RSPRETRAIN_CACHE" not in os.environ:
        os.environ["RSPRETRAIN_CACHE"] = str(tmp_path_factory.mktemp("rspretrain-cache"))
    yield


def write_jpegs(folder: Path, classes: tuple[str, ...] = ("farm", "forest", "town"), per_class: int = 12,
                seed: int = 0) -> list[Path]:
    """Smooth random JPEGs of sizes between 40 and 160 px a side, one folder per class."""
    rng = np.random.default_rng(seed)
    paths = []
    for c, name in enumerate(classes):
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(40, 160, 2))
            base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
            image = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
            path = folder / name / f"{name}_{i:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, quality=90)
            paths.append(path)
    return paths


@pytest.fixture(scope="session")
def jpeg_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("jpegs") / "scenes"
    write_jpegs(folder)
    return folder


@pytest.fixture(scope="session")
def prepared(jpeg_folder, tmp_path_factory) -> Path:
    """``folder:`` of 36 JPEGs in 3 classes, prepared in chunks of about 20 KB (several per worker)."""
    from rspretrain.data.shards.prepare import prepare

    out = tmp_path_factory.mktemp("shards") / "scenes"
    prepare(f"folder:{jpeg_folder}", out, workers=2, chunk_bytes="20KB", progress=False)
    return out


ZION_SCENE = "zion_landsat8_nlcd2011/landsat8_LC80380342015230_"
#: the Zion Landsat 8 scene's red, green and blue bands (b4, b3, b2: EuroSAT's R, G, B order) as a land-cover source
ZION_RGB = "landcover:" + ",".join(f"{ZION_SCENE}{b}.tif" for b in ("b4", "b3", "b2"))


def zion_tiles(data_root: Path, bands: tuple[str, ...] = ("b4", "b3", "b2")) -> dict:
    """Config overrides for GeoKR's small smoke tiles of the real Zion Landsat 8 scene with NLCD 2011 (land-cover
    proportions in every batch) in ``bands``: the knowledge study's Zion group at test size."""
    from rspretrain.pretrain.config import load_config
    from rspretrain.pretrain.methods import get_method

    geokr = load_config("geokr_resnet18_zion")
    tiles = {k: v for k, v in get_method("geokr").smoke_overrides.items() if k.startswith("data.")}
    return {"data.dataset": "landcover:" + ",".join(f"{ZION_SCENE}{b}.tif" for b in bands),
            "data.dataset_options": dict(geokr.data.dataset_options), "data.root": str(data_root), **tiles}
