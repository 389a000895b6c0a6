"""Stream the records of a landed JSON batch with their file and line, never loading a file whole
when it is NDJSON (plain or gzip). A Bundle or a JSON array yields its entries, numbered from 1."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from hdh_assets.landing.batches import is_control_file

NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz")
JSON_SUFFIXES = (".json", ".json.gz")


@dataclass(frozen=True)
class RawRecord:
    file: str  # name inside the batch: quarantine notes only, never the lake
    line: int  # line of an NDJSON file, entry number of a Bundle or array
    data: bytes | None  # the raw JSON text (None when the record came from a parsed document)
    parsed: object = None  # set for entries of a JSON document
    error: str = ""  # a file-level problem (unreadable, not JSON)


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def is_record_file(path: Path) -> bool:
    return path.name.lower().endswith(NDJSON_SUFFIXES + JSON_SUFFIXES)


def batch_files(batch: Path) -> list[Path]:
    """Every delivered file of the batch (markers excluded), in name order."""
    return sorted(p for p in batch.rglob("*") if p.is_file() and not is_control_file(batch, p))


def read_file(path: Path, name: str) -> Iterator[RawRecord]:
    lowered = path.name.lower()
    try:
        if lowered.endswith(NDJSON_SUFFIXES):
            with _open(path) as handle:
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        yield RawRecord(name, number, line)
            return
        if lowered.endswith(JSON_SUFFIXES):
            with _open(path) as handle:
                document = orjson.loads(handle.read())
            yield from _document_records(document, name)
            return
    except (OSError, EOFError, gzip.BadGzipFile):
        yield RawRecord(name, 0, None, error="unreadable")
        return
    except orjson.JSONDecodeError:
        yield RawRecord(name, 1, None, error="invalid_json")
        return
    yield RawRecord(name, 0, None, error="not_json")


def _document_records(document: object, name: str) -> Iterator[RawRecord]:
    if isinstance(document, dict) and document.get("resourceType") == "Bundle":
        for number, entry in enumerate(document.get("entry") or [], start=1):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
            yield RawRecord(name, number, None, parsed={"resource": resource, "fullUrl": full_url})
    elif isinstance(document, list):
        for number, item in enumerate(document, start=1):
            yield RawRecord(name, number, None, parsed={"resource": item, "fullUrl": None})
    else:
        yield RawRecord(name, 1, None, parsed={"resource": document, "fullUrl": None})


def read_batch(batch: Path) -> Iterator[RawRecord]:
    for path in batch_files(batch):
        yield from read_file(path, path.relative_to(batch).as_posix())
