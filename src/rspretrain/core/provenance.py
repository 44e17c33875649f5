"""What produced a run: config, seed, package version, git commit, library versions, hardware."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the source tree (with ``-dirty`` if it has uncommitted changes), or None."""
    where = Path(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def collect(config: dict[str, Any] | None = None, seed: int | None = None) -> dict[str, Any]:
    """Provenance record saved next to every run and inside every checkpoint."""
    import lightning
    import timm

    from rspretrain import __version__

    return {
        "rspretrain_version": __version__,
        "git_commit": git_commit(),
        "seed": seed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),  # TorchVersion would break weights_only loading
        "timm": timm.__version__,
        "lightning": lightning.__version__,
        "hardware": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "config": config,
    }
