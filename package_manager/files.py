"""The archive store: every vetted file once, by its sha256, whatever its name or who asked."""

from __future__ import annotations

import hashlib
from pathlib import Path


def store_path(store: Path, sha256: str, filename: str) -> Path:
    """Content-addressed: the same bytes are stored once, whoever asked and under any name."""
    return store / sha256[:2] / sha256 / filename


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
