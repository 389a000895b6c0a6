"""Erasing a person from the raw copies: landed files and quarantined originals.

Landing and quarantine hold what providers sent, identifiers in clear, so the person is found by
their national identifier: its 13-character body, however it is written (spaces, dots, dashes,
lower-case 2a/2b) and whatever its key (a wrong key still names them). In FHIR their other
resources name them only through references to their Patient resources, so those are found
first: a Patient is the person's only when one of its national-system identifiers is their NIR
(a child's record carrying a parent's NIR as a secondary identifier stays), and references are
compared whole (``Patient/12`` never matches ``Patient/123``).

Each file loses exactly the person's records: NDJSON, CSV or text lines, Bundle entries, array
items, Parquet rows, archive members (archives recognised by content, as ingestion does); a DICOM
file goes when its PatientID is the person's. Files are rewritten atomically; the final scan uses
the same decisions, so "clean" means nothing of the person is left by the rules that removed it.
Reports name files by the SHA-256 of their former content and areas by source and batch, never
by path: providers put patient names in file and folder names.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import polars as pl

from hdh_assets.clinical.providers import NATIONAL_SYSTEMS, configured_providers
from hdh_assets.files import atomic_write_bytes, file_sha256
from hdh_assets.pseudonymisation import normalise_nir

LINES = (".ndjson", ".jsonl", ".csv", ".tsv", ".txt")  # one record a line
JSON = (".json",)
PARQUET = (".parquet",)
_SEPARATORS = re.compile(r"[\s.\-]")
PARTIAL = ".scrub-partial"


def _national_systems() -> frozenset[str]:
    systems = set(NATIONAL_SYSTEMS)
    for provider in configured_providers().values():
        systems.update(provider.national_identifier_systems)
    return frozenset(systems)


def nir_body(value: object) -> str | None:
    """The 13-character body of an NIR written any way, or None when it is not one."""
    if not isinstance(value, str):
        return None
    compact = _SEPARATORS.sub("", value).upper()
    return compact[:13] if len(compact) in (13, 15) else None


@dataclass(frozen=True)
class PersonMatcher:
    """What makes a raw record the person's."""

    body: str  # the NIR body, upper case
    patient_refs: frozenset[str] = frozenset()  # "Patient/<id>", "urn:uuid:<id>"
    systems: frozenset[str] = frozenset(NATIONAL_SYSTEMS)

    @classmethod
    def for_nir(cls, nir: str) -> PersonMatcher:
        return cls(normalise_nir(nir)[:13], systems=_national_systems())

    def with_patients(self, ids: set[str]) -> PersonMatcher:
        refs = {f"Patient/{i}" for i in ids} | {f"urn:uuid:{i}" for i in ids}
        return PersonMatcher(self.body, self.patient_refs | frozenset(refs), self.systems)

    @property
    def nir_pattern(self) -> re.Pattern[bytes]:
        """The body with optional separators between its characters, any case."""
        return re.compile(rb"[\s.\-]?".join(re.escape(c.encode()) for c in self.body), re.I)

    @property
    def reference_pattern(self) -> re.Pattern[bytes] | None:
        """A whole reference: inside quotes (raw or escaped in a quarantine note)."""
        if not self.patient_refs:
            return None
        alternatives = b"|".join(re.escape(r.encode()) for r in sorted(self.patient_refs))
        return re.compile(rb'(?<=")(?:' + alternatives + rb')(?=\\?")')

    def mentions(self, data: bytes) -> bool:
        """Cheap pre-filter: the NIR or one of the references appears at all."""
        if self.nir_pattern.search(data):
            return True
        pattern = self.reference_pattern
        return bool(pattern and pattern.search(data))

    def is_person_patient(self, resource: object) -> bool:
        if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
            return False
        identifiers = resource.get("identifier")
        return isinstance(identifiers, list) and any(
            isinstance(i, dict)
            and i.get("system") in self.systems
            and nir_body(i.get("value")) == self.body
            for i in identifiers
        )

    def record_is_persons(self, data: bytes) -> bool:
        """One JSON record (a line, a Bundle entry, an array item) or one line of text."""
        pattern = self.reference_pattern
        if pattern and pattern.search(data):
            return True
        if not self.nir_pattern.search(data):
            return False
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True  # text holding the NIR: a line of the person's
        if isinstance(document, dict) and isinstance(document.get("record"), str):
            try:  # a quarantine note carries the raw line as text
                document = orjson.loads(document["record"])
            except orjson.JSONDecodeError:
                return True
        if isinstance(document, dict) and "resource" in document:
            document = document["resource"]  # a Bundle entry
        if isinstance(document, dict) and document.get("resourceType") == "Patient":
            return self.is_person_patient(document)
        return True


@dataclass
class ScrubbedFile:
    area: str  # landing or quarantine
    source: str | None
    batch: str | None
    file_sha256: str  # of the content before scrubbing
    action: str  # deleted or rewritten
    records_removed: int

    def to_json(self) -> dict:
        where = "/".join(p for p in (self.area, self.source, self.batch) if p)
        return {
            "area": where,
            "file_sha256": self.file_sha256,
            "action": self.action,
            "records_removed": self.records_removed,
        }


@dataclass
class ScrubReport:
    files: list[ScrubbedFile] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)  # sha256 of files still holding them
    unreadable: list[str] = field(default_factory=list)  # sha256 of files that could not be read

    def to_json(self) -> dict:
        return {
            "raw_copies_removed": [f.to_json() for f in self.files],
            "raw_copies_clean": not self.remaining,
            "raw_copies_unreadable": self.unreadable,
        }


# --- reading and writing ---------------------------------------------------------------------


def _kind(path: Path) -> str:
    """zip, tar, gzip, parquet or plain, by content first. Broader than ingestion's own
    recognition (it also opens a gzip to see whether a tar is inside, and reads the ustar
    header): erasure must not miss an archive whatever its name."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x1f\x8b"):
        try:
            with tarfile.open(path, "r:gz") as archive:
                archive.next()
            return "tar"
        except (tarfile.TarError, OSError, EOFError):
            return "gzip"
    if path.name.lower().endswith(".tar") or _is_plain_tar(path):
        return "tar"
    return "plain"


def _is_plain_tar(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(257)
            return handle.read(5) == b"ustar"
    except OSError:
        return False


def _name(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def files_under(roots: list[Path]) -> Iterator[Path]:
    for root in roots:
        if root.exists():
            yield from sorted(p for p in root.rglob("*") if p.is_file() and PARTIAL not in p.name)


# --- finding the person's Patient resources --------------------------------------------------


def _patients_in(document: object, matcher: PersonMatcher) -> Iterator[str]:
    if isinstance(document, list):
        for item in document:
            yield from _patients_in(item, matcher)
        return
    if not isinstance(document, dict):
        return
    if isinstance(document.get("record"), str):  # a quarantine note
        with contextlib.suppress(orjson.JSONDecodeError):
            yield from _patients_in(orjson.loads(document["record"]), matcher)
        return
    if matcher.is_person_patient(document) and isinstance(document.get("id"), str):
        yield document["id"]
    if document.get("resourceType") == "Bundle" and isinstance(document.get("entry"), list):
        for entry in document["entry"]:
            if not isinstance(entry, dict):
                continue
            resource = entry.get("resource")
            yield from _patients_in(resource, matcher)
            full_url = entry.get("fullUrl")
            if (
                isinstance(full_url, str)
                and full_url.startswith("urn:uuid:")
                and matcher.is_person_patient(resource)
            ):
                yield full_url.removeprefix("urn:uuid:")


def find_patient_ids(paths: list[Path], matcher: PersonMatcher) -> set[str]:
    """Ids of the person's Patient resources, over every JSON file of the raw areas."""
    ids: set[str] = set()
    for path in paths:
        name = _name(path)
        if not name.endswith(LINES + JSON):
            continue
        try:
            data = (
                gzip.decompress(path.read_bytes()) if _kind(path) == "gzip" else path.read_bytes()
            )
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        if not matcher.nir_pattern.search(data):
            continue
        documents = data.splitlines() if name.endswith(LINES) else [data]
        for text in documents:
            if not matcher.nir_pattern.search(text):
                continue
            try:
                ids.update(_patients_in(orjson.loads(text), matcher))
            except orjson.JSONDecodeError:
                continue
    return ids


# --- removing the person's records -----------------------------------------------------------


def _scrub_lines(data: bytes, matcher: PersonMatcher) -> tuple[bytes, int]:
    kept, removed = [], 0
    for line in data.splitlines(keepends=True):
        if matcher.mentions(line) and matcher.record_is_persons(line.strip()):
            removed += 1
        else:
            kept.append(line)
    return b"".join(kept), removed


def _scrub_document(data: bytes, matcher: PersonMatcher) -> tuple[bytes | None, int]:
    """A Bundle loses the person's entries, an array their items; another document that is the
    person's goes whole (``None``)."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, 1  # not JSON and holding the NIR: the whole file goes
    if isinstance(document, dict) and isinstance(document.get("entry"), list):
        entries = document["entry"]
        kept = [e for e in entries if not matcher.record_is_persons(orjson.dumps(e))]
        if len(kept) == len(entries):
            return data, 0
        document["entry"] = kept
        if "total" in document and isinstance(document["total"], int):
            document["total"] = len(kept)
        return orjson.dumps(document), len(entries) - len(kept)
    if isinstance(document, list):
        kept = [e for e in document if not matcher.record_is_persons(orjson.dumps(e))]
        return orjson.dumps(kept), len(document) - len(kept)
    return (None, 1) if matcher.record_is_persons(data) else (data, 0)


def _dicom_is_persons(data: bytes, matcher: PersonMatcher) -> bool | None:
    """True or False for a DICOM file (by its PatientID), None when it is not DICOM."""
    if data[128:132] != b"DICM":
        return None
    import pydicom

    try:
        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        patient_id = str(dataset.get("PatientID", "") or "")
    except Exception:
        return bool(matcher.nir_pattern.search(data))
    return nir_body(patient_id) == matcher.body


def _member_is_persons(data: bytes, matcher: PersonMatcher) -> bool:
    """A DICOM member by its PatientID; any other member mentioning the person goes whole."""
    if not matcher.mentions(data):
        return False
    dicom = _dicom_is_persons(data, matcher)
    return True if dicom is None else dicom


def _scrub_zip(data: bytes, matcher: PersonMatcher) -> tuple[bytes, int]:
    out, removed = io.BytesIO(), 0
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if not info.is_dir() and _member_is_persons(content, matcher):
                removed += 1
            else:
                target.writestr(info, content, compress_type=info.compress_type)
    return out.getvalue(), removed


def _scrub_tar(path: Path, matcher: PersonMatcher) -> tuple[bytes, int]:
    out, removed = io.BytesIO(), 0
    with path.open("rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    with (
        tarfile.open(path) as source,
        tarfile.open(fileobj=out, mode="w:gz" if gzipped else "w") as target,
    ):
        for member in source.getmembers():
            handle = source.extractfile(member) if member.isfile() else None
            content = handle.read() if handle else b""
            if handle and _member_is_persons(content, matcher):
                removed += 1
                continue
            target.addfile(member, io.BytesIO(content) if handle else None)
    return out.getvalue(), removed


def _scrub_parquet(path: Path, matcher: PersonMatcher) -> tuple[pl.DataFrame, int]:
    frame = pl.read_parquet(path)
    text_columns = [c for c, t in frame.schema.items() if t == pl.String]
    if not text_columns:
        return frame, 0
    pattern = matcher.nir_pattern.pattern.decode()
    hit = pl.any_horizontal(
        pl.col(c).fill_null("").str.contains(f"(?i){pattern}") for c in text_columns
    )
    refs = sorted(matcher.patient_refs)
    if refs:
        hit = hit | pl.any_horizontal(pl.col(c).is_in(refs) for c in text_columns)
    kept = frame.filter(~hit)
    return kept, frame.height - kept.height


class Unreadable(Exception):
    """A raw file that cannot be parsed as what it claims to be."""


def scrub_file(path: Path, matcher: PersonMatcher, dry_run: bool = False) -> tuple[str, int] | None:
    """Remove the person's records from one raw file: ``(action, records_removed)``, or None
    when it holds nothing of them. ``dry_run`` decides without writing (the final proof)."""
    kind = _kind(path)
    if kind == "parquet" or _name(path).endswith(PARQUET):
        try:
            kept, removed = _scrub_parquet(path, matcher)
        except Exception as error:
            raise Unreadable(path.name) from error
        if not removed:
            return None
        if not dry_run:
            if kept.is_empty():
                path.unlink()
            else:
                buffer = io.BytesIO()
                kept.write_parquet(buffer)
                atomic_write_bytes(path, buffer.getvalue(), PARTIAL)
        return ("deleted" if kept.is_empty() else "rewritten"), removed
    if kind in ("zip", "tar"):
        try:
            data, removed = (
                _scrub_zip(path.read_bytes(), matcher)
                if kind == "zip"
                else _scrub_tar(path, matcher)
            )
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
            raise Unreadable(path.name) from error
        if not removed:
            return None
        if not dry_run:
            atomic_write_bytes(path, data, PARTIAL)
        return "rewritten", removed
    raw = path.read_bytes()
    if kind == "gzip":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise Unreadable(path.name) from error
    else:
        data = raw
    if not matcher.mentions(data):
        return None
    dicom = _dicom_is_persons(data, matcher)
    name = _name(path)
    if dicom is not None:
        kept, removed = (None, 1) if dicom else (data, 0)
    elif name.endswith(LINES):
        kept, removed = _scrub_lines(data, matcher)
    elif name.endswith(JSON) and not path.with_suffix(".bin").exists():
        kept, removed = _scrub_document(data, matcher)
    else:  # a quarantined original or its note, or an unknown file naming the person
        kept, removed = None, 1
    if not removed:
        return None
    if dry_run:
        return ("deleted" if kept is None else "rewritten"), removed
    if kept is None or not kept.strip(b"[]{} \n"):
        path.unlink()
        if path.suffix == ".bin":  # a quarantined DICOM original goes with its note
            path.with_suffix(".json").unlink(missing_ok=True)
        return "deleted", removed
    atomic_write_bytes(path, gzip.compress(kept, mtime=0) if kind == "gzip" else kept, PARTIAL)
    return "rewritten", removed


def scrub_raw_copies(
    roots: dict[str, Path],
    nir: str,
    keep: list[Path] | None = None,
    within: list[Path] | None = None,
) -> ScrubReport:
    """``roots``: area name -> folder (``landing``, ``quarantine``). Removes the person, then
    checks again with the same rules. ``keep``: folders left as they are (a rectification's
    corrected batch); ``within``: only these folders are searched (a rectification's source)."""
    matcher = PersonMatcher.for_nir(nir)
    kept = [k.resolve() for k in keep or []]
    scope = [w.resolve() for w in within or []]
    paths = [
        p
        for p in files_under(list(roots.values()))
        if not any(p.resolve().is_relative_to(k) for k in kept)
        and (not scope or any(p.resolve().is_relative_to(w) for w in scope))
    ]
    matcher = matcher.with_patients(find_patient_ids(paths, matcher))
    report = ScrubReport()
    changed = []
    for path in paths:
        if not path.exists():  # a note that went with its original
            continue
        before = file_sha256(path)  # streamed: landed files can be large
        try:
            result = scrub_file(path, matcher)
        except Unreadable:
            if not matcher.nir_pattern.search(path.read_bytes()):
                report.unreadable.append(before)
                continue
            path.unlink()  # damaged and naming the person: kept nowhere
            result = ("deleted", 1)
        if result is not None:
            area, source, batch = _area(path, roots)
            report.files.append(ScrubbedFile(area, source, batch, before, *result))
            changed.append(path)
    # the proof: what was rewritten holds nothing of the person by the same rules (a file
    # left alone was already judged so by them)
    for path in changed:
        try:
            if path.exists() and scrub_file(path, matcher, dry_run=True) is not None:
                report.remaining.append(file_sha256(path))
        except Unreadable:
            report.remaining.append(file_sha256(path))
    return report


def _area(path: Path, roots: dict[str, Path]) -> tuple[str, str | None, str | None]:
    """(area, source, batch): never deeper, where providers' folder names start."""
    for name, root in roots.items():
        if path.is_relative_to(root):
            parts = path.parent.relative_to(root).parts
            return name, (parts[0] if parts else None), (parts[1] if len(parts) > 1 else None)
    return "unknown", None, None
