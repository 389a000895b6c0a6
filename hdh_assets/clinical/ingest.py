"""Ingest one landed JSON batch: read, pseudonymise, flatten, count. No Dagster here.

Two streaming passes: the first learns the batch's patients and Bundle fullUrls (so that any
resource can be attributed whatever the file order), the second pseudonymises and flattens.
Every record read ends in exactly one state, per file: ingested, duplicate (same resource, same
content) or quarantined with its line and a reason; so records in = ingested + duplicates +
quarantined. Rows are gathered in chunks of polars frames, never as one list of dicts.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import polars as pl

from hdh_assets.clinical.declared import pseudonymise_declared
from hdh_assets.clinical.flatten import ALL_TABLES, flatten
from hdh_assets.clinical.providers import Provider
from hdh_assets.clinical.reader import RawRecord, read_batch
from hdh_assets.pseudonymisation.fhir import (
    FhirContext,
    FhirPseudonymiser,
    InvalidRecord,
    Subject,
)
from hdh_assets.pseudonymisation.subjects import Pseudonymiser

CHUNK_ROWS = 50_000
QUARANTINE_SCHEMA = {
    "file_key": pl.String,
    "line": pl.Int64,
    "reason": pl.String,
    "message": pl.String,
}
FILE_COUNTS_SCHEMA = {
    "file_key": pl.String,
    "records_in": pl.Int64,
    "ingested": pl.Int64,
    "duplicates": pl.Int64,
    "quarantined": pl.Int64,
}


@dataclass(frozen=True)
class JsonIngestSettings:
    key: bytes
    quarantine_root: Path  # HDH_HOME/quarantine/json
    provider: Provider = field(default_factory=Provider)
    max_date_shift_days: int = 365


def _h64(value: str | bytes) -> int:
    data = value.encode() if isinstance(value, str) else value
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def file_key(batch: str, name: str) -> str:
    """An opaque, stable name for a landed file (file names may carry identifiers)."""
    return hashlib.sha256(f"{batch}/{name}".encode()).hexdigest()[:16]


class _Tables:
    """Rows per table, turned into a frame every CHUNK_ROWS rows. With a spill folder, each chunk
    goes to a Parquet file there and the tables come back as lazy scans: memory stays bounded by
    the chunk, whatever the size of the batch."""

    def __init__(self, spill: Path | None = None) -> None:
        self.spill = spill
        self.rows: dict[str, list[dict]] = defaultdict(list)
        self.frames: dict[str, list[pl.DataFrame]] = defaultdict(list)
        self.files: dict[str, list[Path]] = defaultdict(list)
        self.counts: Counter = Counter()

    def add(self, table: str, rows: list[dict]) -> None:
        bucket = self.rows[table]
        bucket.extend(rows)
        self.counts[table] += len(rows)
        if len(bucket) >= CHUNK_ROWS:
            self._flush(table)

    def _flush(self, table: str) -> None:
        if not self.rows[table]:
            return
        frame = pl.DataFrame(self.rows[table], schema=ALL_TABLES[table], orient="row")
        self.rows[table] = []
        if self.spill is None:
            self.frames[table].append(frame)
            return
        target = self.spill / table / f"part-{len(self.files[table]):05d}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(target)
        self.files[table].append(target)

    def finish(self) -> dict[str, pl.DataFrame | pl.LazyFrame]:
        out: dict[str, pl.DataFrame | pl.LazyFrame] = {}
        for table, schema in ALL_TABLES.items():
            self._flush(table)
            if self.files.get(table):
                out[table] = pl.scan_parquet([str(f) for f in self.files[table]])
            else:
                frames = self.frames.get(table) or [pl.DataFrame(schema=schema)]
                out[table] = pl.concat(frames, how="vertical")
        return out


@dataclass
class JsonBatchResult:
    batch: str
    tables: dict[str, pl.DataFrame | pl.LazyFrame]  # lazy when the batch spilled to disk
    quarantine: pl.DataFrame
    per_file: pl.DataFrame
    states: Counter
    rows: Counter

    def summary(self) -> dict:
        reasons = dict(sorted(Counter(self.quarantine["reason"].to_list()).items()))
        return {
            "batch": self.batch,
            "files": self.per_file.height,
            "records_in": int(self.per_file["records_in"].sum() or 0),
            "ingested": self.states["ingested"],
            "duplicates": self.states["duplicate"],
            "quarantined": self.states["quarantined"],
            "quarantined_by_reason": reasons,
            "rows_by_table": {t: self.rows[t] for t in self.tables},
        }


def _resource_of(record: RawRecord) -> tuple[dict, str | None]:
    if record.data is not None:
        try:
            resource = orjson.loads(record.data)
        except orjson.JSONDecodeError:
            raise InvalidRecord("invalid_json", "the line is not valid JSON") from None
        full_url = None
    else:
        resource, full_url = record.parsed["resource"], record.parsed["fullUrl"]
    if not isinstance(resource, dict):
        raise InvalidRecord("not_a_resource", "the record is not a JSON object")
    if not isinstance(resource.get("resourceType"), str) or not resource["resourceType"]:
        raise InvalidRecord("missing_resource_type", "no resourceType")
    return resource, full_url


def _parsed(record: RawRecord) -> object:
    if record.data is None:
        return record.parsed["resource"]
    try:
        return orjson.loads(record.data)
    except orjson.JSONDecodeError:
        raise InvalidRecord("invalid_json", "the line is not valid JSON") from None


def _learn(context: FhirContext, batch_folder: Path, provider: Provider) -> None:
    """First pass: patients and fullUrls, so references resolve whatever the order of files."""
    for record in read_batch(batch_folder):
        if record.error or provider.declared_for(record.file):
            continue
        if record.data is not None and b'"Patient"' not in record.data:
            continue  # most lines are not patients: skip the parse
        try:
            resource, full_url = _resource_of(record)
            if full_url and resource.get("id") is not None:
                context.full_urls[full_url] = (resource["resourceType"], str(resource["id"]))
            if resource["resourceType"] == "Patient":
                context.register_patient(resource, full_url)
        except Exception:
            continue


def ingest_json_batch(
    batch: str,
    folder: Path,
    settings: JsonIngestSettings,
    known_subjects: dict[str, Subject] | None = None,
    known_resources: dict[tuple[str, str], str] | None = None,
    spill: Path | None = None,
) -> JsonBatchResult:
    """Ingest ``folder`` as ``batch``; ``known_*`` come from earlier batches (references, duplicates)."""
    pseudonymiser = Pseudonymiser(settings.key, settings.max_date_shift_days)
    context = FhirContext(
        pseudonymiser,
        settings.provider.name,
        settings.provider.national_identifier_systems,
        settings.provider.birth_date,
        subjects=dict(known_subjects or {}),
    )
    _learn(context, folder, settings.provider)
    engine = FhirPseudonymiser(context)
    # identity -> content digest, both as 64-bit integers: a few dozen bytes per resource
    seen: dict[int, int] = {_h64(repr(k)): _h64(v) for k, v in (known_resources or {}).items()}
    tables = _Tables(spill)
    quarantine_rows, notes = [], []
    per_file: dict[str, Counter] = defaultdict(Counter)
    states: Counter = Counter()

    def quarantine(record: RawRecord, key: str, reason: str, message: str) -> None:
        quarantine_rows.append((key, record.line, reason, message))
        notes.append(
            {
                "file": record.file,
                "line": record.line,
                "reason": reason,
                "message": message,
                "record": record.data.decode("utf-8", "replace") if record.data else None,
            }
        )
        states["quarantined"] += 1
        per_file[key]["quarantined"] += 1

    for record in read_batch(folder):
        key = file_key(batch, record.file)
        per_file[key]["records_in"] += 1
        if record.error:
            quarantine(record, key, record.error, "the file cannot be read as JSON")
            continue
        declared = settings.provider.declared_for(record.file)
        try:
            if declared is not None:
                fields, pseudonym = pseudonymise_declared(
                    _parsed(record), declared, pseudonymiser, settings.provider.name
                )
                text = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
                identity = _h64(b"declared:" + declared.name.encode() + text)
                if identity in seen:
                    states["duplicate"] += 1
                    per_file[key]["duplicates"] += 1
                    continue
                seen[identity] = identity
                tables.add(
                    "declared_records",
                    [
                        {
                            "record_type": declared.name,
                            "subject_pseudonym": pseudonym,
                            "json": text.decode(),
                        }
                    ],
                )
                states["ingested"] += 1
                per_file[key]["ingested"] += 1
                continue
            resource, full_url = _resource_of(record)
            pseudonymised, subject = engine.apply(resource, full_url)
            digest = _h64(orjson.dumps(pseudonymised, option=orjson.OPT_SORT_KEYS))
            # a resource without id is known by its content: equal ones are duplicates
            rid = pseudonymised.get("id")
            identity = _h64(repr((pseudonymised["resourceType"], rid))) if rid else digest
            if identity in seen:
                if seen[identity] != digest:
                    raise InvalidRecord(
                        "conflicting_version",
                        "same resource id as an earlier record, different content",
                    )
                states["duplicate"] += 1
                per_file[key]["duplicates"] += 1
                continue
            rows = flatten(
                pseudonymised,
                subject.pseudonym if subject else None,
                subject.kind if subject else None,
            )
        except InvalidRecord as problem:
            quarantine(record, key, problem.reason, str(problem))
            continue
        except Exception as error:  # a shape nobody foresaw must not stop the batch
            quarantine(
                record,
                key,
                "internal_error",
                f"record could not be processed ({type(error).__name__})",
            )
            continue
        seen[identity] = digest
        for table, table_rows in rows.items():
            tables.add(table, table_rows)
        states["ingested"] += 1
        per_file[key]["ingested"] += 1

    _write_notes(settings.quarantine_root / batch, notes)
    return JsonBatchResult(
        batch,
        tables.finish(),
        pl.DataFrame(quarantine_rows, schema=QUARANTINE_SCHEMA, orient="row"),
        pl.DataFrame(
            [
                (k, c["records_in"], c["ingested"], c["duplicates"], c["quarantined"])
                for k, c in sorted(per_file.items())
            ],
            schema=FILE_COUNTS_SCHEMA,
            orient="row",
        ),
        states,
        tables.counts,
    )


def _write_notes(folder: Path, notes: list[dict]) -> None:
    """Rejected records with file and line, for operators, outside the lake (replaced each run)."""
    target = folder / "rejected_records.ndjson"
    if not notes:
        target.unlink(missing_ok=True)
        return
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / ".rejected_records.ndjson.partial"
    partial.write_text(
        "".join(json.dumps(n, ensure_ascii=False) + "\n" for n in notes), encoding="utf-8"
    )
    partial.replace(target)
