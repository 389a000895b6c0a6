"""What a landed batch holds, file by file, without reading any identifier.

The inventory is the "landed" side of every source's reconciliation (landed = ingested +
duplicates + quarantined). It names files by content hash, never by path: providers put patient
names in file and folder names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandera.polars as pa
import polars as pl

from hdh_assets.landing.batches import is_control_file


class LandedFiles(pa.DataFrameModel):
    batch: pl.String = pa.Field(description="landed batch (also the partition key)")
    file_sha256: pl.String = pa.Field(
        str_length=64, description="SHA-256 of the file's bytes: its name in every report"
    )
    format: pl.String = pa.Field(
        description="format sniffed from the first bytes: dicom, dicomdir, zip, tar.gz, gzip, "
        "parquet, json, ndjson, empty or other"
    )
    extension: pl.String = pa.Field(description="file name extension, lower case, may be empty")
    bytes: pl.Int64 = pa.Field(ge=0, description="file size")
    depth: pl.Int32 = pa.Field(ge=0, description="folder depth inside the batch")

    class Config:
        strict = True


INVENTORY_SCHEMA = {name: col.dtype.type for name, col in LandedFiles.to_schema().columns.items()}
_HASH_BLOCK = 1 << 20


def sniff_format(head: bytes, name: str) -> str:
    """The file's format from its first bytes (and name only to tell compressed kinds apart)."""
    lowered = name.lower()
    if not head:
        return "empty"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz" if lowered.endswith((".tar.gz", ".tgz")) else "gzip"
    if head.startswith(b"PAR1"):
        return "parquet"
    if lowered == "dicomdir":
        return "dicomdir"
    stripped = head.lstrip()
    if stripped.startswith(b"{"):
        return "ndjson" if lowered.endswith((".ndjson", ".jsonl")) else "json"
    if stripped.startswith(b"["):
        return "json"
    return "other"


def file_facts(path: Path) -> tuple[str, str, int]:
    digest = hashlib.sha256()
    size = 0
    head = b""
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            if not head:
                head = block[:132]
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), sniff_format(head, path.name), size


def _extension(name: str) -> str:
    lowered = name.lower()
    for compound in (".tar.gz", ".ndjson.gz", ".json.gz"):
        if lowered.endswith(compound):
            return compound[1:]
    return Path(lowered).suffix.lstrip(".")


def inventory_batch(batch: str, folder: Path) -> pl.DataFrame:
    """One row per file of the batch (the ``_READY`` marker excluded)."""
    rows = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or is_control_file(folder, path):
            continue
        sha, fmt, size = file_facts(path)
        rows.append(
            {
                "batch": batch,
                "file_sha256": sha,
                "format": fmt,
                "extension": _extension(path.name),
                "bytes": size,
                "depth": len(path.relative_to(folder).parts) - 1,
            }
        )
    return pl.DataFrame(rows, schema=INVENTORY_SCHEMA)
