"""Where the shared real data lives (the folder described by ``shared/data/MANIFEST.md``)."""

from __future__ import annotations

import os
from pathlib import Path

from rspretrain.core.errors import DataError


def default_data_root() -> Path:
    """Locate the shared data root (the folder holding ``eurosat_rgb/``, ``ucmerced/``, ...).

    Looked up in this order:

    1. ``$RSPRETRAIN_DATA`` if set (it must then exist: a typo should not silently fall back elsewhere);
    2. ``../shared/data`` relative to the current directory (running from a repository checkout);
    3. a ``shared/data`` folder beside any parent folder of this file (an editable install inside a checkout).

    Raises:
        DataError: ``$RSPRETRAIN_DATA`` names a missing folder, or no candidate exists.
    """
    env = os.environ.get("RSPRETRAIN_DATA")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"{path}: RSPRETRAIN_DATA names a folder that does not exist")
        return path
    candidates = [Path.cwd().parent / "shared" / "data"]
    candidates += [parent / "shared" / "data" for parent in Path(__file__).resolve().parents]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise DataError(
        f"{candidates[0]}: shared data folder not found (also looked beside the checkout); set RSPRETRAIN_DATA"
    )
