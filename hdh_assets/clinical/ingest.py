"""Ingest one landed JSON batch: read, pseudonymise, flatten, count. No Dagster here.

Two streaming passes: the first learns the batch's patients and Bundle fullUrls (so that any
resource can be attributed whatever the file order), the second pseudonymises and flattens.
Every record read ends in exactly one state, per file: ingested, duplicate (same resource, same
content) or quarantined with its line and a reason; so records in = ingested + duplicates +
quarantined. Rows are gathered in chunks of polars frames, never as one list of dicts.

FHIR Bulk Data NDJSON files go through :mod:`hdh_assets.clinical.vectorised` (column-wise, the
same rows), which hands back to :meth:`BatchRun.process` every line it cannot prove it handles
alike; it drives the run only through the methods of its ``PerRecordPath`` protocol.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson
import polars as pl

from hdh_assets.clinical.declared import DeclaredRecords, pseudonymise_declared
from hdh_assets.clinical.earlier import (
    OWNER_COLUMN,
    EarlierBatches,
    changed,
    key_of_row,
    row_keys,
    salts_of,
)
from hdh_assets.clinical.flatten import ALL_TABLES, flatten
from hdh_assets.clinical.identity import declared_identity, h64, id_identity
from hdh_assets.clinical.providers import Provider
from hdh_assets.clinical.reader import NDJSON_SUFFIXES, RawRecord, batch_files, read_file
from hdh_assets.pseudonymisation.fhir import (
    FhirContext,
    FhirPseudonymiser,
    InvalidRecord,
    Subject,
)
from hdh_assets.pseudonymisation.subjects import Pseudonymiser

if TYPE_CHECKING:
    from hdh_assets.clinical.vectorised import LineCounts, NdjsonFastPath

CHUNK_ROWS = 50_000
DECLARED_CHUNK = 5_000  # declared records validated per call
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
PATH_COUNTS_SCHEMA = {  # per NDJSON file the column-wise path read: which way its lines went
    "file_key": pl.String,
    "lines_columnwise": pl.Int64,
    "lines_per_record": pl.Int64,
}


@dataclass(frozen=True)
class JsonIngestSettings:
    key: bytes
    quarantine_root: Path  # HDH_HOME/quarantine/json
    provider: Provider = field(default_factory=Provider)
    max_date_shift_days: int = 365


def file_key(batch: str, name: str) -> str:
    """An opaque, stable name for a landed file (file names may carry identifiers)."""
    return hashlib.sha256(f"{batch}/{name}".encode()).hexdigest()[:16]


class Seen:
    """Identity of every ingested resource, with what tells a later equal record apart: its
    content digest (records read one by one), or where it was read (rows made column-wise, whose
    digest is only computed if another record with the same identity turns up, at the end).
    Located identities are kept in sorted numpy arrays: 16 bytes each."""

    MAX_LEVELS = 8

    def __init__(self, digests: dict[int, int] | None = None) -> None:
        self.digests: dict[int, int] = dict(digests or {})
        self._pending: list[int] | None = None  # digested, not yet in the arrays
        self._levels: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted identities, locations)
        self._earlier = np.empty(0, np.int64)  # sorted: what earlier batches hold

    def expect_columns(self) -> None:
        """Rows made column-wise will be checked against every identity: keep them in arrays."""
        if self._pending is None:
            self._pending = list(self.digests)

    def add_digest(self, identity: int, digest: int) -> None:
        self.digests[identity] = digest
        if self._pending is not None:
            self._pending.append(identity)

    def add_earlier(self, identities: np.ndarray) -> None:
        """Resources earlier batches hold: a record with one of these identities is compared
        with their rows before it is ingested (:mod:`hdh_assets.clinical.earlier`)."""
        self._earlier = np.unique(identities.astype(np.int64))

    def earlier(self, identities: np.ndarray) -> np.ndarray:
        """Which of these identities an earlier batch holds."""
        at = np.searchsorted(self._earlier, identities)
        inside = at < len(self._earlier)
        found = np.zeros(len(identities), bool)
        found[inside] = self._earlier[at[inside]] == identities[inside]
        return found

    def is_earlier(self, identity: int) -> bool:
        return bool(self.earlier(np.array([identity], np.int64))[0])

    def add_located(self, identities: np.ndarray, locations: np.ndarray) -> None:
        if len(identities):
            self._add_level(identities.astype(np.int64), locations.astype(np.int64))

    def _add_level(self, identities: np.ndarray, locations: np.ndarray) -> None:
        order = np.argsort(identities, kind="stable")
        self._levels.append((identities[order], locations[order]))
        if len(self._levels) > self.MAX_LEVELS:
            keys = np.concatenate([k for k, _ in self._levels])
            locs = np.concatenate([v for _, v in self._levels])
            order = np.argsort(keys, kind="stable")
            self._levels = [(keys[order], locs[order])]

    def _flush(self) -> None:
        self.expect_columns()
        if self._pending:
            keys = np.fromiter(self._pending, np.int64, len(self._pending))
            self._pending = []
            self._add_level(keys, np.full(len(keys), -1, np.int64))

    def contains(self, identities: np.ndarray) -> np.ndarray:
        """Which of these identities this batch has met already (either way)."""
        self._flush()
        found = np.zeros(len(identities), bool)
        for keys, _ in self._levels:
            at = np.searchsorted(keys, identities)
            inside = at < len(keys)
            found[inside] |= keys[at[inside]] == identities[inside]
        return found

    def location(self, identity: int) -> int | None:
        """Where the column-wise row with this identity was read, if there is one."""
        for keys, locations in self._levels:
            at = int(np.searchsorted(keys, identity))
            if at < len(keys) and keys[at] == identity and locations[at] >= 0:
                return int(locations[at])
        return None


class _Tables:
    """Rows per table, turned into a frame every CHUNK_ROWS rows. With a spill folder, each chunk
    goes to a Parquet file there and the tables come back as lazy scans: memory stays bounded by
    the chunk, whatever the size of the batch. Frames made column-wise join the same chunks."""

    def __init__(self, spill: Path | None = None) -> None:
        self.spill = spill
        self.rows: dict[str, list[dict]] = defaultdict(list)
        self.pending: dict[str, list[pl.DataFrame]] = defaultdict(list)
        self.pending_rows: Counter = Counter()
        self.frames: dict[str, list[pl.DataFrame]] = defaultdict(list)
        self.files: dict[str, list[Path]] = defaultdict(list)
        self.counts: Counter = Counter()

    def add(self, table: str, rows: list[dict]) -> None:
        bucket = self.rows[table]
        bucket.extend(rows)
        self.counts[table] += len(rows)
        if len(bucket) + self.pending_rows[table] >= CHUNK_ROWS:
            self._flush(table)

    def add_frame(self, table: str, frame: pl.DataFrame) -> None:
        if not frame.height:
            return
        self.pending[table].append(frame.select(list(ALL_TABLES[table])))
        self.pending_rows[table] += frame.height
        self.counts[table] += frame.height
        if len(self.rows[table]) + self.pending_rows[table] >= CHUNK_ROWS:
            self._flush(table)

    def _flush(self, table: str) -> None:
        if not self.rows[table] and not self.pending[table]:
            return
        schema = ALL_TABLES[table]
        parts = list(self.pending[table])
        if self.rows[table]:
            parts.append(pl.DataFrame(self.rows[table], schema=schema, orient="row"))
        frame = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
        self.rows[table], self.pending[table], self.pending_rows[table] = [], [], 0
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
    # lines read column-wise and lines sent one by one, per NDJSON file the column-wise path read
    # (none when it did not run): records_in = lines_columnwise + lines_per_record for each
    path_counts: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema=PATH_COUNTS_SCHEMA)
    )

    def path_totals(self) -> dict[str, int]:
        """Lines the column-wise path read column-wise and sent one by one, over the batch: how
        much of it the column-wise path really did (the tables are the same either way)."""
        return {
            "files": self.path_counts.height,
            "lines_columnwise": int(self.path_counts["lines_columnwise"].sum()),
            "lines_per_record": int(self.path_counts["lines_per_record"].sum()),
        }

    def summary(self) -> dict:
        reasons = dict(sorted(Counter(self.quarantine["reason"].to_list()).items()))
        return {
            "batch": self.batch,
            "files": self.per_file.height,
            "records_in": int(self.per_file["records_in"].sum() or 0),
            "ingested": self.states["ingested"],
            "duplicates": self.states["duplicate"],
            "newer_versions": self.states["newer_version"],
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


def learn_record(context: FhirContext, record: RawRecord) -> None:
    """What the first pass learns from one record: a Patient's subject, a Bundle entry's fullUrl."""
    if record.data is not None and b'"Patient"' not in record.data:
        return  # most lines are not patients: skip the parse
    try:
        resource, full_url = _resource_of(record)
        if full_url and resource.get("id") is not None:
            context.full_urls[full_url] = (resource["resourceType"], str(resource["id"]))
        if resource["resourceType"] == "Patient":
            context.register_patient(resource, full_url)
    except Exception:
        return


def _is_ndjson(name: str) -> bool:
    return name.lower().endswith(NDJSON_SUFFIXES)


def _learn(
    context: FhirContext,
    batch_folder: Path,
    provider: Provider,
    fast: NdjsonFastPath | None = None,
) -> None:
    """First pass: patients and fullUrls, so references resolve whatever the order of files."""
    for path in batch_files(batch_folder):
        name = path.relative_to(batch_folder).as_posix()
        if provider.declared_for(name):
            continue
        if fast is not None and _is_ndjson(name):
            fast.learn_file(path, name)
            continue
        for record in read_file(path, name):
            if not record.error:
                learn_record(context, record)


@dataclass
class _Deferred:
    record: RawRecord
    key: str
    digest: int
    location: int


class BatchRun:
    """The state of one batch's second pass, and the per-record path. The column-wise path drives
    it through :class:`hdh_assets.clinical.vectorised.PerRecordPath`: ``context``, ``seen``,
    :meth:`key_of`, :meth:`locate`, :meth:`process`, :meth:`count_records_in`,
    :meth:`add_frames` and :meth:`hold`."""

    def __init__(
        self,
        batch: str,
        settings: JsonIngestSettings,
        context: FhirContext,
        earlier: EarlierBatches | None,
        spill: Path | None,
    ) -> None:
        self.batch = batch
        self.settings = settings
        self.context = context
        self.pseudonymiser = context.pseudonymiser
        self.engine = FhirPseudonymiser(context)
        # identity -> content digest, both as integers: a few dozen bytes per resource
        self.seen = Seen()
        self.earlier = earlier or EarlierBatches()
        self.declared_seen: set[int] = self.earlier.declared_identities()
        self.seen.add_earlier(self.earlier.identities())
        # resources an earlier batch holds: their rows, identities and files, until the end
        self.held = _Tables(spill / "_held" if spill else None)
        self.held_identities: list[np.ndarray] = []
        self.held_numbers: list[np.ndarray] = []  # their files, as numbers of held_files
        self.held_files: dict[str, int] = {}
        self.tables = _Tables(spill)
        self.quarantine_rows: list[tuple] = []
        self.notes: list[dict] = []
        self.per_file: dict[str, Counter] = defaultdict(Counter)
        self.states: Counter = Counter()
        self.deferred: list[_Deferred] = []
        self.located_files: list[tuple[Path, str]] = []  # files whose rows carry a location

    def key_of(self, name: str) -> str:
        return file_key(self.batch, name)

    def quarantine(self, record: RawRecord, key: str, reason: str, message: str) -> None:
        self.quarantine_rows.append((key, record.line, reason, message))
        self.notes.append(
            {
                "file": record.file,
                "line": record.line,
                "reason": reason,
                "message": message,
                "record": record.data.decode("utf-8", "replace") if record.data else None,
            }
        )
        self.states["quarantined"] += 1
        self.per_file[key]["quarantined"] += 1

    def duplicate(self, key: str, count: int = 1) -> None:
        self.states["duplicate"] += count
        self.per_file[key]["duplicates"] += count

    def ingested(self, key: str, count: int = 1) -> None:
        self.states["ingested"] += count
        self.per_file[key]["ingested"] += count

    def count_records_in(self, key: str, count: int) -> None:
        """Records of a file read column-wise (:meth:`process` counts those read one by one)."""
        self.per_file[key]["records_in"] += count

    def add_frames(self, key: str, frames: dict[str, pl.DataFrame], count: int) -> None:
        """``count`` resources ingested column-wise, their rows as frames per table."""
        for table, frame in frames.items():
            self.tables.add_frame(table, frame)
        self.ingested(key, count)

    def process_declared_file(self, path: Path, name: str, declared: DeclaredRecords) -> None:
        """A file of declared records, validated a chunk at a time (one pandera call each)."""
        chunk: list[RawRecord] = []
        for record in read_file(path, name):
            chunk.append(record)
            if len(chunk) == DECLARED_CHUNK:
                self._declared_chunk(chunk, declared)
                chunk = []
        self._declared_chunk(chunk, declared)

    def _declared_chunk(self, chunk: list[RawRecord], declared: DeclaredRecords) -> None:
        records: dict[int, dict] = {}
        for at, record in enumerate(chunk):
            try:
                value = None if record.error else _parsed(record)
            except InvalidRecord:
                continue  # quarantined by process()
            if isinstance(value, dict):
                records[at] = value
        found = declared.violations(list(records.values())) if records else []
        problems = dict(zip(records, found, strict=True))
        for at, record in enumerate(chunk):
            self.process(record, problems=problems.get(at))

    def process(
        self, record: RawRecord, key: str | None = None, problems: list[str] | None = None
    ) -> None:
        """One record, read one by one: pseudonymise, check duplicates, flatten, count.
        ``problems``: a declared record's violations, when its chunk was validated already."""
        key = key or self.key_of(record.file)
        self.per_file[key]["records_in"] += 1
        if record.error:
            self.quarantine(record, key, record.error, "the file cannot be read as JSON")
            return
        declared = self.settings.provider.declared_for(record.file)
        try:
            if declared is not None:
                fields, pseudonym = pseudonymise_declared(
                    _parsed(record),
                    declared,
                    self.pseudonymiser,
                    self.settings.provider.name,
                    problems,
                )
                text = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
                identity = declared_identity(declared.name, text)
                if identity in self.declared_seen:
                    self.duplicate(key)
                    return
                self.declared_seen.add(identity)
                self.tables.add(
                    "declared_records",
                    [
                        {
                            "record_type": declared.name,
                            "subject_pseudonym": pseudonym,
                            "json": text.decode(),
                        }
                    ],
                )
                self.ingested(key)
                return
            resource, full_url = _resource_of(record)
            pseudonymised, subject = self.engine.apply(resource, full_url)
            digest = h64(orjson.dumps(pseudonymised, option=orjson.OPT_SORT_KEYS))
            # a resource without id is known by its content: equal ones are duplicates
            rid = pseudonymised.get("id")
            identity = id_identity(pseudonymised["resourceType"], rid) if rid else digest >> 1
            if identity in self.seen.digests:
                if self.seen.digests[identity] != digest:
                    raise InvalidRecord(
                        "conflicting_version",
                        "same resource id as an earlier record, different content",
                    )
                self.duplicate(key)
                return
            location = self.seen.location(identity)
            if location is not None:  # equal to a row made column-wise: told apart at the end
                self.deferred.append(_Deferred(record, key, digest, location))
                return
            rows = flatten(
                pseudonymised,
                subject.pseudonym if subject else None,
                subject.kind if subject else None,
            )
        except InvalidRecord as problem:
            self.quarantine(record, key, problem.reason, str(problem))
            return
        except Exception as error:  # a shape nobody foresaw must not stop the batch
            self.quarantine(
                record,
                key,
                "internal_error",
                f"record could not be processed ({type(error).__name__})",
            )
            return
        self.seen.add_digest(identity, digest)
        if rid and self.seen.is_earlier(identity):
            self.hold(key, np.array([identity], np.int64), rows=rows)
            return
        for table, table_rows in rows.items():
            self.tables.add(table, table_rows)
        self.ingested(key)

    def hold(
        self,
        key: str,
        identities: np.ndarray,
        rows: dict[str, list[dict]] | None = None,
        frames: dict[str, pl.DataFrame] | None = None,
    ) -> None:
        """Rows of resources an earlier batch holds, made one by one (``rows``) or column-wise
        (``frames``): they wait, chunked like the tables, to be compared at the end."""
        for table, some in (rows or {}).items():
            self.held.add(table, some)
        for table, frame in (frames or {}).items():
            self.held.add_frame(table, frame)
        if key not in self.held_files:
            self.held_files[key] = len(self.held_files)
        self.held_identities.append(identities.astype(np.int64))
        self.held_numbers.append(np.full(len(identities), self.held_files[key], np.int32))

    def resolve_candidates(self) -> None:
        """Resources an earlier batch holds: a duplicate when their rows are the same as the
        latest earlier batch's, else a newer version, ingested here. One scan of the earlier
        rows per table, whatever the number of such resources."""
        if not self.held_identities:
            return
        identities = np.concatenate(self.held_identities)
        numbers = np.concatenate(self.held_numbers)
        waiting = {t: f for t, f in self.held.finish().items() if t in OWNER_COLUMN}
        salts = salts_of(waiting)
        made = pl.concat([row_keys(f, t, salts) for t, f in waiting.items()]).collect()
        newer = changed(made, self.earlier.held_rows(identities))
        is_newer = np.isin(identities, newer)
        for key, number in self.held_files.items():
            mine = numbers == number
            fresh = int(np.count_nonzero(is_newer & mine))
            self.duplicate(key, int(np.count_nonzero(mine)) - fresh)
            self.ingested(key, fresh)
        self.states["newer_version"] += int(np.count_nonzero(is_newer))
        if len(newer):
            wanted = pl.Series(newer, dtype=pl.Int64)
            for table, frame in waiting.items():
                kept = frame.lazy().filter(key_of_row(table, salts).is_in(wanted)).collect()
                self.tables.add_frame(table, kept)
        self.held_identities, self.held_numbers = [], []

    def locate(self, path: Path, name: str) -> int:
        """A number for a file whose rows are registered by location (see :class:`Seen`)."""
        self.located_files.append((path, name))
        return len(self.located_files) - 1

    def resolve_deferred(self) -> None:
        """Records equal in identity to a row made column-wise: duplicate when the first record,
        read again and pseudonymised one by one, has the same digest; else conflicting."""
        wanted: dict[int, set[int]] = defaultdict(set)
        for entry in self.deferred:
            wanted[entry.location >> 32].add(entry.location & 0xFFFFFFFF)
        digests: dict[int, int] = {}
        for number, lines in wanted.items():
            path, name = self.located_files[number]
            for record in read_file(path, name):
                if record.line not in lines:
                    continue
                try:
                    resource, full_url = _resource_of(record)
                    pseudonymised, _ = self.engine.apply(resource, full_url)
                except Exception:
                    continue
                digests[(number << 32) | record.line] = h64(
                    orjson.dumps(pseudonymised, option=orjson.OPT_SORT_KEYS)
                )
        for entry in self.deferred:
            if digests.get(entry.location) == entry.digest:
                self.duplicate(entry.key)
            else:
                self.quarantine(
                    entry.record,
                    entry.key,
                    "conflicting_version",
                    "same resource id as an earlier record, different content",
                )
        self.deferred = []

    def result(self, line_counts: dict[str, LineCounts] | None = None) -> JsonBatchResult:
        """The batch's result; ``line_counts``: per file key, the column-wise path's counts."""
        self.resolve_deferred()
        self.resolve_candidates()
        _write_notes(self.settings.quarantine_root / self.batch, self.notes)
        return JsonBatchResult(
            self.batch,
            self.tables.finish(),
            pl.DataFrame(self.quarantine_rows, schema=QUARANTINE_SCHEMA, orient="row"),
            pl.DataFrame(
                [
                    (k, c["records_in"], c["ingested"], c["duplicates"], c["quarantined"])
                    for k, c in sorted(self.per_file.items())
                ],
                schema=FILE_COUNTS_SCHEMA,
                orient="row",
            ),
            self.states,
            self.tables.counts,
            pl.DataFrame(
                [(k, c.columnwise, c.per_record) for k, c in sorted((line_counts or {}).items())],
                schema=PATH_COUNTS_SCHEMA,
                orient="row",
            ),
        )


def ingest_json_batch(
    batch: str,
    folder: Path,
    settings: JsonIngestSettings,
    known_subjects: dict[str, Subject] | None = None,
    earlier: EarlierBatches | None = None,
    spill: Path | None = None,
    vectorised: bool = True,
) -> JsonBatchResult:
    """Ingest ``folder`` as ``batch``. ``known_subjects`` are the Patients of other batches (so
    references resolve); ``earlier`` what batches delivered before this one hold (duplicates).

    ``vectorised`` (default): FHIR Bulk Data NDJSON files are read column-wise, with the same rows,
    pseudonyms and quarantine; Bundles, JSON documents, declared records and every line that path
    cannot vouch for are read one by one. ``vectorised=False`` reads everything one by one."""
    pseudonymiser = Pseudonymiser(settings.key, settings.max_date_shift_days)
    context = FhirContext(
        pseudonymiser,
        settings.provider.name,
        settings.provider.national_identifier_systems,
        settings.provider.birth_date,
        subjects=dict(known_subjects or {}),
    )
    run = BatchRun(batch, settings, context, earlier, spill)
    fast = None
    if vectorised:
        from hdh_assets.clinical.vectorised import NdjsonFastPath

        fast = NdjsonFastPath(run, learn_record)
    _learn(context, folder, settings.provider, fast)
    for path in batch_files(folder):
        name = path.relative_to(folder).as_posix()
        declared = settings.provider.declared_for(name)
        if declared is not None:
            run.process_declared_file(path, name, declared)
            continue
        if fast is not None and _is_ndjson(name):
            fast.ingest_file(path, name)
            continue
        for record in read_file(path, name):
            run.process(record)
    return run.result(fast.line_counts() if fast is not None else None)


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
