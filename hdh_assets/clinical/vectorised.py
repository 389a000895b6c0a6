"""FHIR Bulk Data NDJSON read column-wise: the rows of the per-record path, at column speed.

Used by :func:`hdh_assets.clinical.ingest.ingest_json_batch` for every ``*.ndjson``/``*.jsonl``
file (plain or gzip) that no provider declares. A file is read in chunks of about CHUNK_BYTES.
Each chunk is screened with byte operations, decoded by pyarrow's JSON reader against an explicit
shape per resource type (the allowlisted fields: SHAPES), then pseudonymised and flattened with
polars expressions into the same typed tables. Keyed hashes are computed once per distinct value
(subjects, referenced ids, date offsets) and, for resource ids, once per row with the key's pads
hashed once (:mod:`hdh_assets.pseudonymisation.bulk`). Memory is bounded by the chunk, plus 16
bytes per resource for duplicate detection (:class:`hdh_assets.clinical.ingest.Seen`).

The result is exactly the per-record path's (:meth:`hdh_assets.clinical.ingest._Run.process`),
because a line is only handled here when nothing in it could be read differently, and goes back
to the per-record path, in line order, otherwise:

- screening: the line starts with ``{``, holds no ``null`` and no NUL, is valid UTF-8 and is not
  deeply nested (``null`` cannot be told from an absent field; pyarrow crashes near 10 000
  levels); a float read as ``NaN`` or infinite anywhere in the line (pyarrow reads ``NaN`` and
  ``Infinity``, orjson refuses them) sends it back too;
- decoding: pyarrow refuses a value of the wrong JSON type and a repeated key (orjson would keep
  the last one); a piece of the chunk that does not decode is split in two until the lines that
  do not are isolated (MIN_PIECE), or two objects on one line;
- shape: a field outside the shape, other than inside an element the per-record path removes
  whole (``text``, ``meta``, ``identifier``, ``note``, a person's ``name``...), sends the line
  back: no unknown field is ever passed through, and every Coding of a line handled here is at a
  place the shape knows (the ``codings`` table);
- values: a date or date-time that is not a plain ISO form (``YYYY-MM-DD``, with
  ``THH:MM:SS[.ffffff][Z|±HH:MM]``) or not a real day, any other text that looks like a date
  (the per-record path would shift it), two variants of one choice element (``value[x]``: there
  the first in the text wins), a subject Patient not known yet (learnt later in the file), a
  missing id, an identity (type, id) already ingested or met twice in the chunk (equal or
  conflicting versions are told apart by content digests, one by one; a record equal in identity
  to a row made here is compared at the end of the batch, the row's line read again).

Resource types read here: Patient, Encounter, Condition, Observation (every value[x] variant of
flatten.py, components), MedicationRequest, Procedure, DiagnosticReport, Immunization,
AllergyIntolerance. Other types, Bundles and JSON documents, declared records and lines sent back
go one by one. Patients are learnt alike in the first pass (the first valid national identifier
in the provider's order, else a provider-scoped pseudonym of the id); a Patient line that cannot
be read here is learnt one by one, in its turn. Anything unexpected while computing a chunk's
rows sends the whole chunk one by one: nothing is committed before every row is computed.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.json as pj

from hdh_assets.clinical.flatten import ALL_TABLES, TABLES, VALUE_COLUMNS
from hdh_assets.clinical.identity import identity_expr, type_salt
from hdh_assets.clinical.reader import RawRecord
from hdh_assets.pseudonymisation.bulk import provider_pseudonyms, remap_ids, subject_pseudonyms
from hdh_assets.pseudonymisation.fhir import REMOVED_KEYS, Subject, parse_reference

if TYPE_CHECKING:
    from hdh_assets.clinical.ingest import _Run

CHUNK_BYTES = 16 << 20  # lines read per chunk: bounded memory, whatever the file
PREFETCH = False  # True: decode the next chunk in a thread meanwhile (+~300 MB peak RSS)
MIN_PIECE = 16  # a piece of a chunk this small that does not decode goes back line by line
SAFE_LINE = 4096  # shorter lines nest at most 2048 deep: pyarrow crashes near 10 000
MAX_OPENERS = 2048
MAX_SCHEMA_DEPTH = 48
NOT_DATES = {"system", "code", "version", "reference", "id", "url", "value", "unit"}
_DATE_LIKE = r"^\d{4}-\d{2}-\d{2}"  # unicode digits, like the per-record path's regex
_STRICT = (
    r"^[1-8][0-9]{3}-[0-9]{2}-[0-9]{2}(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?$"
)
_TYPE_PREFIX = re.compile(rb'\{\s*"resourceType"\s*:\s*"([A-Za-z]{1,64})"')
_NEEDLES = (b"null", b"\x00")
_NUMBERS = (b"NaN", b"Infinity")
_END = object()
TIMESTAMP = pl.Datetime("us", "UTC")

# -- shapes: the fields read, per resource type (pyarrow types) ------------------------------------
S, F, B, I64 = pa.string(), pa.float64(), pa.bool_(), pa.int64()


def _struct(**fields: pa.DataType) -> pa.DataType:
    return pa.struct(list(fields.items()))


def _list(item: pa.DataType) -> pa.DataType:
    return pa.list_(item)


CODING = _struct(system=S, version=S, code=S, display=S, userSelected=B)
CC = _struct(coding=_list(CODING), text=S)
REF = _struct(reference=S, display=S)
PERIOD = _struct(start=S, end=S)
QUANTITY = _struct(value=F, comparator=S, unit=S, system=S, code=S)
RANGE = _struct(low=QUANTITY, high=QUANTITY)
RATIO = _struct(numerator=QUANTITY, denominator=QUANTITY)
ATTACHMENT = _struct(contentType=S, language=S, data=S, url=S, size=F, hash=S, title=S, creation=S)
VALUES = {
    "valueQuantity": QUANTITY,
    "valueCodeableConcept": CC,
    "valueString": S,
    "valueBoolean": B,
    "valueInteger": I64,
    "valueDateTime": S,
    "valuePeriod": PERIOD,
    "valueRange": RANGE,
    "valueRatio": RATIO,
    "valueTime": S,
}
TIMING = _struct(
    event=_list(S),
    repeat=_struct(
        boundsPeriod=PERIOD,
        count=F,
        duration=F,
        durationUnit=S,
        frequency=F,
        period=F,
        periodUnit=S,
        dayOfWeek=_list(S),
        timeOfDay=_list(S),
        when=_list(S),
    ),
    code=CC,
)
DOSAGE = _struct(
    sequence=F,
    text=S,
    additionalInstruction=_list(CC),
    timing=TIMING,
    asNeededBoolean=B,
    asNeededCodeableConcept=CC,
    site=CC,
    route=CC,
    method=CC,
    doseAndRate=_list(
        _struct(type=CC, doseQuantity=QUANTITY, doseRange=RANGE, rateQuantity=QUANTITY)
    ),
)
_COMMON = {"resourceType": S, "id": S, "language": S, "implicitRules": S}

SHAPES: dict[str, dict[str, pa.DataType]] = {
    "Patient": {
        **_COMMON,
        "active": B,
        "gender": S,
        "birthDate": S,
        "deceasedBoolean": B,
        "deceasedDateTime": S,
        "maritalStatus": CC,
        "multipleBirthBoolean": B,
        "multipleBirthInteger": I64,
        "generalPractitioner": _list(REF),
        "managingOrganization": REF,
    },
    "Encounter": {
        **_COMMON,
        "status": S,
        "class": CODING,
        "type": _list(CC),
        "serviceType": CC,
        "priority": CC,
        "subject": REF,
        "episodeOfCare": _list(REF),
        "basedOn": _list(REF),
        "participant": _list(_struct(type=_list(CC), period=PERIOD, individual=REF)),
        "appointment": _list(REF),
        "period": PERIOD,
        "reasonCode": _list(CC),
        "reasonReference": _list(REF),
        "diagnosis": _list(_struct(condition=REF, use=CC, rank=F)),
        "hospitalization": _struct(
            admitSource=CC, reAdmission=CC, dischargeDisposition=CC, destination=REF, origin=REF
        ),
        "location": _list(_struct(location=REF, status=S, physicalType=CC, period=PERIOD)),
        "serviceProvider": REF,
        "partOf": REF,
    },
    "Condition": {
        **_COMMON,
        "clinicalStatus": CC,
        "verificationStatus": CC,
        "category": _list(CC),
        "severity": CC,
        "code": CC,
        "bodySite": _list(CC),
        "subject": REF,
        "encounter": REF,
        "onsetDateTime": S,
        "onsetPeriod": PERIOD,
        "onsetString": S,
        "onsetAge": QUANTITY,
        "onsetRange": RANGE,
        "abatementDateTime": S,
        "abatementPeriod": PERIOD,
        "abatementString": S,
        "recordedDate": S,
        "recorder": REF,
        "asserter": REF,
        "evidence": _list(_struct(code=_list(CC), detail=_list(REF))),
    },
    "Observation": {
        **_COMMON,
        "status": S,
        "basedOn": _list(REF),
        "partOf": _list(REF),
        "category": _list(CC),
        "code": CC,
        "subject": REF,
        "focus": _list(REF),
        "encounter": REF,
        "effectiveDateTime": S,
        "effectivePeriod": PERIOD,
        "effectiveInstant": S,
        "issued": S,
        "performer": _list(REF),
        **VALUES,
        "dataAbsentReason": CC,
        "interpretation": _list(CC),
        "bodySite": CC,
        "method": CC,
        "specimen": REF,
        "device": REF,
        "referenceRange": _list(
            _struct(low=QUANTITY, high=QUANTITY, type=CC, appliesTo=_list(CC), text=S)
        ),
        "hasMember": _list(REF),
        "derivedFrom": _list(REF),
        "component": _list(
            _struct(
                code=CC,
                **VALUES,
                dataAbsentReason=CC,
                interpretation=_list(CC),
            )
        ),
    },
    "MedicationRequest": {
        **_COMMON,
        "status": S,
        "statusReason": CC,
        "intent": S,
        "category": _list(CC),
        "priority": S,
        "reportedBoolean": B,
        "medicationCodeableConcept": CC,
        "medicationReference": REF,
        "subject": REF,
        "encounter": REF,
        "authoredOn": S,
        "requester": REF,
        "performer": REF,
        "recorder": REF,
        "reasonCode": _list(CC),
        "reasonReference": _list(REF),
        "basedOn": _list(REF),
        "courseOfTherapyType": CC,
        "insurance": _list(REF),
        "dosageInstruction": _list(DOSAGE),
        "priorPrescription": REF,
    },
    "Procedure": {
        **_COMMON,
        "basedOn": _list(REF),
        "partOf": _list(REF),
        "status": S,
        "statusReason": CC,
        "category": CC,
        "code": CC,
        "subject": REF,
        "encounter": REF,
        "performedDateTime": S,
        "performedPeriod": PERIOD,
        "performedString": S,
        "recorder": REF,
        "asserter": REF,
        "performer": _list(_struct(function=CC, actor=REF, onBehalfOf=REF)),
        "location": REF,
        "reasonCode": _list(CC),
        "reasonReference": _list(REF),
        "bodySite": _list(CC),
        "outcome": CC,
        "report": _list(REF),
        "complication": _list(CC),
        "followUp": _list(CC),
        "usedCode": _list(CC),
    },
    "DiagnosticReport": {
        **_COMMON,
        "basedOn": _list(REF),
        "status": S,
        "category": _list(CC),
        "code": CC,
        "subject": REF,
        "encounter": REF,
        "effectiveDateTime": S,
        "effectivePeriod": PERIOD,
        "issued": S,
        "performer": _list(REF),
        "resultsInterpreter": _list(REF),
        "specimen": _list(REF),
        "result": _list(REF),
        "imagingStudy": _list(REF),
        "conclusion": S,
        "conclusionCode": _list(CC),
        "presentedForm": _list(ATTACHMENT),
    },
    "Immunization": {
        **_COMMON,
        "status": S,
        "statusReason": CC,
        "vaccineCode": CC,
        "patient": REF,
        "encounter": REF,
        "occurrenceDateTime": S,
        "occurrenceString": S,
        "recorded": S,
        "primarySource": B,
        "reportOrigin": CC,
        "location": REF,
        "manufacturer": REF,
        "lotNumber": S,
        "expirationDate": S,
        "site": CC,
        "route": CC,
        "doseQuantity": QUANTITY,
        "performer": _list(_struct(function=CC, actor=REF)),
        "reasonCode": _list(CC),
        "reasonReference": _list(REF),
        "isSubpotent": B,
        "programEligibility": _list(CC),
        "fundingSource": CC,
        "protocolApplied": _list(
            _struct(series=S, targetDisease=_list(CC), doseNumberString=S, seriesDosesString=S)
        ),
    },
    "AllergyIntolerance": {
        **_COMMON,
        "clinicalStatus": CC,
        "verificationStatus": CC,
        "type": S,
        "category": _list(S),
        "criticality": S,
        "code": CC,
        "patient": REF,
        "encounter": REF,
        "onsetDateTime": S,
        "onsetPeriod": PERIOD,
        "onsetString": S,
        "onsetAge": QUANTITY,
        "recordedDate": S,
        "recorder": REF,
        "asserter": REF,
        "lastOccurrence": S,
        "reaction": _list(
            _struct(
                substance=CC,
                manifestation=_list(CC),
                onset=S,
                severity=S,
                exposureRoute=CC,
            )
        ),
    },
}
SCHEMAS = {rtype: pa.schema(list(fields.items())) for rtype, fields in SHAPES.items()}
_DATATYPES = {CODING, CC, REF, PERIOD, QUANTITY, RANGE, RATIO, ATTACHMENT}
_REFERENCED = {"Patient", "Encounter"}  # their remapped ids are kept for the references
LEARN_SCHEMA = pa.schema(
    [("resourceType", S), ("id", S), ("identifier", _list(_struct(system=S, value=S)))]
)
# keys whose text is a date or date-time (read strictly: anything else goes back one by one)
DATE_KEYS = {
    "start",
    "end",
    "effectiveDateTime",
    "effectiveInstant",
    "issued",
    "recordedDate",
    "authoredOn",
    "onsetDateTime",
    "abatementDateTime",
    "performedDateTime",
    "occurrenceDateTime",
    "recorded",
    "expirationDate",
    "deceasedDateTime",
    "valueDateTime",
    "lastOccurrence",
    "onset",
    "creation",
}
SUBJECT_FIELD = {
    "Patient": None,
    "Immunization": "patient",
    "AllergyIntolerance": "patient",
}
CHOICES = {  # choice elements read with the per-record path's _choice: one variant at most
    "Observation": ("effective", "value"),
    "Condition": ("onset",),
    "Procedure": ("performed",),
    "DiagnosticReport": ("effective",),
    "Immunization": ("occurrence",),
    "AllergyIntolerance": ("onset",),
}


def _is_variant(name: str, prefix: str) -> bool:
    return name.startswith(prefix) and name != prefix and name[len(prefix)].isupper()


# -- reading --------------------------------------------------------------------------------------
def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


class _Chunk:
    """Consecutive lines of a file, as one buffer and the offsets of each line."""

    __slots__ = ("_ends", "_starts", "buffer", "first")

    def __init__(self, first: int, buffer: bytes):
        self.first = first  # number of the first line in the file
        self.buffer = buffer
        self._ends = self._starts = None

    @property
    def ends(self) -> np.ndarray:
        if self._ends is None:
            ends = np.flatnonzero(np.frombuffer(self.buffer, np.uint8) == 10) + 1
            if not self.buffer.endswith(b"\n"):
                ends = np.append(ends, len(self.buffer))
            self._ends = ends.astype(np.int64)
        return self._ends

    @property
    def starts(self) -> np.ndarray:
        if self._starts is None:
            self._starts = np.concatenate(([0], self.ends[:-1])).astype(np.int64)
        return self._starts

    def __len__(self) -> int:
        return len(self.ends)

    def line(self, i: int) -> bytes:
        return self.buffer[self.starts[i] : self.ends[i]]

    def data(self, part: np.ndarray) -> bytes:
        """The lines at ``part`` (ascending), each ending with a newline: what pyarrow reads."""
        if part[-1] - part[0] + 1 == len(part):  # consecutive lines: one slice
            data = self.buffer[self.starts[part[0]] : self.ends[part[-1]]]
        else:
            keep = np.zeros(len(self), bool)
            keep[part] = True
            data = np.frombuffer(self.buffer, np.uint8)[
                np.repeat(keep, self.ends - self.starts)
            ].tobytes()
        return data if data.endswith(b"\n") else data + b"\n"

    def holding(self, needle: bytes) -> np.ndarray:
        """Indices of the lines that hold ``needle``."""
        if self.buffer.find(needle) < 0:
            return np.zeros(0, np.int64)
        lines = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(),
            len(self),
            [None, pa.py_buffer(np.concatenate(([0], self.ends))), pa.py_buffer(self.buffer)],
        )
        return np.flatnonzero(pl.from_arrow(lines).bin.contains(needle).to_numpy())

    def subset(self, indices: list[int]) -> _Chunk:
        """The lines at ``indices`` as a chunk of their own (their numbers are not kept)."""
        return _Chunk(0, self.data(np.array(indices, np.int64)))


def _chunks(path: Path) -> Iterator[_Chunk | None]:
    """The file's lines in chunks of about CHUNK_BYTES, exactly the lines the reader yields one
    by one; ``None`` last when the file stops being readable (the reader's ``unreadable``). After
    a read error the file is read again line by line, as the reader does, past what was read."""
    done = 0
    try:
        with _open(path) as handle:
            carry = b""
            while block := handle.read(CHUNK_BYTES):
                data = carry + block if carry else block
                cut = data.rfind(b"\n") + 1
                if not cut:  # a line longer than a block
                    carry = data
                    continue
                carry = data[cut:]
                chunk = _Chunk(done + 1, data[:cut])
                yield chunk
                done += len(chunk)
            if carry:
                yield _Chunk(done + 1, carry)
    except (OSError, EOFError, gzip.BadGzipFile):
        yield from _line_by_line(path, done)


def _line_by_line(path: Path, done: int) -> Iterator[_Chunk | None]:
    lines: list[bytes] = []
    size, first = 0, done + 1
    try:
        with _open(path) as handle:
            for number, line in enumerate(handle, start=1):
                if number <= done:
                    continue
                lines.append(line)
                size += len(line)
                if size >= CHUNK_BYTES:
                    yield _Chunk(first, b"".join(lines))
                    lines, size, first = [], 0, number + 1
    except (OSError, EOFError, gzip.BadGzipFile):
        if lines:
            yield _Chunk(first, b"".join(lines))
        yield None
        return
    if lines:
        yield _Chunk(first, b"".join(lines))


def _screen(chunk: _Chunk, numbers: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(blank, fit): blank lines are no records; fit ones may be decoded column-wise.
    ``numbers``: also refuse lines holding ``NaN`` or ``Infinity`` (else caught after decoding,
    where pyarrow reads them as floats)."""
    buffer, starts, ends = chunk.buffer, chunk.starts, chunk.ends
    fit = np.frombuffer(buffer, np.uint8)[starts] == ord("{")
    blank = np.zeros(len(chunk), bool)
    for i in np.flatnonzero(~fit):
        blank[i] = not chunk.line(i).strip()
    try:
        buffer.decode("utf-8")
    except UnicodeDecodeError:
        for i in np.flatnonzero(fit):
            try:
                chunk.line(i).decode("utf-8")
            except UnicodeDecodeError:
                fit[i] = False
    for needle in _NEEDLES + (_NUMBERS if numbers else ()):
        fit[chunk.holding(needle)] = False
    for i in np.flatnonzero(ends - starts >= SAFE_LINE):
        line = chunk.line(i)
        if line.count(b"{") + line.count(b"[") > MAX_OPENERS:
            fit[i] = False
    return blank, fit


def _schema_depth(dtype: pa.DataType) -> int:
    deepest, stack = 0, [(dtype, 0)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if pa.types.is_struct(current):
            stack.extend((current.field(i).type, depth + 1) for i in range(current.num_fields))
        elif pa.types.is_list(current) or pa.types.is_large_list(current):
            stack.append((current.value_type, depth + 1))
    return deepest


def _read(chunk: _Chunk, part: np.ndarray, schema: pa.Schema, unexpected: str):
    longest = int((chunk.ends[part] - chunk.starts[part]).max())
    try:
        table = pj.read_json(
            io.BytesIO(chunk.data(part)),
            read_options=pj.ReadOptions(block_size=max(1 << 21, 2 * longest + 2)),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior=unexpected
            ),
        )
    except Exception:
        return None
    if table.num_rows != len(part):
        return None  # two objects on one line, for one
    if any(_schema_depth(f.type) > MAX_SCHEMA_DEPTH for f in table.schema):
        return None
    return table


def _decode(
    chunk: _Chunk, indices: np.ndarray, schema: pa.Schema, unexpected: str = "infer"
) -> tuple[list[tuple[np.ndarray, pa.Table]], list[int]]:
    """Decode the lines at ``indices``; a piece that does not decode is split in two, down to
    MIN_PIECE lines, which go back one by one."""
    pieces, failed, stack = [], [], [indices]
    while stack:
        part = stack.pop()
        if not len(part):
            continue
        table = _read(chunk, part, schema, unexpected)
        if table is not None:
            pieces.append((part, table))
        elif len(part) <= MIN_PIECE:
            failed.extend(int(i) for i in part)
        else:
            middle = len(part) // 2
            stack += [part[middle:], part[:middle]]
    return pieces, failed


def _observed(actual: pa.DataType, shape: pa.DataType) -> pa.DataType | None:
    """The part of ``shape`` that ``actual`` (a decoded type) holds, with the shape's types.
    FHIR datatypes (Coding, Quantity, ...) are kept whole: expressions read their fields."""
    if pa.types.is_struct(shape):
        if not pa.types.is_struct(actual):
            return None
        if shape in _DATATYPES:
            return shape
        fields = []
        for i in range(actual.num_fields):
            name = actual.field(i).name
            j = shape.get_field_index(name)
            if j >= 0:
                inner = _observed(actual.field(i).type, shape.field(j).type)
                fields.append(pa.field(name, inner if inner is not None else shape.field(j).type))
        return pa.struct(fields)
    if pa.types.is_list(shape):
        if not pa.types.is_list(actual):
            return None
        inner = _observed(actual.value_type, shape.value_type)
        return pa.list_(inner if inner is not None else shape.value_type)
    return shape


def _union(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """Two parts of one shape, merged (fields in first-seen order)."""
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        fields = {a.field(i).name: a.field(i).type for i in range(a.num_fields)}
        for i in range(b.num_fields):
            name, dtype = b.field(i).name, b.field(i).type
            fields[name] = _union(fields[name], dtype) if name in fields else dtype
        return pa.struct(list(fields.items()))
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(_union(a.value_type, b.value_type))
    return a


def _conform(array: pa.Array, target: pa.DataType) -> pa.Array:
    """``array`` (of a part of the shape) as an array of the whole shape: absent fields null."""
    if array.type == target:
        return array
    if pa.types.is_struct(target):
        children, present = [], {array.type.field(i).name for i in range(array.type.num_fields)}
        for i in range(target.num_fields):
            field = target.field(i)
            if field.name in present:
                children.append(_conform(array.field(field.name), field.type))
            else:
                children.append(pa.nulls(len(array), field.type))
        return pa.StructArray.from_arrays(
            children,
            fields=[target.field(i) for i in range(target.num_fields)],
            mask=array.is_null() if array.null_count else None,
        )
    if pa.types.is_list(target):
        return pa.ListArray.from_arrays(
            array.offsets,
            _conform(array.values, target.value_type),
            type=target,
            mask=array.is_null() if array.null_count else None,
        )
    return array.cast(target)


def _conformed(table: pa.Table, known: pa.DataType, shape: pa.Schema) -> pa.Table:
    """The decoded table with the columns of the whole shape: those met as ``known`` types them
    (fields outside the shape dropped), the others null."""
    fields, columns = [], []
    for field in shape:
        if known.get_field_index(field.name) >= 0:
            target = known.field(field.name).type
            column = table.column(field.name)
            chunks = [_conform(chunk, target) for chunk in column.chunks]
            columns.append(pa.chunked_array(chunks, type=target))
            fields.append(pa.field(field.name, target))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
            fields.append(field)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


# -- expressions ----------------------------------------------------------------------------------
def _any(exprs: list[pl.Expr]) -> pl.Expr:
    return pl.any_horizontal(exprs).fill_null(False) if exprs else pl.lit(False)


def _in_lists(expr: pl.Expr, dtype: pl.DataType, build) -> tuple[list[pl.Expr], pl.DataType]:
    """Apply ``build(element_expr, element_dtype) -> [bool exprs]`` through list levels."""
    if isinstance(dtype, pl.List):
        inner = _in_lists(pl.element(), dtype.inner, build)[0]
        if not inner:
            return [], dtype
        return [expr.list.eval(_any(inner)).list.any().fill_null(False)], dtype
    return build(expr, dtype), dtype


def _extras(expr: pl.Expr, actual: pl.DataType, expected: pl.DataType | None) -> list[pl.Expr]:
    """True where a field outside the shape is present (removed elements excepted)."""
    if isinstance(actual, pl.List):
        if not isinstance(expected, pl.List):
            return [expr.is_not_null()]
        return _in_lists(expr, actual, lambda e, d: _extras(e, d, _innermost(expected)))[0]
    if isinstance(actual, pl.Struct):
        if not isinstance(expected, pl.Struct):
            return [expr.is_not_null()]
        known = {f.name: f.dtype for f in expected.fields}
        out = []
        for field in actual.fields:
            if field.name in REMOVED_KEYS:
                continue
            if field.name not in known:
                out.append(expr.struct.field(field.name).is_not_null())
            else:
                out += _extras(expr.struct.field(field.name), field.dtype, known[field.name])
        return out
    if expected is None or actual != expected:
        return [expr.is_not_null()]
    return []


def _not_finite(expr: pl.Expr, dtype: pl.DataType) -> list[pl.Expr]:
    """True where a float is NaN or infinite: pyarrow reads ``NaN`` and ``Infinity``, which
    are not JSON (orjson refuses the line)."""
    if isinstance(dtype, pl.List):
        return _in_lists(expr, dtype, _not_finite)[0]
    if isinstance(dtype, pl.Struct):
        return [e for f in dtype.fields for e in _not_finite(expr.struct.field(f.name), f.dtype)]
    if dtype.is_float():
        return [(expr.is_nan() | expr.is_infinite()).fill_null(False)]
    return []


def _innermost(dtype: pl.DataType) -> pl.DataType:
    while isinstance(dtype, pl.List):
        dtype = dtype.inner
    return dtype


def _instant(value: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(UTC instant before any date shift, well formed) of a FHIR date or date-time, as
    ``datetime.fromisoformat`` reads it in the per-record path: a date alone is midnight UTC, a
    date-time without offset is UTC. Only the plain forms are read (``_STRICT``); the instant is
    null for a date that does not exist."""
    text = value.str.replace("Z$", "+00:00")
    without_offset = ~text.str.slice(-6, 1).is_in(["+", "-"])
    stamped = pl.when(without_offset).then(text + "+00:00").otherwise(text)
    instant = (
        pl.when(value.str.len_chars() == 10)
        .then(
            value.str.to_date("%Y-%m-%d", strict=False)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC")
        )
        .otherwise(
            stamped.str.to_datetime(
                "%Y-%m-%dT%H:%M:%S%.f%:z", time_unit="us", time_zone="UTC", strict=False
            )
        )
    )
    return instant, value.str.contains(_STRICT).fill_null(False)


def _leaf_checks(
    expr: pl.Expr, dtype: pl.DataType, key: str, ctx: _Ctx | None = None
) -> list[pl.Expr]:
    """True where a text the per-record path would shift (or refuse) as a date is met. ``ctx``
    outside lists: date fields are then read once, with the row's other dates."""
    if isinstance(dtype, pl.List):
        return _in_lists(expr, dtype, lambda e, d: _leaf_checks(e, d, key))[0]
    if isinstance(dtype, pl.Struct):
        names = {f.name for f in dtype.fields}
        coding = "code" in names or "system" in names
        out = []
        for field in dtype.fields:
            name = field.name
            if name in REMOVED_KEYS or name == "data":
                continue  # removed, whatever it holds (data: from attachments)
            if name == "display" and not coding:
                continue  # removed from references
            out += _leaf_checks(expr.struct.field(name), field.dtype, name, ctx)
        return out
    if dtype != pl.String or key in NOT_DATES:
        return []  # texts under these keys are never shifted
    like = expr.str.contains(_DATE_LIKE)
    if key not in DATE_KEYS:
        return [like]
    if ctx is not None:
        return [like & ~ctx.read(expr)]
    instant, formed = _instant(expr)
    return [like & ~(formed & instant.is_not_null())]


class _Ctx:
    """Expressions over one decoded piece (the subject's day offset in ``_offset``). Dates are
    read once each, into columns made by :meth:`date_stages` before the rows are selected."""

    def __init__(self, schema: pl.Schema, observed: dict[str, pl.DataType]):
        self.schema = schema
        self.observed = observed
        self.bad: list[pl.Expr] = []
        self._dates: dict[str, tuple[str, pl.Expr]] = {}

    def _date(self, value: pl.Expr) -> str:
        key = str(value)
        if key not in self._dates:
            self._dates[key] = (f"_d{len(self._dates)}", value)
        return self._dates[key][0]

    def read(self, value: pl.Expr) -> pl.Expr:
        """True where ``value`` is a date or date-time read here (a real day, a plain form)."""
        return pl.col(self._date(value) + "_ok")

    def date_stages(self) -> tuple[list[pl.Expr], list[pl.Expr]]:
        first, second = [], []
        for name, value in self._dates.values():
            instant, formed = _instant(value)
            first += [instant.alias(name + "_t"), formed.alias(name + "_f")]
            length = value.str.len_chars()
            ok = pl.col(name + "_f") & pl.col(name + "_t").is_not_null()
            second += [
                ok.alias(name + "_ok"),
                (value.is_not_null() & (value != "") & ~length.is_in([4, 7]) & ~ok)
                .fill_null(False)
                .alias(name + "_bad"),
            ]
        return first, second

    def field(self, path: str) -> pl.Expr:
        first, *rest = path.split(".")
        expr = pl.col(first)
        for name in rest:
            expr = expr.struct.field(name)
        return expr

    def when(self, value: pl.Expr) -> pl.Expr:
        """The per-record path's _when of the shifted text; a text it would refuse, or that is
        not read here, sends the row back."""
        name = self._date(value)
        self.bad.append(pl.col(name + "_bad"))
        return pl.when(pl.col(name + "_ok")).then(
            pl.col(name + "_t") + pl.duration(days=pl.col("_offset"))
        )

    def first_coding(self, concept: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
        coding = concept.struct.field("coding").list.first()
        system, code = coding.struct.field("system"), coding.struct.field("code")
        display = pl.when(system.is_not_null() | code.is_not_null()).then(
            coding.struct.field("display")
        )
        return system, code, display

    def coded(self, path: str = "code") -> dict[str, pl.Expr]:
        system, code, display = self.first_coding(self.field(path))
        return {"code_system": system, "code": code, "code_display": display}

    def choice_instant(self, prefix: str) -> pl.Expr:
        parts = []
        for name, dtype in self.observed.items():
            if not _is_variant(name, prefix):
                continue
            kind = name[len(prefix) :]
            if kind in ("DateTime", "Instant") and dtype == pl.String:
                parts.append(self.when(pl.col(name)))
            elif kind == "Period":
                parts.append(self.when(pl.col(name).struct.field("start")))
        return pl.coalesce(parts) if parts else pl.lit(None, TIMESTAMP)

    def value(self, node: pl.Expr | None, fields: dict[str, pl.DataType]) -> dict[str, pl.Expr]:
        """The per-record path's _value: the value[x] variant present (of those in ``fields``,
        the observed ones), in typed columns."""

        def get(name: str) -> pl.Expr | None:
            if name not in fields:
                return None
            return node.struct.field(name) if node is not None else pl.col(name)

        def coalesce(parts: list[pl.Expr | None], dtype: pl.DataType) -> pl.Expr:
            parts = [p for p in parts if p is not None]
            return pl.coalesce(parts) if parts else pl.lit(None, dtype)

        kinds = [n[len("value") :] for n in fields if _is_variant(n, "value")]
        out = {
            "value_type": coalesce(
                [pl.when(get("value" + k).is_not_null()).then(pl.lit(k)) for k in kinds],
                pl.String,
            )
        }
        quantity, concept = get("valueQuantity"), get("valueCodeableConcept")
        ranged, ratio, period = get("valueRange"), get("valueRatio"), get("valuePeriod")
        unit = []
        if quantity is not None:
            code = quantity.struct.field("code")
            out["value_quantity"] = quantity.struct.field("value")
            unit.append(
                pl.when(quantity.is_not_null()).then(
                    pl.when(code.is_not_null() & (code != ""))
                    .then(code)
                    .otherwise(quantity.struct.field("unit"))
                )
            )
        low = high = None
        if ranged is not None:
            low, high = ranged.struct.field("low"), ranged.struct.field("high")

            def filled(part: pl.Expr) -> pl.Expr:  # a non-empty object: truthy in Python
                return pl.any_horizontal(
                    [part.struct.field(f).is_not_null() for f in QUANTITY.names]
                )

            unit.append(
                pl.when(ranged.is_not_null()).then(
                    pl.when(filled(low))
                    .then(low.struct.field("code"))
                    .when(filled(high))
                    .then(high.struct.field("code"))
                )
            )
        out["value_unit"] = coalesce(unit, pl.String)
        if concept is not None:
            system, code, display = self.first_coding(concept)
            out.update(value_code_system=system, value_code=code, value_display=display)
        out["value_string"] = coalesce([get("valueString"), get("valueTime")], pl.String)
        out["value_boolean"] = coalesce([get("valueBoolean")], pl.Boolean)
        out["value_integer"] = coalesce([get("valueInteger")], pl.Int64)
        dated = get("valueDateTime")
        out["value_datetime"] = coalesce(
            [
                self.when(dated) if dated is not None else None,
                self.when(period.struct.field("start")) if period is not None else None,
            ],
            TIMESTAMP,
        )
        out["value_low"] = coalesce(
            [
                low.struct.field("value") if low is not None else None,
                ratio.struct.field("numerator").struct.field("value")
                if ratio is not None
                else None,
            ],
            pl.Float64,
        )
        out["value_high"] = coalesce(
            [
                high.struct.field("value") if high is not None else None,
                ratio.struct.field("denominator").struct.field("value")
                if ratio is not None
                else None,
            ],
            pl.Float64,
        )
        for column, dtype in VALUE_COLUMNS.items():
            out.setdefault(column, pl.lit(None, dtype))
        return out


def _rows(rtype: str, ctx: _Ctx, birth_rule: str) -> dict[str, pl.Expr]:
    """The typed table's columns, as flatten.py's row functions compute them."""
    base = {"id": pl.col("_rid"), "subject_pseudonym": pl.col("_subject")}
    encounter = {"encounter_id": pl.col("_encounter_id")}
    if rtype == "Patient":
        birth = pl.col("birthDate")
        if birth_rule == "none":
            general = pl.lit(None, pl.String)
        else:
            general = pl.when(birth.str.len_chars() >= 4).then(
                birth.str.slice(0, 4 if birth_rule == "year" else 7)
            )
        deceased_text = pl.col("deceasedDateTime")
        return {
            **base,
            "subject_kind": pl.col("_kind"),
            "gender": pl.col("gender"),
            "birth_date": general,
            "birth_year": general.str.slice(0, 4).str.to_integer(strict=False).cast(pl.Int32),
            "deceased": pl.col("deceasedBoolean").fill_null(False)
            | (deceased_text.is_not_null() & (deceased_text != "")),
            "deceased_at": ctx.when(deceased_text),
        }
    if rtype == "Encounter":
        system, code, _ = ctx.first_coding(pl.col("type").list.first())
        return {
            **base,
            "status": pl.col("status"),
            "class_code": pl.col("class").struct.field("code"),
            "type_system": system,
            "type_code": code,
            "period_start": ctx.when(ctx.field("period.start")),
            "period_end": ctx.when(ctx.field("period.end")),
            "service_provider_id": pl.col("_service_provider_id"),
        }
    if rtype == "Condition":
        return {
            **base,
            **ctx.coded(),
            **encounter,
            "clinical_status": ctx.first_coding(pl.col("clinicalStatus"))[1],
            "verification_status": ctx.first_coding(pl.col("verificationStatus"))[1],
            "onset_at": ctx.choice_instant("onset"),
            "recorded_at": ctx.when(pl.col("recordedDate")),
        }
    if rtype == "Observation":
        return {
            **base,
            **ctx.coded(),
            **encounter,
            "status": pl.col("status"),
            "effective_at": ctx.choice_instant("effective"),
            "issued_at": ctx.when(pl.col("issued")),
            **ctx.value(None, ctx.observed),
            "components": pl.col("component").list.len().fill_null(0).cast(pl.Int32),
        }
    if rtype == "MedicationRequest":
        return {
            **base,
            **ctx.coded("medicationCodeableConcept"),
            **encounter,
            "status": pl.col("status"),
            "intent": pl.col("intent"),
            "authored_at": ctx.when(pl.col("authoredOn")),
        }
    if rtype == "Procedure":
        return {
            **base,
            **ctx.coded(),
            **encounter,
            "status": pl.col("status"),
            "performed_at": ctx.choice_instant("performed"),
        }
    if rtype == "DiagnosticReport":
        return {
            **base,
            **ctx.coded(),
            **encounter,
            "status": pl.col("status"),
            "effective_at": ctx.choice_instant("effective"),
            "issued_at": ctx.when(pl.col("issued")),
            "results": pl.col("result").list.len().fill_null(0).cast(pl.Int32),
        }
    if rtype == "Immunization":
        return {
            **base,
            **ctx.coded("vaccineCode"),
            **encounter,
            "status": pl.col("status"),
            "occurred_at": ctx.choice_instant("occurrence"),
        }
    if rtype == "AllergyIntolerance":
        return {
            **base,
            **ctx.coded(),
            "clinical_status": ctx.first_coding(pl.col("clinicalStatus"))[1],
            "criticality": pl.col("criticality"),
            "onset_at": ctx.choice_instant("onset"),
            "recorded_at": ctx.when(pl.col("recordedDate")),
        }
    raise KeyError(rtype)


def _coding_paths(dtype: pl.DataType, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of every CodeableConcept (an object with a ``coding`` list) the walk would reach."""
    dtype = _innermost(dtype)
    if not isinstance(dtype, pl.Struct):
        return []
    out = []
    for field in dtype.fields:
        if field.name in REMOVED_KEYS:
            continue
        if field.name == "coding":
            out.append(path)
            continue
        out += _coding_paths(field.dtype, (*path, field.name))
    return out


def _explode_to(frame: pl.LazyFrame, schema: pl.Schema, steps: tuple[str, ...]) -> pl.LazyFrame:
    """Rows (``_row``, ``v``) of the values at ``steps``, lists exploded on the way."""
    out, dtype = frame.select(pl.col("_row"), pl.col(steps[0]).alias("v")), schema[steps[0]]
    for name in steps[1:]:
        while isinstance(dtype, pl.List):
            out, dtype = out.explode("v"), dtype.inner
        out = out.select(pl.col("_row"), pl.col("v").struct.field(name).alias("v"))
        dtype = {f.name: f.dtype for f in dtype.fields}[name]
    while isinstance(dtype, pl.List):
        out, dtype = out.explode("v"), dtype.inner
    return out


def _codings(frame: pl.DataFrame, paths: list[tuple[str, ...]]) -> pl.DataFrame:
    """(``_row``, path, system, code, display) of every Coding with a code or a system."""
    lazy, parts = frame.lazy(), []
    for path in paths:
        if frame[path[0]].null_count() == frame.height:
            continue
        coding = pl.col("v")
        system, code = coding.struct.field("system"), coding.struct.field("code")
        parts.append(
            _explode_to(lazy, frame.schema, (*path, "coding"))
            .filter((system.is_not_null() & (system != "")) | (code.is_not_null() & (code != "")))
            .select(
                pl.col("_row"),
                pl.lit(".".join(path)).alias("path"),
                system.alias("system"),
                code.alias("code"),
                coding.struct.field("display").alias("display"),
            )
        )
    if not parts:
        return pl.DataFrame(
            schema={
                "_row": pl.Int64,
                "path": pl.String,
                "system": pl.String,
                "code": pl.String,
                "display": pl.String,
            }
        )
    return pl.concat(parts, how="vertical").collect()


# -- the path ------------------------------------------------------------------------------------
class NdjsonFastPath:
    """Column-wise ingestion of NDJSON files for one batch run (see the module docstring)."""

    def __init__(self, run: _Run, learn_record: Callable[..., None]) -> None:
        """``learn_record``: the per-record path's way of registering a Patient, so that both
        paths learn the same subjects in the same order."""
        self.run = run
        self._learn_record = learn_record
        run.seen.expect_columns()
        self.context = run.context
        self.engine = run.engine
        self._subject_frame = pl.DataFrame(
            schema={
                "ref": pl.String,
                "_unknown": pl.Boolean,
                "_subject": pl.String,
                "_kind": pl.String,
                "_offset": pl.Int64,
            }
        )
        self._met: dict[str, pa.DataType] = {}  # per type, the part of the shape met so far
        self._ref_ids: dict[str, str | None] = {}

    # first pass ----------------------------------------------------------------------------------
    def learn_file(self, path: Path, name: str) -> None:
        """Register the file's Patients, as the per-record first pass does, in line order."""
        for chunk in _chunks(path):
            if chunk is None:
                return
            candidates = chunk.holding(b'"Patient"').tolist()  # the lines parsed one by one
            if not candidates:
                continue
            picked = chunk.subset(candidates)
            blank, fit = _screen(picked, numbers=True)
            registrations: list[tuple[int, str, Subject | None]] = []
            pieces, failed = _decode(picked, np.flatnonzero(fit), LEARN_SCHEMA, "ignore")
            failed += [int(i) for i in np.flatnonzero(~fit & ~blank)]
            for part, table in pieces:
                registrations += self._learn_piece(part, table)
            registrations += [(i, "", None) for i in failed]
            for i, remapped, subject in sorted(registrations, key=lambda r: r[0]):
                if subject is None:  # one by one, in its turn
                    self._learn_record(
                        self.context,
                        RawRecord(name, chunk.first + candidates[i], picked.line(i)),
                    )
                else:
                    self.context.subjects[remapped] = subject

    def _learn_piece(self, part: np.ndarray, table: pa.Table) -> list[tuple]:
        """(line index, remapped id, subject) of the Patients of one decoded piece, as
        register_patient makes them: the first identifier of a national system (in the
        provider's order) that is a valid NIR, else a provider-scoped pseudonym of the id.
        Subject None: a Patient to learn one by one (no id)."""
        context = self.context
        key = context.pseudonymiser.key
        patients = (
            pl.from_arrow(table)
            .with_columns(_i=pl.Series(part))
            .filter(pl.col("resourceType") == "Patient")
        )
        if not patients.height:
            return []
        systems = list(context.national_systems)
        found = (
            patients.select("_i", "identifier")
            .with_columns(_pos=pl.int_ranges(0, pl.col("identifier").list.len()))
            .explode("identifier", "_pos")
            .drop_nulls("identifier")
            .unnest("identifier")
            .filter(pl.col("system").is_in(systems) & (pl.col("value") != ""))
        )
        values = found["value"].unique().to_list()
        pseudonyms = dict(zip(values, subject_pseudonyms(key, values), strict=True))
        national = (
            found.with_columns(
                _pseudonym=pl.col("value").replace_strict(pseudonyms, return_dtype=pl.String),
                _rank=pl.col("system").replace_strict(
                    {s: r for r, s in reversed(list(enumerate(systems)))}, return_dtype=pl.Int64
                ),
            )
            .drop_nulls("_pseudonym")
            .sort("_i", "_rank", "_pos")
            .unique("_i", keep="first", maintain_order=True)
        )
        chosen = dict(zip(national["_i"].to_list(), national["_pseudonym"].to_list(), strict=True))
        out, local = [], []
        for i, resource_id in zip(patients["_i"].to_list(), patients["id"].to_list(), strict=True):
            if not resource_id:
                out.append((i, "", None))
            elif i in chosen:
                out.append((i, resource_id, Subject(chosen[i], "national")))
            else:
                out.append((i, resource_id, "provider"))
                local.append(f"Patient/{resource_id}")
        scoped = iter(provider_pseudonyms(key, context.provider, local)) if local else iter(())
        out = [
            (i, rid, Subject(next(scoped), "provider") if s == "provider" else s)
            for i, rid, s in out
        ]
        remapped = iter(context.remap_many([r[1] for r in out if r[2] is not None]))
        return [(i, next(remapped) if s is not None else "", s) for i, _, s in out]

    # second pass ---------------------------------------------------------------------------------
    def ingest_file(self, path: Path, name: str) -> None:
        """Chunk after chunk. With PREFETCH, the next chunk is read, screened and decoded in a
        thread (pyarrow works without the GIL) while this one is pseudonymised and flattened."""
        run = self.run
        key = run.key_of(name)
        number = run.locate(path, name)
        chunks = _chunks(path)
        if not PREFETCH:
            for chunk in chunks:
                if chunk is None:
                    run.process(RawRecord(name, 0, None, error="unreadable"), key)
                    break
                self._finish(name, key, number, *self._prepare(iter([chunk])))
            return
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(self._prepare, chunks)
            while True:
                chunk, prepared = pending.result()
                if chunk is _END:
                    break
                if chunk is None:
                    run.process(RawRecord(name, 0, None, error="unreadable"), key)
                    break
                pending = pool.submit(self._prepare, chunks)
                self._finish(name, key, number, chunk, prepared)

    def _back(self, name: str, key: str, chunk: _Chunk, lines) -> None:
        """Lines read one by one, in order (blank lines are no records)."""
        for i in lines:
            line = chunk.line(i)
            if line.strip():
                self.run.process(RawRecord(name, chunk.first + i, line), key)

    @staticmethod
    def _guarded(step, *args):
        """``step(*args)``, or None if it failed: what it was doing is then done one by one."""
        try:
            return step(*args)
        except Exception:
            return None

    def _prepare(self, chunks: Iterator[_Chunk | None]):
        """Read, screen and decode the next chunk: (chunk, (blank, back, pieces per type)), or
        (chunk, None) if that failed unexpectedly."""
        chunk = next(chunks, _END)
        if chunk is None or chunk is _END:
            return chunk, None
        return chunk, self._guarded(self._decoded, chunk)

    def _decoded(self, chunk: _Chunk):
        blank, fit = _screen(chunk)
        back = {int(i) for i in np.flatnonzero(~fit & ~blank)}
        decoded = []
        for rtype, indices in self._types(chunk, fit).items():
            if rtype not in SCHEMAS:
                back.update(int(i) for i in indices)
                continue
            pieces, failed = self._decode_type(rtype, chunk, indices)
            back.update(failed)
            decoded.append((rtype, pieces))
        return blank, back, decoded

    def _finish(self, name: str, key: str, number: int, chunk: _Chunk, prepared) -> None:
        """Pseudonymise and flatten a decoded chunk, then hand back the lines not vouched for.
        Nothing is committed before every row is computed: should that fail unexpectedly, the
        whole chunk is read one by one."""
        planned = self._guarded(self._plan, chunk, prepared) if prepared is not None else None
        if planned is None:
            self._back(name, key, chunk, range(len(chunk)))
            return
        blank, back, results = planned
        for rtype, part, result in results:
            self._commit(rtype, part, result, key, number, chunk.first)
        self.run.per_file[key]["records_in"] += int(np.count_nonzero(~blank)) - len(back)
        for i in sorted(back):
            self.run.process(RawRecord(name, chunk.first + i, chunk.line(i)), key)

    def _plan(self, chunk: _Chunk, prepared) -> tuple:
        """(blank lines, lines going back, rows per decoded piece) of one chunk."""
        blank, back, decoded = prepared
        back = set(back)
        results = []
        for rtype, pieces in decoded:
            for part, frame, observed, extra in pieces:
                results.append((rtype, part, self._piece(rtype, part, frame, observed, extra)))
        # an identity (type, id) met twice in the chunk, or on a line going back, sends all its
        # lines back: one by one, in line order, the first is ingested and the others compared
        for _, part, result in results:
            back.update(int(i) for i in part[~result["fast"]])
        if not any(result["fast"].any() for _, _, result in results):
            back.update(int(i) for _, part, _ in results for i in part)
            results = []  # nothing column-wise here: no identity to compare
        claimed = []
        if results:
            claimed = [c for c in (_claim(chunk.line(i)) for i in back) if c is not None]
        keys = [
            pl.DataFrame(
                {"t": [t for t, _ in claimed], "i": [i for _, i in claimed]},
                schema={"t": pl.String, "i": pl.String},
            ).with_columns(n=pl.lit(-1, pl.Int64), row=pl.lit(-1, pl.Int64))
        ]
        for n, (rtype, _, result) in enumerate(results):
            rows = np.flatnonzero(result["fast"])
            keys.append(
                pl.DataFrame(
                    {"i": result["raw_ids"].gather(rows), "row": rows.astype(np.int64)}
                ).select(pl.lit(rtype).alias("t"), "i", pl.lit(n, pl.Int64).alias("n"), "row")
            )
        keys = pl.concat(keys, how="vertical")
        twice = keys.filter(pl.struct("t", "i").is_duplicated() & (pl.col("n") >= 0))
        for (n,), rows in twice.group_by(["n"]):
            _, part, result = results[n]
            rows = rows["row"].to_numpy()
            result["fast"][rows] = False
            back.update(int(i) for i in part[rows])
        return blank, back, results

    def _decode_type(self, rtype: str, chunk: _Chunk, indices: np.ndarray):
        """Pieces (line indices, frame of the whole shape, observed part of the shape as polars
        types, rows holding a field outside the shape) of the lines of one resource type.

        pyarrow is told only the part of the shape met so far in the file (declared absent
        fields cost as much as present ones); a field of the shape met for the first time
        widens that part and the lines are decoded again."""
        shape = SCHEMAS[rtype]
        shape_type = pa.struct(list(shape))
        known = self._met.get(rtype)
        if known is None:  # a first look at a few lines, for the part of the shape they use
            known = pa.struct([("resourceType", S), ("id", S)])
            for _, table in _decode(chunk, indices[:256], pa.schema(list(known)))[0]:
                known = _union(known, _observed(pa.struct(list(table.schema)), shape_type))
            self._met[rtype] = known
        while True:
            pieces, failed = _decode(chunk, indices, pa.schema(list(known)))
            met = known
            for _, table in pieces:
                met = _union(met, _observed(pa.struct(list(table.schema)), shape_type))
            if met == known:
                break
            known = self._met[rtype] = met
        out = []
        expected = dict(_POLARS_SHAPES[rtype])
        observed = {
            name: _polars_dtype(known.field(name).type)
            for name in known.names
            if name in shape.names
        }
        for part, table in pieces:
            raw = pl.from_arrow(table)
            extras = []
            for column, dtype in raw.schema.items():
                extras += _not_finite(pl.col(column), dtype)  # NaN, Infinity: not JSON
                if column in REMOVED_KEYS or (rtype == "Patient" and column == "name"):
                    continue  # removed elements are never read: whatever they hold
                extras += _extras(pl.col(column), dtype, expected.get(column))
            extra = (
                raw.select(_any(extras)).to_series().to_numpy()
                if extras
                else np.zeros(raw.height, bool)
            )
            frame = pl.from_arrow(_conformed(table, known, shape)).rechunk()
            out.append((part, frame, observed, extra))
        return out, failed

    def _piece(
        self,
        rtype: str,
        part: np.ndarray,
        frame: pl.DataFrame,
        observed: dict[str, pl.DataType],
        extra: np.ndarray,
    ) -> dict:
        """Rows of one decoded piece, and which of them are certainly the per-record path's."""
        context, run = self.context, self.run
        height = frame.height
        frame = frame.with_columns(_row=pl.int_range(height, dtype=pl.Int64))
        known = observed
        bad: list[pl.Expr] = [
            (pl.col("resourceType") != rtype).fill_null(True),
            pl.col("id").is_null() | (pl.col("id") == ""),
        ]
        for prefix in CHOICES.get(rtype, ()):
            variants = [c for c in known if _is_variant(c, prefix)]
            if len(variants) > 1:
                bad.append(pl.sum_horizontal([pl.col(c).is_not_null() for c in variants]) > 1)
        if rtype == "Observation" and "component" in known:
            variants = [
                f.name for f in known["component"].inner.fields if _is_variant(f.name, "value")
            ]
            if len(variants) > 1:
                bad.append(
                    pl.col("component")
                    .list.eval(
                        pl.sum_horizontal(
                            [pl.element().struct.field(v).is_not_null() for v in variants]
                        )
                        > 1
                    )
                    .list.any()
                    .fill_null(False)
                )
        ctx = _Ctx(frame.schema, known)
        for column, dtype in known.items():
            if column in ("resourceType", "id", "birthDate") or column in REMOVED_KEYS:
                continue
            bad += _leaf_checks(pl.col(column), dtype, column, ctx)
        if rtype == "Patient":
            birth = pl.col("birthDate")
            bad.append(
                birth.is_not_null()
                & ~birth.str.contains(r"^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$").fill_null(False)
            )

        # keyed hashes, once per distinct value
        raw_ids = frame["id"].fill_null("")
        if rtype in _REFERENCED:  # remembered: other resources refer to them
            rids = pl.Series("_rid", context.remap_many(raw_ids.to_list()), pl.String)
        else:
            key = context.pseudonymiser.key
            rids = pl.Series("_rid", remap_ids(key, context.provider, raw_ids.to_list()))
        columns = {"_rid": rids}
        if rtype == "Patient":
            subjects = [context.subjects.get(r) for r in rids.to_list()]
            offsets = context.offsets_many(subjects)
            columns["_subject"] = pl.Series(
                [s.pseudonym if s else None for s in subjects], dtype=pl.String
            )
            columns["_kind"] = pl.Series([s.kind if s else None for s in subjects], dtype=pl.String)
            columns["_offset"] = pl.Series(offsets, dtype=pl.Int64)
            columns["_unknown"] = pl.Series([s is None for s in subjects], dtype=pl.Boolean)
        else:
            refs = frame[SUBJECT_FIELD.get(rtype, "subject")].struct.field("reference")
            columns.update(self._subjects_of(refs).to_dict())
        for name, path in (
            ("_encounter_id", "encounter"),
            ("_service_provider_id", "serviceProvider"),
        ):
            if path in known:
                columns[name] = self._ref_ids_of(frame[path].struct.field("reference"))
            else:
                columns[name] = pl.Series(name, [None] * height, pl.String)
        frame = frame.with_columns(**{k: v.alias(k) for k, v in columns.items()})
        keyed = frame.select(
            identity_expr(pl.lit(rtype), pl.col("_rid"), {rtype: type_salt(rtype)})
        )
        if keyed.to_series().null_count():  # remapped ids are keyed hashes: never happens
            raise ValueError("a remapped id is not 32 hex digits")
        identities = keyed.to_series().to_numpy().astype(np.int64)
        bad.append(pl.col("_unknown"))
        row_columns = _rows(rtype, ctx, context.birth_date)
        first_stage, second_stage = ctx.date_stages()
        if first_stage:
            frame = frame.with_columns(first_stage).with_columns(second_stage)
        bad += ctx.bad
        schema = ALL_TABLES[TABLES[rtype][0]]
        rows = frame.select(
            pl.col("_row"),
            _any(bad).alias("_bad"),
            *[row_columns[c].cast(t).alias(c) for c, t in schema.items()],
        )
        fast = ~rows["_bad"].to_numpy() & ~extra & ~run.seen.contains(identities)
        components = None
        if rtype == "Observation" and "component" in known:
            components = self._components(frame, known["component"])
            if components is not None:
                fast[components.filter(pl.col("_bad"))["_row"].unique().to_numpy()] = False
                components = components.drop("_bad")
        return {
            "fast": fast,
            "raw_ids": raw_ids,
            "rows": rows.drop("_bad"),
            "codings": _codings(frame, _coding_paths_of(known)),
            "components": components,
            "identities": identities,
            "earlier": run.seen.earlier(identities),
            "rids": rids,
        }

    def _components(self, frame: pl.DataFrame, dtype: pl.DataType) -> pl.DataFrame | None:
        parts = (
            frame.select(
                "_row",
                "_rid",
                "_offset",
                "component",
                _index=pl.int_ranges(0, pl.col("component").list.len(), dtype=pl.Int32),
            )
            .explode("component", "_index")
            .drop_nulls("component")
        )
        if not parts.height:
            return None
        fields = {f.name: f.dtype for f in dtype.inner.fields}
        ctx = _Ctx(parts.schema, fields)
        node = pl.col("component")
        if "code" in fields:
            system, code, display = ctx.first_coding(node.struct.field("code"))
        else:
            system = code = display = pl.lit(None, pl.String)
        columns = {
            "observation_id": pl.col("_rid"),
            "index": pl.col("_index"),
            "code_system": system,
            "code": code,
            "code_display": display,
            **ctx.value(node, fields),
        }
        first_stage, second_stage = ctx.date_stages()
        if first_stage:
            parts = parts.with_columns(first_stage).with_columns(second_stage)
        schema = ALL_TABLES["observation_components"]
        return parts.select(
            pl.col("_row"),
            _any(ctx.bad).alias("_bad"),
            *[columns[c].cast(t).alias(c) for c, t in schema.items()],
        )

    def _commit(
        self, rtype: str, part: np.ndarray, result: dict, key: str, number: int, first: int
    ):
        """Rows of resources new to the lake go to the tables; those of resources an earlier
        batch holds wait to be compared with its rows (:meth:`_Run.resolve_candidates`)."""
        run = self.run
        fast = result["fast"]
        if not fast.any():
            return
        plain, held = fast & ~result["earlier"], fast & result["earlier"]
        if plain.any():
            for table, frame in _frames(rtype, result, np.flatnonzero(plain)).items():
                run.tables.add_frame(table, frame)
            run.ingested(key, int(np.count_nonzero(plain)))
        if held.any():
            frames = _frames(rtype, result, np.flatnonzero(held))
            run.hold(key, result["identities"][held], frames=frames)
        lines = part[fast] + first
        run.seen.add_located(
            result["identities"][fast], (np.int64(number) << 32) | lines.astype(np.int64)
        )

    def _subjects_of(self, refs: pl.Series) -> pl.DataFrame:
        """The per-record path's subject_of for each reference of ``refs``, in its order:
        columns _unknown, _subject, _kind, _offset. A reference to no Patient gives no subject;
        a Patient not known (learnt later in the file, if ever) sends the row back. Answers are
        kept (a frame, up to 200 000 references), but for unknown Patients."""
        context, known = self.context, self._subject_frame
        distinct = refs.drop_nulls().unique()
        if known.height:
            distinct = distinct.filter(~distinct.is_in(known["ref"]))
        answers, targets = [], {}
        for reference in distinct.to_list():
            target = parse_reference(reference, context.full_urls)
            if target is None or target[0] not in ("Patient", None):
                answers.append((reference, False, None, None, 0))
            else:
                targets[reference] = target[1]
        unknown = []
        if targets:
            subjects = [context.subjects.get(r) for r in context.remap_many(list(targets.values()))]
            offsets = context.offsets_many(subjects)
            for reference, subject, offset in zip(targets, subjects, offsets, strict=True):
                if subject is None:
                    unknown.append(reference)
                else:
                    answers.append((reference, False, subject.pseudonym, subject.kind, offset))
        schema = {
            "ref": pl.String,
            "_unknown": pl.Boolean,
            "_subject": pl.String,
            "_kind": pl.String,
            "_offset": pl.Int64,
        }
        new = pl.DataFrame(answers, schema=schema, orient="row")
        if known.height + new.height > 200_000:
            known = known.clear()
        known = self._subject_frame = pl.concat([known, new], how="vertical")
        table = pl.concat(
            [
                known,
                pl.DataFrame(
                    [(r, True, None, None, 0) for r in unknown], schema=schema, orient="row"
                ),
            ],
            how="vertical",
        )
        at = refs.replace_strict(table["ref"], pl.Series(np.arange(table.height)), default=None)
        return table.drop("ref")[at].with_columns(
            pl.col("_unknown").fill_null(False), pl.col("_offset").fill_null(0)
        )

    def _ref_ids_of(self, refs: pl.Series) -> pl.Series:
        """flatten._ref_id of each rewritten reference: the remapped id of the reference's
        target, None for a reference the per-record path rewrites to ``unresolved``."""
        context = self.context
        plain = refs.str.extract(r"^[A-Za-z]+/([A-Za-z0-9\-.]{1,64})$", 1)
        others = refs.filter(plain.is_null() & refs.is_not_null()).unique().to_list()
        targets = {}
        for reference in others:
            if reference.startswith("#"):  # contained: a provider's local id, never output
                continue
            target = parse_reference(reference, context.full_urls)
            targets[reference] = target[1] if target is not None else None  # or "unresolved"
        ids = plain
        if targets:
            ids = plain.fill_null(
                refs.replace_strict(targets, default=None, return_dtype=pl.String)
            )
        distinct = ids.drop_nulls().unique()
        remapped = pl.Series(context.remap_many(distinct.to_list()), dtype=pl.String)
        return ids.replace_strict(distinct, remapped, default=None, return_dtype=pl.String)

    def _types(self, chunk: _Chunk, fit: np.ndarray) -> dict[str, np.ndarray]:
        """Fit lines by resource type, read from the line's start (``{"resourceType":"X"``);
        lines that do not start so are decoded with the chunk's main type and checked after."""
        indices = np.flatnonzero(fit)
        if not len(indices):
            return {}
        match = _TYPE_PREFIX.match(chunk.line(indices[0]))
        found: dict[str, list[int]] = {}
        unknown = []
        rest = indices
        if match is not None:
            prefix = np.frombuffer(match.group(0), np.uint8)
            starts = chunk.starts[indices]
            long_enough = chunk.ends[indices] - starts > len(prefix)
            at = np.minimum(starts[:, None] + np.arange(len(prefix)), len(chunk.buffer) - 1)
            same = long_enough & (np.frombuffer(chunk.buffer, np.uint8)[at] == prefix).all(1)
            found[match.group(1).decode()] = indices[same].tolist()
            rest = indices[~same]
        for i in rest:
            match = _TYPE_PREFIX.match(chunk.line(i))
            if match is None:
                unknown.append(int(i))
            else:
                found.setdefault(match.group(1).decode(), []).append(int(i))
        if unknown:
            main = max(found, key=lambda t: len(found[t])) if found else "Observation"
            found.setdefault(main, []).extend(unknown)
        return {t: np.array(sorted(v), np.int64) for t, v in found.items()}


def _frames(rtype: str, result: dict, rows: np.ndarray) -> dict[str, pl.DataFrame]:
    """The rows these resources of a piece feed, per table (with their ``_row``)."""
    keep = pl.Series("_row", rows, pl.Int64)
    frames = {TABLES[rtype][0]: result["rows"].filter(pl.col("_row").is_in(keep))}
    if result["components"] is not None:
        frames["observation_components"] = result["components"].filter(pl.col("_row").is_in(keep))
    codings = result["codings"].filter(pl.col("_row").is_in(keep))
    if codings.height:
        frames["codings"] = codings.with_columns(
            resource_type=pl.lit(rtype), resource_id=result["rids"].gather(codings["_row"])
        )
    return frames


def _claim(line: bytes) -> tuple[str, str] | None:
    """(type, id) a line read one by one would be known by, if it has a usable id."""
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(resource, dict):
        return None
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if isinstance(rtype, str) and rtype and isinstance(rid, str) and rid:
        return rtype, rid
    return None


def _polars_dtype(dtype: pa.DataType) -> pl.DataType:
    if pa.types.is_struct(dtype):
        return pl.Struct(
            [
                pl.Field(f.name, _polars_dtype(f.type))
                for f in (dtype.field(i) for i in range(dtype.num_fields))
            ]
        )
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return pl.List(_polars_dtype(dtype.value_type))
    return {S: pl.String, F: pl.Float64, B: pl.Boolean, I64: pl.Int64}[dtype]


class _PolarsShapes(dict):
    """Polars types of the shapes, made on first use."""

    def __missing__(self, rtype: str) -> dict[str, pl.DataType]:
        self[rtype] = {name: _polars_dtype(t) for name, t in SHAPES[rtype].items()}
        return self[rtype]


_POLARS_SHAPES = _PolarsShapes()


def _coding_paths_of(columns: dict[str, pl.DataType]) -> list[tuple[str, ...]]:
    return [
        path
        for name, dtype in columns.items()
        if name not in REMOVED_KEYS
        for path in _coding_paths(dtype, (name,))
    ]
