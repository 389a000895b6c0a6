"""Landing a folder, an archive or a file as a batch of a source: what ``hdh ingest`` and a
rectification's corrected data do before ingestion."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from hdh_assets.landing.batches import PROVIDER_MARKER, landing_batch

_BATCH_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def default_batch_name(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".zip", ".tar"):
        name = name.removesuffix(suffix)
    return _BATCH_NAME.sub("-", name).strip("-.") or "batch"


def land(path: Path, source_root: Path, batch: str, provider: str | None = None) -> Path:
    """Copy ``path`` (a folder, or one archive or file) into ``source_root/batch`` atomically;
    a provider is recorded in the batch's ``_PROVIDER`` marker, so reruns keep it."""
    if not path.exists():
        raise FileNotFoundError(f"nothing to land at {path}")
    with landing_batch(source_root, batch) as folder:
        if path.is_dir():
            shutil.copytree(path, folder, dirs_exist_ok=True)
        else:
            shutil.copy2(path, folder / path.name)
        if provider:
            (folder / PROVIDER_MARKER).write_text(provider + "\n", encoding="utf-8")
    return source_root / batch
