"""Shared helpers of the archive-backed named datasets: split tables, class lists, archive members.

The stored datasets (see ``shared/data/MANIFEST.md``) come as an uncompressed zip of the original images plus a CSV
that lists each image's member path, label, class name and split. These helpers read those files and check them
against each other so that an inconsistency is reported with the file and line instead of producing wrong labels.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data.io.data_root import default_data_root
from rspretrain.data.io.decode import open_zip


@dataclass(frozen=True)
class TableRow:
    """One image of a split table: its line number (for error messages) and the columns as strings."""

    line: int
    values: dict[str, str]

    def __getitem__(self, column: str) -> str:
        return self.values[column]

    def integer(self, column: str, table: Path) -> int:
        """The column's value as an int; :class:`DataError` naming ``table:line`` otherwise."""
        value = self.values[column]
        try:
            return int(value)
        except (TypeError, ValueError):
            raise DataError(f"{table}:{self.line}: column {column} is not an integer ({value!r})") from None


def dataset_folder(root: str | Path | None, name: str, marker: str) -> Path:
    """The folder of a named dataset: ``root/name``, or ``root`` itself if it already is that folder.

    Args:
        root: the shared data root (None: :func:`default_data_root`), or the dataset's own folder.
        name: the dataset's folder name in the data root, e.g. ``"eurosat_rgb"``.
        marker: a file that identifies the dataset folder, e.g. ``"splits.csv"``.
    """
    base = default_data_root() if root is None else Path(root).expanduser()
    if (base / name).is_dir():
        return base / name
    if (base / marker).is_file():
        return base
    if not base.exists():
        raise DataError(f"{base}: data root does not exist")
    raise DataError(f"{base / name}: dataset folder not found (root must be the data folder that holds {name}/)")


def read_classes(path: Path) -> list[str]:
    """Class names, one per line (blank lines ignored); the line order defines the label indices."""
    try:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    if not names:
        raise DataError(f"{path}: lists no classes")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{path}: class {duplicates[0]!r} is listed more than once")
    return names


def read_table(path: Path, required: Sequence[str]) -> list[TableRow]:
    """Rows of a CSV file with a header, checking that the ``required`` columns exist."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in required if c not in columns]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(columns)})")
            # DictReader's line_num is the physical line just read; the header is line 1.
            rows = [TableRow(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    if not rows:
        raise DataError(f"{path}: has a header but no rows")
    return rows


def check_labels(rows: Iterable[TableRow], classes: Sequence[str], table: Path, classes_file: Path) -> list[int]:
    """Parse the ``label`` column and check it against ``class_name`` and the class list; returns the labels."""
    index = {name: i for i, name in enumerate(classes)}
    labels = []
    for row in rows:
        label = row.integer("label", table)
        name = row["class_name"]
        if name not in index:
            raise DataError(f"{table}:{row.line}: class {name!r} is not in {classes_file.name}")
        if label != index[name]:
            raise DataError(
                f"{table}:{row.line}: label {label} does not match class {name!r} (index {index[name]} in "
                f"{classes_file.name})"
            )
        labels.append(label)
    return labels


def check_members(archive: Path, members: Sequence[str], table: Path) -> None:
    """Fail if a member listed in ``table`` is not in ``archive`` (before decoding anything)."""
    with open_zip(archive) as handle:
        present = set(handle.namelist())
    missing = [m for m in members if m not in present]
    if missing:
        raise DataError(f"{archive}: {len(missing)} member(s) listed in {table.name} are missing, e.g. {missing[0]}")


def check_split(split: str, valid: Sequence[str], dataset: str) -> None:
    """Raise :class:`ConfigError` for a split name the dataset does not define."""
    if split not in valid:
        raise ConfigError(f"{dataset}: unknown split {split!r}; expected one of {', '.join(valid)}")


def check_max_per_class(max_per_class: int | None, dataset: str) -> None:
    """``max_per_class`` must be None or a positive int."""
    if max_per_class is not None and (isinstance(max_per_class, bool) or not isinstance(max_per_class, int)
                                      or max_per_class < 1):
        raise ConfigError(f"{dataset}: max_per_class must be a positive integer or None, got {max_per_class!r}")


def rank_order(labels: Sequence[int], ranks: Sequence[int], max_per_class: int | None = None) -> list[int]:
    """Positions of the rows sorted by (label, rank_in_class), keeping at most ``max_per_class`` per class.

    Sorting by rank (a per-class random permutation in the manifests) rather than by file name makes every prefix of
    a class a stratified random sample, so "the first k per class" means the same thing everywhere. The kept rows of
    a class are its ``max_per_class`` lowest ranks (all of them if it has fewer rows).
    """
    order = sorted(range(len(labels)), key=lambda p: (labels[p], ranks[p]))
    if max_per_class is None:
        return order
    taken: dict[int, int] = {}
    keep = []
    for position in order:
        if taken.get(labels[position], 0) < max_per_class:
            taken[labels[position]] = taken.get(labels[position], 0) + 1
            keep.append(position)
    return keep


#: Named split groups of the manifests' three-way splits.
SPLIT_GROUPS = {"trainval": ("train", "val"), "all": ("train", "val", "test")}


def rows_in_split(rows: Sequence[TableRow], split: str, table: Path) -> list[int]:
    """Positions of the rows whose ``split`` column belongs to ``split`` (a split or a group of them)."""
    for row in rows:
        if row["split"] not in ("train", "val", "test"):
            raise DataError(f"{table}:{row.line}: unknown split {row['split']!r}")
    wanted = SPLIT_GROUPS.get(split, (split,))
    return [p for p, row in enumerate(rows) if row["split"] in wanted]


def zip_members_by_rank(
    archive: Path,
    member_prefix: str,
    table: Path,
    rows: Sequence[TableRow],
    labels: Sequence[int],
    ranks: Sequence[int],
    keep: Sequence[int],
    max_per_class: int | None,
) -> tuple[list, list[int]]:
    """The archive members (``prefix/class_name/filename``) of the kept rows, in rank order, and their labels.

    Applies ``max_per_class`` through :func:`rank_order` and checks every member exists in the archive.
    """
    from rspretrain.data.io.decode import ZipMember

    rows, labels, ranks = [rows[p] for p in keep], [labels[p] for p in keep], [ranks[p] for p in keep]
    order = rank_order(labels, ranks, max_per_class)
    rows, labels = [rows[p] for p in order], [labels[p] for p in order]
    members = [f"{member_prefix}/{row['class_name']}/{row['filename']}" for row in rows]
    check_members(archive, members, table)
    return [ZipMember(archive, m) for m in members], labels


@dataclass
class SplitTable:
    """A manifest's ``splits.csv`` + ``classes.txt`` beside its image archive, parsed and checked."""

    folder: Path
    table: Path
    archive: Path
    classes: list[str]
    rows: list[TableRow]
    labels: list[int]
    ranks: list[int]


def read_split_table(root: str | Path | None, folder_name: str, archive_name: str) -> SplitTable:
    """Read ``<root>/<folder_name>/{splits.csv,classes.txt}`` (columns filename, label, class_name, split,
    rank_in_class) and locate the archive."""
    folder = dataset_folder(root, folder_name, "splits.csv")
    table, classes_file = folder / "splits.csv", folder / "classes.txt"
    classes = read_classes(classes_file)
    rows = read_table(table, ("filename", "label", "class_name", "split", "rank_in_class"))
    labels = check_labels(rows, classes, table, classes_file)
    ranks = [row.integer("rank_in_class", table) for row in rows]
    return SplitTable(folder, table, folder / archive_name, classes, rows, labels, ranks)
