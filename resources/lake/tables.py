"""Storage layout and atomic replacement, independent of Dagster and of the frame library.

Layout (hive style, readable by polars and Spark alike)::

    lake/<asset>/<key>/part-00000.parquet                  unpartitioned asset
    lake/<asset>/<key>/<column>=<partition>/part-*.parquet partitioned asset
    lake/.staging/<uuid>/                                  a write in progress (never read)
    lake/.trash/<uuid>/ + <uuid>.target                    the version being replaced

A write goes to ``.staging`` first; only complete data is renamed into place. The previous
version is moved to ``.trash`` with a note of where it came from, the new one renamed in, then the
trash removed. A crash before the swap leaves the old version in place; a crash between the two
renames is undone by :meth:`Lake.recover`, which every read and write calls first.
"""

from __future__ import annotations

import fcntl
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote

from upath import UPath

STAGING = ".staging"
LOCK_FILE = ".swap.lock"
TRASH = ".trash"
PART_SUFFIX = ".parquet"


def _remove_tree(path: UPath) -> None:
    if path.exists():
        path.fs.rm(path.path, recursive=True)


def partition_folder_name(column: str, value: str) -> str:
    """Hive folder name; the value is escaped so any partition key is one safe path segment."""
    return f"{column}={quote(value, safe='')}"


def partition_value(folder_name: str) -> tuple[str, str]:
    column, _, value = folder_name.partition("=")
    return column, unquote(value)


@dataclass(frozen=True)
class PartitionSpec:
    """How an asset's partition keys map to hive folders: one column per dimension."""

    columns: tuple[str, ...]

    def folder(self, key_parts: Sequence[str]) -> PurePosixPath:
        if len(key_parts) != len(self.columns):
            raise ValueError(
                f"partition key has {len(key_parts)} parts, expected {len(self.columns)}"
            )
        return PurePosixPath(
            *(partition_folder_name(c, v) for c, v in zip(self.columns, key_parts, strict=True))
        )


class Lake:
    """A lake root: staging, atomic swaps and crash recovery."""

    def __init__(self, root: UPath | str):
        self.root = UPath(root)

    def table(self, key_path: Sequence[str]) -> LakeTable:
        return LakeTable(self, self.root.joinpath(*key_path))

    def new_staging(self) -> UPath:
        path = self.root / STAGING / uuid.uuid4().hex
        path.mkdir(parents=True, exist_ok=False)
        return path

    def discard(self, staging: UPath) -> None:
        _remove_tree(staging)

    @contextmanager
    def _swap_lock(self) -> Iterator[None]:
        """Swaps and recovery exclude each other across processes (two runs writing at once would
        otherwise take each other's swap for a crash). Local lakes lock a file; object stores
        have no rename to protect."""
        if self.root.protocol not in ("", "file", "local"):
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(Path(self.root.path) / LOCK_FILE, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def replace(self, staging: UPath, target: UPath) -> None:
        """Put the complete ``staging`` folder at ``target``, replacing what was there."""
        with self._swap_lock():
            self._recover()
            self._replace(staging, target)

    def _replace(self, staging: UPath, target: UPath) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        trash_dir = self.root / TRASH
        trash_dir.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        trash = trash_dir / token
        note = trash_dir / f"{token}.target"
        if target.exists():
            note.write_text(target.path)
            target.rename(trash)
        self._move_into_place(staging, target)
        _remove_tree(trash)
        if note.exists():
            note.unlink()

    def _move_into_place(self, staging: UPath, target: UPath) -> None:
        # A separate method so that tests can inject a crash between the two renames.
        staging.rename(target)

    def recover(self) -> list[str]:
        """Finish or undo interrupted swaps; return the targets that were restored."""
        with self._swap_lock():
            return self._recover()

    def _recover(self) -> list[str]:
        trash_dir = self.root / TRASH
        restored: list[str] = []
        if not trash_dir.exists():
            return restored
        for note in sorted(trash_dir.glob("*.target")):
            trash = trash_dir / note.name.removesuffix(".target")
            target = UPath(
                note.read_text(), protocol=self.root.protocol, **self.root.storage_options
            )
            if trash.exists() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                trash.rename(target)
                restored.append(target.path)
            else:
                _remove_tree(trash)
            note.unlink()
        return restored

    def abandoned_staging(self) -> list[UPath]:
        staging = self.root / STAGING
        return sorted(staging.iterdir()) if staging.exists() else []

    def clean_staging(self) -> int:
        """Remove staging folders left by crashed writers; call when no writer runs."""
        folders = self.abandoned_staging()
        for folder in folders:
            _remove_tree(folder)
        return len(folders)


@dataclass(frozen=True)
class LakeTable:
    """One asset's folder."""

    lake: Lake
    path: UPath

    def partition_path(self, spec: PartitionSpec, key_parts: Sequence[str]) -> UPath:
        return self.path.joinpath(*spec.folder(key_parts).parts)

    def parquet_files(self, folder: UPath | None = None) -> list[UPath]:
        """Data files under ``folder`` (the whole table by default), hidden files excluded."""
        folder = folder or self.path
        if not folder.exists():
            return []
        return sorted(_visible_parquet(folder))

    def files_outside(self, column: str, excluded: str) -> list[UPath]:
        """Data files of every partition but ``excluded`` (what other batches already hold)."""
        return [
            f
            for key, files in self.files_by_partition(column).items()
            if key != excluded
            for f in files
        ]

    def files_by_partition(self, column: str) -> dict[str, list[UPath]]:
        """Data files of each partition on ``column``, by partition key."""
        spec = PartitionSpec((column,))
        return {
            key: self.parquet_files(self.partition_path(spec, [key]))
            for (key,) in self.partitions(spec)
        }

    def partitions(self, spec: PartitionSpec) -> list[tuple[str, ...]]:
        """Partition keys present on disk, as tuples of dimension values."""
        found: list[tuple[str, ...]] = []

        def walk(folder: UPath, depth: int, prefix: tuple[str, ...]) -> None:
            if depth == len(spec.columns):
                found.append(prefix)
                return
            for child in sorted(folder.iterdir()):
                if child.is_dir() and child.name.startswith(f"{spec.columns[depth]}="):
                    walk(child, depth + 1, (*prefix, partition_value(child.name)[1]))

        if self.path.exists():
            walk(self.path, 0, ())
        return found


def _visible_parquet(folder: UPath) -> Iterator[UPath]:
    for child in folder.iterdir():
        if child.name.startswith((".", "_")):
            continue
        if child.is_dir():
            yield from _visible_parquet(child)
        elif child.name.endswith(PART_SUFFIX):
            yield child
