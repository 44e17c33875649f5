"""Unlabeled images for self-supervised pretraining: a folder tree, a list file or a zip archive.

Self-supervised methods (MoCo v2: X. Chen, H. Fan, R. Girshick, K. He, "Improved Baselines with Momentum
Contrastive Learning", arXiv:2003.04297, 2020; and the remote-sensing methods built on it) need only images, so any
collection of image files can serve: a user's own tiles, or a labelled dataset with its labels ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rspretrain.core.errors import DataError
from rspretrain.data.io.decode import ImageSource
from rspretrain.data.io.in_memory import InMemoryImageDataset
from rspretrain.data.io.listing import IMAGE_EXTENSIONS, is_image, list_tree, normalize_extensions


def _read_list(list_file: Path) -> list[ImageSource]:
    """Image paths listed one per line; relative paths are relative to the list file's folder."""
    try:
        lines = list_file.read_text().splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{list_file}: not a text file listing image paths") from None
    sources: list[ImageSource] = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):  # blank lines and comments
            continue
        path = Path(line).expanduser()
        if not path.is_absolute():
            path = list_file.parent / path
        if not path.is_file():
            raise DataError(f"{list_file}:{number}: {path}: no such file")
        sources.append(path)
    if not sources:
        raise DataError(f"{list_file}: lists no image paths")
    return sources


class UnlabeledImages(InMemoryImageDataset):
    """Images without labels, decoded once into memory; samples are ``{"image": uint8 (3, H, W)}``.

    ``source`` may be:

    * a folder: every file below it (recursively) ending in one of ``extensions``, sorted by path;
    * a ``.txt`` file listing image paths, one per line (relative paths are relative to the list's folder; blank
      lines and lines starting with ``#`` are ignored); listed files are used whatever their extension;
    * a ``.zip`` archive: every member ending in one of ``extensions``, sorted by name (read without extracting).

    Hidden files and folders (``.*``, ``__MACOSX``) are ignored. :attr:`labels` and :attr:`classes` are None.

    Args:
        source: folder, list file or zip archive.
        image_size: resize every image to this square size (bilinear); None requires all images to share one size.
        extensions: file extensions that are images (folders and zips only).
        cache: use the on-disk decoded-array cache (:mod:`rspretrain.data.io.cache`).
        skip_corrupt: skip undecodable images (listed in :attr:`skipped`) instead of raising.

    Raises:
        DataError: ``source`` missing; no images found; a listed file missing; an undecodable image; differing sizes
            without ``image_size``.
    """

    def __init__(
        self,
        source: str | Path,
        image_size: int | None = None,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        cache: bool = True,
        skip_corrupt: bool = False,
    ) -> None:
        source = Path(source).expanduser()
        extensions = normalize_extensions(extensions)
        if source.is_file() and source.suffix.lower() == ".txt":
            sources = _read_list(source)
        else:
            sources = [e.source for e in list_tree(source) if is_image(e, extensions)]
            if not sources:
                raise DataError(f"{source}: no images found (searched for {', '.join(extensions)})")
        self.root = source
        self._init_from_sources(sources, None, None, image_size, cache, skip_corrupt)
