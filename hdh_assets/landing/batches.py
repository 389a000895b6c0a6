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


def latest_change(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        newest = max(newest, path.lstat().st_mtime)
    return newest


def batch_state(source: str, folder: Path, quiet_seconds: float, now: float | None = None) -> Batch:
    if (folder / READY_MARKER).exists():
        return Batch(source, folder.name, folder, True, "marker")
    now = time.time() if now is None else now
    idle = now - latest_change(folder)
    if idle >= quiet_seconds:
        return Batch(source, folder.name, folder, True, "quiet")
    return Batch(source, folder.name, folder, False, f"changed {idle:.0f}s ago")


def list_batches(
    source_root: Path, quiet_seconds: float = DEFAULT_QUIET_SECONDS, now: float | None = None
) -> list[Batch]:
    """Every batch folder of one source, ready or not, in name order."""
    if not source_root.exists():
        return []
    source = source_root.name
    return [
        batch_state(source, child, quiet_seconds, now)
        for child in sorted(source_root.iterdir())
        if child.is_dir() and not child.name.startswith((".", "_"))
    ]


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
