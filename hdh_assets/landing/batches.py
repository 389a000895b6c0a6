"""When a landed batch is complete: it holds a ``_READY`` marker, or nothing in it changed for a
quiet period. Hidden folders (``.name``) are batches still being written and never count."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

READY_MARKER = "_READY"
PROVIDER_MARKER = "_PROVIDER"  # optional: the name of the provider profile the batch follows
CONTROL_FILES = {READY_MARKER, PROVIDER_MARKER}


def is_control_file(batch: Path, path: Path) -> bool:
    """Markers at the root of a batch are instructions to the platform, not delivered data."""
    return path.parent == batch and path.name in CONTROL_FILES


def provider_of(batch: Path) -> str | None:
    marker = batch / PROVIDER_MARKER
    if not marker.exists():
        return None
    return marker.read_text(encoding="utf-8").strip() or None


DEFAULT_QUIET_SECONDS = 300.0


@dataclass(frozen=True)
class Batch:
    source: str
    name: str
    path: Path
    ready: bool
    reason: str  # "marker", "quiet", or why it is not ready yet
    changed: float | None = None  # latest_change(path), when deciding readiness needed it


def latest_change(folder: Path) -> float:
    """The newest mtime in the batch: walks every file (costly on large batches)."""
    newest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        newest = max(newest, path.lstat().st_mtime)
    return newest


def batch_signature(folder: Path) -> str:
    """A cheap fingerprint of a batch folder, two stats and no walk: ``inode:mtime:marker mtime``
    (nanoseconds; 0 without ``_READY``). ``landing_batch`` publishes by renaming a new folder into
    place, so a batch landed again has another inode; adding or removing an entry at the batch's
    root, or rewriting ``_READY``, changes an mtime. A change deeper in the tree of a batch
    modified in place does not show here."""
    stat = folder.stat()
    try:
        marker = (folder / READY_MARKER).stat().st_mtime_ns
    except FileNotFoundError:
        marker = 0
    return f"{stat.st_ino}:{stat.st_mtime_ns}:{marker}"


def batch_state(source: str, folder: Path, quiet_seconds: float, now: float | None = None) -> Batch:
    if (folder / READY_MARKER).exists():
        return Batch(source, folder.name, folder, True, "marker")
    now = time.time() if now is None else now
    changed = latest_change(folder)
    idle = now - changed
    if idle >= quiet_seconds:
        return Batch(source, folder.name, folder, True, "quiet", changed)
    return Batch(source, folder.name, folder, False, f"changed {idle:.0f}s ago", changed)


def batch_folders(source_root: Path) -> list[Path]:
    """The batch folders of one source in name order, without looking inside them (hidden
    folders are batches still being written)."""
    if not source_root.exists():
        return []
    return [
        child
        for child in sorted(source_root.iterdir())
        if child.is_dir() and not child.name.startswith((".", "_"))
    ]


def list_batches(
    source_root: Path, quiet_seconds: float = DEFAULT_QUIET_SECONDS, now: float | None = None
) -> list[Batch]:
    """Every batch folder of one source, ready or not, in name order."""
    source = source_root.name
    return [batch_state(source, child, quiet_seconds, now) for child in batch_folders(source_root)]


def ready_batches(source_root: Path, quiet_seconds: float = DEFAULT_QUIET_SECONDS) -> list[Batch]:
    return [b for b in list_batches(source_root, quiet_seconds) if b.ready]


@contextmanager
def landing_batch(source_root: Path, batch: str) -> Iterator[Path]:
    """Yield a hidden folder to fill; on success it becomes ``source_root/batch`` with _READY."""
    source_root.mkdir(parents=True, exist_ok=True)
    partial = source_root / f".{batch}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        yield partial
        (partial / READY_MARKER).write_text("")
        final = source_root / batch
        if final.exists():
            aside = source_root / f".{batch}.replaced-{uuid.uuid4().hex[:8]}"
            final.rename(aside)
            partial.rename(final)
            shutil.rmtree(aside)
        else:
            partial.rename(final)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
