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


def _walk(root: Path) -> list[Entry]:
    """Every file and folder under ``root``, following links to folders (each real folder once, so a link loop ends).

    Only regular files (or links to them) are listed as files: ``os.scandir`` classifies entries from the folder
    listing itself, without a ``stat`` per file except for links. Anything else -- a FIFO or device named like an
    image (reading it would hang or never end), a broken or looping link -- is an error naming it.
    """
    entries: list[Entry] = []
    seen: set[tuple[int, int]] = set()
    pending: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while pending:
        folder, rel = pending.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:
                continue  # a link back to a folder already listed
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as listing:
                children = sorted(listing, key=lambda child: child.name)
        except OSError as exc:
            raise DataError(f"{folder}: cannot be listed ({exc.strerror or exc})") from None
        for child in children:
            if _hidden((child.name,)):
                continue
            parts = rel + (child.name,)
            try:
                is_dir, is_file = child.is_dir(), child.is_file()
            except OSError as exc:
                what = "a broken or looping link" if child.is_symlink() else "cannot be read"
                raise DataError(f"{child.path}: {what} ({exc.strerror or exc})") from None
            if is_dir:
                entries.append(Entry(parts, None, child.path))
                pending.append((Path(child.path), parts))
            elif is_file:
                entries.append(Entry(parts, Path(child.path), child.path))
            else:
                what = ("a broken or looping link" if child.is_symlink()
                        else "not a regular file (a FIFO, socket or device)")
                raise DataError(f"{child.path}: {what}; it cannot be read as an image -- remove it from the folder")
    return entries


def list_tree(path: Path) -> list[Entry]:
    """All files and folders under a folder (recursively) or in a zip archive, sorted by path.

    Raises:
        DataError: ``path`` does not exist, or is a file that is not a zip archive; a folder holds something that is
            not a regular file (FIFO, device, broken or looping link); a zip member lies outside the archive's root
            (an absolute path or ``..``: extracted, it would land elsewhere; listed, it would become a wrong class).
    """
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return sorted(_walk(path), key=lambda e: e.parts)
    if not is_zip(path):
        raise DataError(f"{path}: neither a folder nor a zip archive")
    with open_zip(path) as archive:
        infos = archive.infolist()
    entries, folders = [], set()
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = tuple(p for p in name.split("/") if p)
        if name.startswith("/") or ".." in parts or (parts and len(parts[0]) == 2 and parts[0][1] == ":"):
            raise DataError(f"{path}:{info.filename}: a member outside the archive's root (absolute or '..' path); "
                            "refusing the archive")
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
