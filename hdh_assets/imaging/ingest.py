"""Ingest one landed DICOM batch: classify, pseudonymise, store, index, quarantine. No Dagster here.

Every landed file (archive members included) ends in exactly one state: ``ingested``,
``duplicate`` (same SOP Instance UID and same content as a file already taken) or ``quarantined``
(with a reason code and a message). Workers write pseudonymised files to a staging folder; the
parent decides duplicates and conflicts, then renames the chosen files into
``store/dicom/<study>/<series>/<sop>.dcm``. Output is a deterministic function of input and key,
so a rerun after a crash rewrites the same bytes and adds nothing.

Concurrent batches. Deciding "new" and writing the index must not be separated by another
batch's decision, or two batches delivering the same instances both ingest them. So the commit
(read what other batches indexed, decide, rename into the store) runs under the store's
exclusive lock (:func:`hdh_assets.imaging.derived.store_lock`, the one STOW-RS takes), and the
caller keeps the lock until this batch's index is written (:func:`committing`): the first batch
to commit ingests an instance, any other counts it a duplicate (or a ``uid_conflict``). The lock
is an ``flock``, released by the kernel when a process dies: a run killed while committing leaves
stored files that no index row names yet, which the next commit (a rerun, or another batch)
overwrites with the same bytes and indexes once.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
import pydicom
from pydicom.dataset import Dataset

from hdh_assets.imaging.archives import LandedFile, landed_files
from hdh_assets.imaging.classify import (
    NO_ELEMENT,
    Reason,
    classify_bytes,
    refusal,
)
from hdh_assets.imaging.derived import store_lock
from hdh_assets.imaging.elements import (
    Header,
    HeaderValues,
    Malformed,
    NotWalkable,
    native_pixel_length,
    read_header,
)
from hdh_assets.imaging.encodings import Comparison, compare_instances
from hdh_assets.imaging.index import INDEX_SCHEMA, index_row
from hdh_assets.pseudonymisation.dicom import (
    DicomProfile,
    DicomPseudonymiser,
    conformance_violations,
    leaked_values,
)
from hdh_assets.pseudonymisation.dicom_header import (
    HeaderPseudonymiser,
    leaked,
    violations,
)
from hdh_assets.pseudonymisation.subjects import Pseudonymiser

INGESTED, DUPLICATE, QUARANTINED = "ingested", "duplicate", "quarantined"
HEADER, PYDICOM = "header", "pydicom"  # how a file was read: see process_file
SAME_INSTANCE_OTHER_ENCODING = "same_instance_other_encoding"  # a duplicate's reason
MEDIA_STORAGE_SOP_CLASS = 0x00020002
EXCLUDED = "excluded"  # the person objected or asked for erasure: nothing of the file is kept
_STORE_UID = re.compile(r"^2\.25\.[0-9]{1,40}$")  # what remapping produces: safe as a file name
QUARANTINE_SCHEMA = {"file_sha256": pl.String, "reason": pl.String, "message": pl.String}


@dataclass(frozen=True)
class IngestSettings:
    key: bytes
    store_root: Path  # HDH_HOME/store/dicom
    quarantine_root: Path  # HDH_HOME/quarantine/dicom
    profile: DicomProfile = field(default_factory=DicomProfile)
    max_date_shift_days: int = 365
    workers: int = 0  # 0: one per core
    excluded: frozenset[str] = frozenset()  # pseudonyms of verified objections and erasures


@dataclass
class FileOutcome:
    name: str  # the landed name: for quarantine notes only, never for the lake
    source_sha256: str
    state: str
    reason: str | None = None
    message: str = ""
    row: dict | None = None
    staged: str | None = None
    parser: str = ""  # "header" (bytes walked, pixel data copied) or "pydicom" (parsed whole)

    @property
    def sop_instance_uid(self) -> str | None:
        return self.row["sop_instance_uid"] if self.row else None


@dataclass
class BatchResult:
    batch: str
    outcomes: list[FileOutcome]

    def count(self, state: str) -> int:
        return sum(o.state == state for o in self.outcomes)

    @property
    def quarantined_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            if outcome.state == QUARANTINED:
                counts[outcome.reason] = counts.get(outcome.reason, 0) + 1
        return dict(sorted(counts.items()))

    def summary(self) -> dict:
        return {
            "batch": self.batch,
            "landed": len(self.outcomes),
            "ingested": self.count(INGESTED),
            "duplicates": self.count(DUPLICATE),
            "quarantined": self.count(QUARANTINED),
            "excluded": self.count(EXCLUDED),
            "quarantined_by_reason": self.quarantined_by_reason,
            "same_instance_other_encoding": sum(
                o.reason == SAME_INSTANCE_OTHER_ENCODING for o in self.outcomes
            ),
            "read_by_pydicom": sum(o.parser == PYDICOM for o in self.outcomes),
        }

    def index(self) -> pl.DataFrame:
        rows = [o.row for o in self.outcomes if o.state == INGESTED]
        return (
            pl.DataFrame(rows, schema=INDEX_SCHEMA, orient="row")
            if rows
            else pl.DataFrame(schema=INDEX_SCHEMA)
        )

    def quarantine(self) -> pl.DataFrame:
        rows = [
            {"file_sha256": o.source_sha256, "reason": o.reason, "message": o.message}
            for o in self.outcomes
            if o.state == QUARANTINED
        ]
        return pl.DataFrame(rows, schema=QUARANTINE_SCHEMA)


# -- worker side ---------------------------------------------------------------------------------
_ENGINES: dict[tuple, DicomPseudonymiser] = {}
_HEADER_ENGINES: dict[DicomPseudonymiser, HeaderPseudonymiser] = {}


def _engine(settings: IngestSettings) -> DicomPseudonymiser:
    """One engine per key and profile in each process (workers are reused across chunks)."""
    cache_key = (settings.key, settings.max_date_shift_days, settings.profile)
    if cache_key not in _ENGINES:
        _ENGINES[cache_key] = DicomPseudonymiser(
            Pseudonymiser(settings.key, settings.max_date_shift_days), settings.profile
        )
    return _ENGINES[cache_key]


def _header_engine(settings: IngestSettings) -> HeaderPseudonymiser:
    engine = _engine(settings)
    if engine not in _HEADER_ENGINES:
        _HEADER_ENGINES[engine] = HeaderPseudonymiser(engine)
    return _HEADER_ENGINES[engine]


def store_relative_path(row: dict) -> str:
    return f"{row['study_instance_uid']}/{row['series_instance_uid']}/{row['sop_instance_uid']}.dcm"


def process_file(landed: LandedFile, settings: IngestSettings, staging: Path) -> FileOutcome:
    """Classify and pseudonymise one file; write the result to ``staging``. Never raises.

    The header is rewritten at the level of its bytes and the pixel data copied unchanged
    (:mod:`hdh_assets.pseudonymisation.dicom_header`); a file that walk cannot follow (no File
    Meta, a deflated dataset, elements out of order, a sequence written as UN) is parsed whole
    by pydicom instead, as ``parser`` records."""
    try:
        data = landed.read()
    except Exception as error:
        reason = (
            Reason.BAD_ARCHIVE if landed.member is not None or landed.error else Reason.UNREADABLE
        )
        message = landed.error or f"the file cannot be read ({type(error).__name__})"
        return FileOutcome(landed.name, "", QUARANTINED, reason, message)
    source_sha = hashlib.sha256(data).hexdigest()
    try:
        original = read_header(data)
    except (NotWalkable, Malformed):
        return _process_with_pydicom(landed.name, data, source_sha, settings, staging)
    return _process_header(landed.name, original, source_sha, settings, staging)


def _quarantined(name: str, source_sha: str, reason: Reason, message: str, parser: str):
    return FileOutcome(name, source_sha, QUARANTINED, reason, message, parser=parser)


def _failed(name: str, source_sha: str, error: Exception, parser: str) -> FileOutcome:
    """A bug or an unwritable value: the type is named, never the message (it may quote)."""
    message = f"de-identification or writing failed ({type(error).__name__})"
    return _quarantined(name, source_sha, Reason.PSEUDONYMISATION_FAILED, message, parser)


def _process_header(
    name: str, original: Header, source_sha: str, settings: IngestSettings, staging: Path
) -> FileOutcome:
    if not original.elements:
        return _quarantined(name, source_sha, *NO_ELEMENT, HEADER)
    values = HeaderValues.of(original)
    refused = refusal(
        values,
        original.meta.get(MEDIA_STORAGE_SOP_CLASS, ""),
        native_pixel_length(original),
    )
    if refused:
        return _quarantined(name, source_sha, *refused, HEADER)
    engine = _header_engine(settings)
    try:
        rewritten = engine.rewrite(original, values)
    except Exception as error:
        return _failed(name, source_sha, error, HEADER)
    out = HeaderValues.of(rewritten.header)
    failed = _verification_failure(
        leaked(original, rewritten, engine), violations(rewritten, engine), out
    )
    if failed:
        return _quarantined(name, source_sha, *failed, HEADER)
    written = rewritten.data
    row = index_row(
        out,
        rewritten.subject.kind,
        len(written),
        "",
        "",
        has_pixel_data=rewritten.header.has_pixel_data,
        transfer_syntax=rewritten.transfer_syntax,
    )
    return _stage(name, source_sha, written, row, staging, HEADER)


def _verification_failure(
    leaks: int, violations: list[str], out: Dataset | HeaderValues
) -> tuple[Reason, str] | None:
    """Verify before storing: a bug in de-identification must never reach the store."""
    if leaks:
        return (
            Reason.IDENTIFIER_LEAK,
            f"{leaks} identifying value(s) of the original remained in the output",
        )
    if violations:
        return Reason.NONCONFORMING_OUTPUT, "; ".join(sorted(set(violations))[:5])
    if not all(
        _STORE_UID.match(str(out.get(k, "")))
        for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    ):
        return Reason.INVALID_UID, "a study, series or instance UID is not a remapped UID"
    return None


def _stage(
    name: str, source_sha: str, written: bytes, row: dict, staging: Path, parser: str
) -> FileOutcome:
    out_sha = hashlib.sha256(written).hexdigest()
    staged = staging / f"{out_sha}.dcm"
    staged.write_bytes(written)
    row["sha256"] = out_sha
    row["store_path"] = store_relative_path(row)
    return FileOutcome(name, source_sha, INGESTED, row=row, staged=str(staged), parser=parser)


def _process_with_pydicom(
    name: str, data: bytes, source_sha: str, settings: IngestSettings, staging: Path
) -> FileOutcome:
    classified = classify_bytes(data)
    if not classified.ok:
        return _quarantined(name, source_sha, classified.reason, classified.message, PYDICOM)
    try:
        out, subject, _ = _engine(settings).apply(classified.dataset)
        buffer = io.BytesIO()
        out.save_as(buffer, enforce_file_format=True)
        written = buffer.getvalue()
        pydicom.dcmread(io.BytesIO(written))  # every output must read back
    except Exception as error:
        return _failed(name, source_sha, error, PYDICOM)
    profile = settings.profile
    failed = _verification_failure(
        leaked_values(classified.dataset, written, profile),
        conformance_violations(out, profile),
        out,
    )
    if failed:
        return _quarantined(name, source_sha, *failed, PYDICOM)
    row = index_row(out, subject.kind, len(written), "", "")
    return _stage(name, source_sha, written, row, staging, PYDICOM)


def _process_many(args: tuple[list[LandedFile], IngestSettings, Path]) -> list[FileOutcome]:
    files, settings, staging = args
    return [process_file(f, settings, staging) for f in files]


# -- parent side ---------------------------------------------------------------------------------
def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _run_workers(
    files: list[LandedFile],
    settings: IngestSettings,
    staging: Path,
    progress: Callable[[int], None],
) -> list[FileOutcome]:
    workers = settings.workers or os.cpu_count() or 1
    if workers == 1 or len(files) < 64:
        outcomes = []
        for landed in files:
            outcomes.append(process_file(landed, settings, staging))
            progress(1)
        return outcomes
    chunk = max(16, len(files) // (workers * 8))
    # spawn: the Dagster run process holds threads, which fork would copy half-way
    context = multiprocessing.get_context("spawn")
    outcomes: list[FileOutcome] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for result in pool.map(
            _process_many, [(c, settings, staging) for c in _chunks(files, chunk)]
        ):
            outcomes.extend(result)
            progress(len(result))
    return outcomes


def _quarantine_original(
    landed_name: str, outcome: FileOutcome, data: bytes | None, folder: Path
) -> None:
    """Keep the original and a note, for operators, outside the lake (named by content hash)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = outcome.source_sha256 or hashlib.sha256(landed_name.encode()).hexdigest()
    if data is not None:
        target = folder / f"{stem}.bin"
        if not target.exists():
            partial = folder / f".{stem}.partial"
            partial.write_bytes(data)
            partial.replace(target)
    note = {"landed_name": landed_name, "reason": outcome.reason, "message": outcome.message}
    (folder / f"{stem}.json").write_text(json.dumps(note, ensure_ascii=False, indent=1))


TakenElsewhere = dict[str, str] | Callable[[], dict[str, str]] | None


def _decide_other_encoding(outcome: FileOutcome, stored: Path) -> None:
    """A taken SOP Instance UID with other bytes: the same instance in another encoding is a
    duplicate (``same_instance_other_encoding``), anything else a ``uid_conflict``."""
    message = "same SOP Instance UID as another file, different content"
    if stored.exists():
        verdict, why = compare_instances(stored.read_bytes(), Path(outcome.staged).read_bytes())
        if verdict is Comparison.SAME:
            outcome.state, outcome.reason = DUPLICATE, SAME_INSTANCE_OTHER_ENCODING
            outcome.message = "the same instance as a stored file, in another transfer syntax"
            return
        message = f"{message}: {why}"
    outcome.state, outcome.reason, outcome.message = QUARANTINED, Reason.UID_CONFLICT, message


@dataclass
class PreparedBatch:
    """A batch whose files are classified and pseudonymised into staging: nothing in the store
    has changed yet, and nothing is decided about other batches."""

    batch: str
    settings: IngestSettings
    files: list[LandedFile]
    outcomes: list[FileOutcome]
    staging: Path

    def commit(self, taken_elsewhere: dict[str, str]) -> BatchResult:
        """Decide exclusions, duplicates and conflicts, and rename the chosen files into the
        store. Call under :func:`store_lock`, with ``taken_elsewhere`` read under the same lock."""
        settings = self.settings
        seen: dict[str, str] = {}
        for outcome in sorted(self.outcomes, key=lambda o: o.name):
            if outcome.state != INGESTED:
                continue
            if outcome.row["subject_pseudonym"] in settings.excluded:
                outcome.state, outcome.row = EXCLUDED, None  # its staged copy goes with staging
                continue
            sop = outcome.sop_instance_uid
            out_sha = outcome.row["sha256"]
            earlier = seen.get(sop) or taken_elsewhere.get(sop)
            target = settings.store_root / outcome.row["store_path"]
            if not target.resolve().is_relative_to(settings.store_root.resolve()):
                raise RuntimeError("store path outside the store")  # unreachable: UIDs are checked
            if earlier is not None:
                if earlier == out_sha:
                    outcome.state = DUPLICATE
                else:
                    _decide_other_encoding(outcome, target)
                continue
            seen[sop] = out_sha
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(outcome.staged, target)
        self.outcomes.sort(key=lambda o: o.name)
        return BatchResult(self.batch, self.outcomes)

    def keep_quarantined(self) -> None:
        """Keep the originals of quarantined files for operators (needs no lock)."""
        by_name = {f.name: f for f in self.files}
        folder = self.settings.quarantine_root / self.batch
        for outcome in self.outcomes:
            if outcome.state == QUARANTINED:
                try:
                    data = by_name[outcome.name].read()
                except Exception:
                    data = None
                _quarantine_original(outcome.name, outcome, data, folder)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def prepare_batch(
    batch: str,
    folder: Path,
    settings: IngestSettings,
    progress: Callable[[int], None] = lambda n: None,
) -> PreparedBatch:
    """Classify and pseudonymise every landed file of ``folder`` into a staging folder (workers)."""
    files = list(landed_files(folder))
    staging = settings.store_root / ".staging" / f"{batch}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        outcomes = _run_workers(files, settings, staging, progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PreparedBatch(batch, settings, files, outcomes, staging)


def _taken(taken_elsewhere: TakenElsewhere) -> dict[str, str]:
    if callable(taken_elsewhere):
        return taken_elsewhere()
    return taken_elsewhere or {}


@contextmanager
def committing(
    batch: str,
    folder: Path,
    settings: IngestSettings,
    taken_elsewhere: TakenElsewhere = None,
    progress: Callable[[int], None] = lambda n: None,
) -> Iterator[BatchResult]:
    """Ingest ``folder`` as batch ``batch`` and hold the store lock while the caller writes the
    batch's index (inside the ``with`` block): the files are prepared without the lock, then
    ``taken_elsewhere`` is read, the batch committed, and the index written, all under it, so
    that a batch running at the same time sees either none of this batch or all of it.

    ``taken_elsewhere`` maps pseudonymised SOP Instance UIDs already ingested by other batches
    to the sha256 of their stored file (or is a function returning that map, called under the
    lock: pass one that reads the index for batches that may run at the same time).
    """
    prepared = prepare_batch(batch, folder, settings, progress)
    try:
        with store_lock(settings.store_root):
            result = prepared.commit(_taken(taken_elsewhere))
            yield result
        prepared.keep_quarantined()
    finally:
        prepared.discard()


def ingest_batch(
    batch: str,
    folder: Path,
    settings: IngestSettings,
    taken_elsewhere: TakenElsewhere = None,
    progress: Callable[[int], None] = lambda n: None,
) -> BatchResult:
    """Ingest ``folder`` as batch ``batch`` (see :func:`committing`; here the caller writes the
    index after the lock is released, which is enough when no other batch runs at the same
    time or when nothing reads its index)."""
    with committing(batch, folder, settings, taken_elsewhere, progress) as result:
        pass
    return result


def outcome_json(outcome: FileOutcome) -> dict:
    return {k: v for k, v in asdict(outcome).items() if k not in ("row", "staged")}
