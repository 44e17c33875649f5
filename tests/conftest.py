"""Shared fixtures: the real data in ../shared/data (see its MANIFEST.md)."""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RSPRETRAIN_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the shared real data; tests that need it fail loudly if it is absent."""
    assert SHARED_DATA.is_dir(), f"shared data not found at {SHARED_DATA} (set RSPRETRAIN_DATA)"
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Decoded-image caches go to a per-session temp dir unless the caller chose one."""
    if "RSPRETRAIN_CACHE" not in os.environ:
        os.environ["RSPRETRAIN_CACHE"] = str(tmp_path_factory.mktemp("rspretrain-cache"))
    yield
