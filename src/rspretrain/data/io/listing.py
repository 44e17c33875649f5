"""List the files of a folder tree or a zip archive uniformly, for the folder-based readers.

:class:`~rspretrain.data.SceneFolder` and :class:`~rspretrain.data.UnlabeledImages` accept a folder or a zip
with the same layout; both are reduced here to a list of :class:`Entry` (relative path parts + how to read it), so
the layout rules are written once and behave the same for both.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from rspretrain.core.errors import DataError
from rspretrain.data.io.decode import ImageSource, ZipMember, open_zip

#: File extensions read by default (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Entry:
    """A file or folder of a listed tree.

    Attributes:
        parts: path components relative to the tree's root.
        source: how to read the file (None for folders).
        display: the name used in messages (a path, or ``archive.zip:member``).
    """

    parts: tuple[str, ...]
    source: ImageSource | None
    display: str

    @property
    def is_dir(self) -> bool:
        return self.source is None


def normalize_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    """Lower-case extensions with a leading dot: ``("JPG", ".png") -> (".jpg", ".png")``."""
    if isinstance(extensions, str):
        extensions = (extensions,)
    normalized = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    if not normalized:
        raise ValueError("extensions must name at least one file extension")
    return normalized


def _hidden(parts: Iterable[str]) -> bool:
    # Dot-files/folders and macOS resource forks (in zips made on a Mac) are never images of the dataset.
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def is_zip(path: Path) -> bool:
    """True for a file that is a zip archive (by extension or by content)."""
    return path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path))


def list_tree(path: Path) -> list[Entry]:
    """All files and folders under a folder (recursively) or in a zip archive, sorted by path.

    Raises:
        DataError: ``path`` does not exist, or is a file that is not a zip archive.
    """
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        entries = []
        for folder, dirs, files in os.walk(path, followlinks=True):
            rel = Path(folder).relative_to(path).parts
            dirs[:] = sorted(d for d in dirs if not _hidden((d,)))
            if rel:
                entries.append(Entry(rel, None, folder))
            for name in files:
                if not _hidden((name,)):
                    entries.append(Entry(rel + (name,), Path(folder) / name, os.path.join(folder, name)))
        return sorted(entries, key=lambda e: e.parts)
    if not is_zip(path):
        raise DataError(f"{path}: neither a folder nor a zip archive")
    with open_zip(path) as archive:
        infos = archive.infolist()
    entries, folders = [], set()
    for info in infos:
        parts = tuple(p for p in info.filename.split("/") if p)
        if not parts or _hidden(parts):
            continue
        # Zips need not contain folder entries: every parent of a member is a folder too.
        folders.update(parts[:i] for i in range(1, len(parts)))
        if info.is_dir():
            folders.add(parts)
        else:
            member = ZipMember(path, info.filename)
            entries.append(Entry(parts, member, str(member)))
    entries += [Entry(parts, None, f"{path}:{'/'.join(parts)}/") for parts in folders]
    return sorted(entries, key=lambda e: e.parts)


def is_image(entry: Entry, extensions: tuple[str, ...]) -> bool:
    """A file whose name ends with one of ``extensions`` (case-insensitive)."""
    return not entry.is_dir and entry.parts[-1].lower().endswith(extensions)
