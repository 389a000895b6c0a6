"""FHIR Bulk Data NDJSON read column-wise: the rows of the per-record path, at column speed.

Used by :func:`hdh_assets.clinical.ingest.ingest_json_batch` for every ``*.ndjson``/``*.jsonl``
file (plain or gzip) that no provider declares. A file is read in chunks of about CHUNK_BYTES.
Each chunk is screened with byte operations, decoded by pyarrow's JSON reader against an explicit
shape per resource type (the allowlisted fields: SHAPES), then pseudonymised and flattened with
polars expressions into the same typed tables. Keyed hashes are computed once per distinct value
(subjects, referenced ids, date offsets) and, for resource ids, once per row with the key's pads
hashed once (:mod:`hdh_assets.pseudonymisation.bulk`). Memory is bounded by the chunk, plus 16
bytes per resource for duplicate detection (:class:`hdh_assets.clinical.ingest.Seen`).

The result is exactly the per-record path's (:meth:`hdh_assets.clinical.ingest.BatchRun.process`),
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
  subject named by an identifier no Patient known carries, beside a reference or with a
  ``type`` (resolved ones are read here, once per distinct identifier), a conditional
  ``Patient?`` reference, a missing id, an identity (type, id) already ingested or met twice in
  the chunk (equal or conflicting versions are told apart by content digests, one by one; a
  record equal in identity to a row made here is compared at the end of the batch, the row's
  line read again).

Resource types read here: Patient, Encounter, Condition, Observation (every value[x] variant of
flatten.py, components), MedicationRequest, Procedure, DiagnosticReport, Immunization,
AllergyIntolerance. Other types, Bundles and JSON documents, declared records and lines sent back
go one by one. Patients are learnt alike in the first pass (the first valid national identifier
in the provider's order, else a provider-scoped pseudonym of the id), with the identifiers they
carry for references by identifier; a Patient line that cannot be read here is learnt one by
one, in its turn. Anything unexpected while computing a chunk's rows sends the whole chunk one
by one: nothing is committed before every row is computed.

Each file's lines are counted by the way they went (:class:`LineCounts`: ``lines_columnwise`` and
``lines_per_record`` of :attr:`hdh_assets.clinical.ingest.JsonBatchResult.path_counts`), so that a
test comparing both paths can tell that the lines it compares were indeed read column-wise.

Modules: :mod:`.chunking` (reading, byte screening),
:mod:`.shapes` (the allowlisted shapes), :mod:`.decoding` (pyarrow, pieces that do not decode),
:mod:`.expressions` (polars checks and columns), :mod:`.rows` (keyed hashes, subjects, the rows
of a piece), :mod:`.driver` (both passes over a file). The batch run is known only through
:class:`PerRecordPath` (:mod:`.interface`): this package never imports the per-record path.
"""

from hdh_assets.clinical.vectorised.driver import LineCounts, NdjsonFastPath
from hdh_assets.clinical.vectorised.interface import LearnRecord, PerRecordPath, SeenIdentities

__all__ = ["LearnRecord", "LineCounts", "NdjsonFastPath", "PerRecordPath", "SeenIdentities"]
