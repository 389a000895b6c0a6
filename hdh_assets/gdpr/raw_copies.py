"""Erasing a person from the raw copies: landed files and quarantined originals.

Landing and quarantine hold what providers sent, identifiers in clear, so the person is found by
their national identifier (the 13-digit NIR body, which a wrong key or a missing key still
carries) and, in FHIR, by the ids of the Patient resources that carry it: the person's other
resources refer to them (``Patient/<id>``, ``urn:uuid:<id>``) without the NIR.

Each file loses exactly the person's records: NDJSON lines, Bundle entries or array items,
Parquet rows, archive members; a file holding only them (a DICOM instance) is deleted. Files
are rewritten atomically. Reports name files by the SHA-256 of their former content, never by
path: providers put patient names in file names.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import polars as pl

from hdh_assets.pseudonymisation import normalise_nir

NDJSON = (".ndjson", ".jsonl")
LINES = (*NDJSON, ".csv", ".tsv", ".txt")  # one record a line
JSON = (".json",)
PARQUET = (".parquet",)
ZIP = (".zip",)
TAR = (".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class PersonMatcher:
    """What makes a raw record the person's: their NIR body, or a reference to their Patient."""

    nir_body: bytes
    patient_ids: frozenset[str] = frozenset()

    @classmethod
    def for_nir(cls, nir: str) -> PersonMatcher:
        return cls(normalise_nir(nir)[:13].encode())

    def with_patients(self, ids: set[str]) -> PersonMatcher:
        return PersonMatcher(self.nir_body, self.patient_ids | frozenset(ids))

    def matches(self, data: bytes) -> bool:
        if self.nir_body in data:
            return True
        return any(
            f"Patient/{i}".encode() in data or f"urn:uuid:{i}".encode() in data
            for i in self.patient_ids
        )


@dataclass
class ScrubbedFile:
    area: str  # e.g. landing/json/<batch>
    file_sha256: str  # of the content before scrubbing
    action: str  # deleted or rewritten
    records_removed: int

    def to_json(self) -> dict:
        return self.__dict__.copy()


@dataclass
class ScrubReport:
    files: list[ScrubbedFile] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)  # sha256 of files still matching

    def to_json(self) -> dict:
        return {
            "raw_copies_removed": [f.to_json() for f in self.files],
            "raw_copies_clean": not self.remaining,
        }


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") and not name.endswith(".tar.gz") else name


def _is_gzip(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".gz") and not name.endswith(".tar.gz")


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if _is_gzip(path) else data


def _write(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.scrub-partial")
    partial.write_bytes(gzip.compress(data, mtime=0) if _is_gzip(path) else data)
    os.replace(partial, path)


def files_under(roots: list[Path]) -> Iterator[Path]:
    for root in roots:
        if root.exists():
            yield from sorted(
                p for p in root.rglob("*") if p.is_file() and ".scrub-partial" not in p.name
            )


# --- finding the person's Patient resources --------------------------------------------------

_PATIENT = re.compile(rb'"resourceType"\s*:\s*"Patient"')


def _patients_in(document: object, nir_body: bytes) -> Iterator[str]:
    if isinstance(document, list):
        for item in document:
            yield from _patients_in(item, nir_body)
    elif isinstance(document, dict):
        if (
            document.get("resourceType") == "Patient"
            and isinstance(document.get("id"), str)
            and nir_body in orjson.dumps(document)
        ):
            yield document["id"]
        for entry in document.get("entry", []) if document.get("resourceType") == "Bundle" else []:
            if isinstance(entry, dict):
                yield from _patients_in(entry.get("resource"), nir_body)
                full_url = entry.get("fullUrl")
                resource = entry.get("resource")
                if (
                    isinstance(full_url, str)
                    and full_url.startswith("urn:uuid:")
                    and isinstance(resource, dict)
                    and resource.get("resourceType") == "Patient"
                    and nir_body in orjson.dumps(resource)
                ):
                    yield full_url.removeprefix("urn:uuid:")


def find_patient_ids(paths: list[Path], nir_body: bytes) -> set[str]:
    """Ids of the Patient resources carrying the NIR, over every JSON file of the raw areas."""
    ids: set[str] = set()
    for path in paths:
        suffix = _suffix(path)
        if not suffix.endswith(NDJSON + JSON):
            continue
        try:
            data = _read(path)
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        if nir_body not in data:
            continue
        if suffix.endswith(NDJSON) or suffix.endswith("rejected_records.ndjson"):
            for line in data.splitlines():
                if nir_body in line and _PATIENT.search(line):
                    ids.update(_ids_of_line(line, nir_body))
        else:
            try:
                ids.update(_patients_in(orjson.loads(data), nir_body))
            except orjson.JSONDecodeError:
                continue
    return ids


def _ids_of_line(line: bytes, nir_body: bytes) -> Iterator[str]:
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError:
        return
    if isinstance(document, dict) and isinstance(document.get("record"), str):
        try:  # a quarantine note carries the raw line as text
            document = orjson.loads(document["record"])
        except orjson.JSONDecodeError:
            return
    yield from _patients_in(document, nir_body)


# --- removing the person's records, file by file ---------------------------------------------


def _scrub_lines(data: bytes, matcher: PersonMatcher) -> tuple[bytes, int]:
    kept, removed = [], 0
    for line in data.splitlines(keepends=True):
        if matcher.matches(line):
            removed += 1
        else:
            kept.append(line)
    return b"".join(kept), removed


def _scrub_document(data: bytes, matcher: PersonMatcher) -> tuple[bytes | None, int]:
    """A Bundle loses the person's entries, an array their items; another document holding the
    person goes whole (``None``)."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, 1  # unreadable and holding the NIR: the whole file goes
    if isinstance(document, dict) and isinstance(document.get("entry"), list):
        entries = document["entry"]
        kept = [e for e in entries if not matcher.matches(orjson.dumps(e))]
        document["entry"] = kept
        if matcher.matches(orjson.dumps(document)):
            return None, len(entries) + 1
        return orjson.dumps(document), len(entries) - len(kept)
    if isinstance(document, list):
        kept = [e for e in document if not matcher.matches(orjson.dumps(e))]
        return orjson.dumps(kept), len(document) - len(kept)
    return None, 1


def _scrub_parquet(path: Path, matcher: PersonMatcher) -> tuple[pl.DataFrame | None, int]:
    frame = pl.read_parquet(path)
    text_columns = [c for c, t in frame.schema.items() if t == pl.String]
    if not text_columns:
        return None, 0
    needles = [matcher.nir_body.decode()] + [f"Patient/{i}" for i in matcher.patient_ids]
    hit = pl.any_horizontal(pl.col(c).fill_null("").str.contains_any(needles) for c in text_columns)
    kept = frame.filter(~hit)
    return kept, frame.height - kept.height


def _scrub_zip(data: bytes, matcher: PersonMatcher) -> tuple[bytes, int]:
    out, removed = io.BytesIO(), 0
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if matcher.matches(content):
                removed += 1
            else:
                target.writestr(info, content, compress_type=info.compress_type)
    return out.getvalue(), removed


def _scrub_tar(path: Path, matcher: PersonMatcher) -> tuple[bytes, int]:
    out, removed = io.BytesIO(), 0
    mode = "w:gz" if path.name.lower().endswith(("gz", "tgz")) else "w"
    with tarfile.open(path) as source, tarfile.open(fileobj=out, mode=mode) as target:
        for member in source.getmembers():
            handle = source.extractfile(member) if member.isfile() else None
            content = handle.read() if handle else b""
            if handle and matcher.matches(content):
                removed += 1
                continue
            target.addfile(member, io.BytesIO(content) if handle else None)
    return out.getvalue(), removed


def scrub_file(path: Path, matcher: PersonMatcher) -> tuple[str, int] | None:
    """Remove the person's records from one raw file: ``(action, records_removed)`` or ``None``
    when the file holds nothing of them."""
    suffix = _suffix(path)
    if suffix.endswith(PARQUET):
        kept, removed = _scrub_parquet(path, matcher)
        if not removed:
            return None
        if kept is None or kept.is_empty():
            path.unlink()
            return "deleted", removed
        partial = path.with_name(f".{path.name}.scrub-partial")
        kept.write_parquet(partial)
        os.replace(partial, path)
        return "rewritten", removed
    if suffix.endswith(ZIP) or path.name.lower().endswith(TAR):
        raw = path.read_bytes()
        try:
            data, removed = (
                _scrub_zip(raw, matcher) if suffix.endswith(ZIP) else _scrub_tar(path, matcher)
            )
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError):
            if not matcher.matches(raw):
                return None
            path.unlink()  # a damaged archive holding the NIR: kept nowhere
            return "deleted", 1
        if not removed:
            return None
        _write_raw(path, data)
        return "rewritten", removed
    try:
        data = _read(path)
    except (OSError, EOFError, gzip.BadGzipFile):
        data = path.read_bytes()
    if not matcher.matches(data):
        return None
    if suffix.endswith(LINES):
        kept, removed = _scrub_lines(data, matcher)
    elif suffix.endswith(JSON) and not _is_quarantine_note(path):
        kept, removed = _scrub_document(data, matcher)
    else:  # a DICOM instance, a quarantined original or its note: the person's alone
        kept, removed = None, 1
    if kept is None or not kept.strip(b"[]{} \n"):
        path.unlink()
        _drop_note_of(path)
        return "deleted", removed
    _write(path, kept)
    return "rewritten", removed


def _write_raw(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.scrub-partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _is_quarantine_note(path: Path) -> bool:
    return path.with_suffix(".bin").exists()


def _drop_note_of(path: Path) -> None:
    """A quarantined DICOM original goes with its note (named by the same content hash)."""
    if path.suffix == ".bin":
        path.with_suffix(".json").unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scrub_raw_copies(
    roots: dict[str, Path], nir: str, keep: list[Path] | None = None
) -> ScrubReport:
    """``roots``: area name -> folder (``landing``, ``quarantine``). Removes the person, then
    scans again: the report says whether any file still carries them. Folders in ``keep`` (a
    rectification's corrected batch) are left as they are."""
    matcher = PersonMatcher.for_nir(nir)
    kept = [k.resolve() for k in keep or []]
    paths = [
        p
        for p in files_under(list(roots.values()))
        if not any(p.resolve().is_relative_to(k) for k in kept)
    ]
    matcher = matcher.with_patients(find_patient_ids(paths, matcher.nir_body))
    report = ScrubReport()
    for path in paths:
        if not path.exists():  # a note that went with its original
            continue
        before = _sha256(path)
        result = scrub_file(path, matcher)
        if result is not None:
            area = next(name for name, root in roots.items() if path.is_relative_to(root))
            folder = path.parent.relative_to(roots[area]).parts[:2]
            report.files.append(
                ScrubbedFile("/".join((area, *folder)), before, result[0], result[1])
            )
    report.remaining = [_sha256(p) for p in paths if p.exists() and _holds(p, matcher)]
    return report


def _holds(path: Path, matcher: PersonMatcher) -> bool:
    suffix = _suffix(path)
    if suffix.endswith(PARQUET):
        return bool(_scrub_parquet(path, matcher)[1])
    try:
        if suffix.endswith(ZIP):
            return bool(_scrub_zip(path.read_bytes(), matcher)[1])
        if path.name.lower().endswith(TAR):
            return bool(_scrub_tar(path, matcher)[1])
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError):
        pass
    try:
        return matcher.matches(_read(path))
    except (OSError, EOFError, gzip.BadGzipFile):
        return matcher.matches(path.read_bytes())
