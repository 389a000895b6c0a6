"""JSON records that are not FHIR, for which a provider declared a JSON Schema.

A provider's ``records`` entry says which files of a batch hold such records, the schema they
follow, where the person's identifier is, which fields are dates (shifted by the subject's offset)
and which are removed. Each valid record becomes a row of ``declared_records`` with its
pseudonymised JSON; an invalid one is quarantined with file, line and the failing rule (never the
value).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema

from hdh_assets.pseudonymisation.fhir import InvalidRecord
from hdh_assets.pseudonymisation.identifiers import InvalidNationalIdentifier
from hdh_assets.pseudonymisation.subjects import Pseudonymiser

DECLARED_FIELDS = {
    "name",
    "files",
    "schema",
    "subject_field",
    "subject_is_national",
    "date_fields",
    "remove_fields",
}


@dataclass(frozen=True)
class DeclaredRecords:
    name: str
    files: str  # a glob matched against the file's path inside the batch
    schema: dict
    subject_field: str
    subject_is_national: bool = True
    date_fields: tuple[str, ...] = ()
    remove_fields: tuple[str, ...] = ()
    _validator: object = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        jsonschema.Draft202012Validator.check_schema(self.schema)
        object.__setattr__(self, "_validator", jsonschema.Draft202012Validator(self.schema))

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatch(name, self.files) or fnmatch.fnmatch(Path(name).name, self.files)

    def violations(self, record: object) -> list[str]:
        """Failing rules as 'path: validator', without the offending values."""
        found = []
        for error in sorted(
            self._validator.iter_errors(record), key=lambda e: list(e.absolute_path)
        ):
            where = "/".join(str(p) for p in error.absolute_path) or "(record)"
            found.append(f"{where}: {error.validator}")
        return found


def load_declared(entry: dict, base: Path, provider: str) -> DeclaredRecords:
    unknown = set(entry) - DECLARED_FIELDS
    if unknown:
        raise ValueError(f"provider '{provider}': records: unknown field(s) {sorted(unknown)}")
    for required in ("name", "files", "schema", "subject_field"):
        if required not in entry:
            raise ValueError(f"provider '{provider}': records: '{required}' is required")
    schema_path = (base / entry["schema"]).resolve()
    if not schema_path.exists():
        raise ValueError(
            f"provider '{provider}': records '{entry['name']}': schema {schema_path} not found"
        )
    try:
        schema = json.loads(schema_path.read_text())
        return DeclaredRecords(
            entry["name"],
            entry["files"],
            schema,
            entry["subject_field"],
            bool(entry.get("subject_is_national", True)),
            tuple(entry.get("date_fields") or ()),
            tuple(entry.get("remove_fields") or ()),
        )
    except (json.JSONDecodeError, jsonschema.SchemaError) as error:
        raise ValueError(
            f"provider '{provider}': records '{entry['name']}': {schema_path} is not a valid JSON Schema "
            f"({error.__class__.__name__})"
        ) from None


def _pop(record: dict, dotted: str):
    *parents, last = dotted.split(".")
    node = record
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return node.pop(last, None) if isinstance(node, dict) else None


def _shift(record: dict, dotted: str, offset: int) -> None:
    *parents, last = dotted.split(".")
    node = record
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or not isinstance(node.get(last), str):
        return
    text = node[last]
    try:
        day = dt.date.fromisoformat(text[:10])
    except ValueError:
        raise InvalidRecord("invalid_date", f"{dotted} is not a date") from None
    node[last] = (day + dt.timedelta(days=offset)).isoformat() + text[10:]


def pseudonymise_declared(
    record: object, spec: DeclaredRecords, pseudonymiser: Pseudonymiser, provider: str
) -> tuple[dict, str]:
    """Validate, replace the identifier by the pseudonym, shift dates, drop removed fields."""
    if not isinstance(record, dict):
        raise InvalidRecord("not_a_record", "the record is not a JSON object")
    problems = spec.violations(record)
    if problems:
        raise InvalidRecord("schema_violation", "; ".join(problems[:5]))
    record = json.loads(json.dumps(record))  # a private copy
    identifier = _pop(record, spec.subject_field)
    if identifier in (None, ""):
        raise InvalidRecord("missing_subject", f"{spec.subject_field} is empty")
    try:
        pseudonym = (
            pseudonymiser.subject_pseudonym(str(identifier))
            if spec.subject_is_national
            else pseudonymiser.provider_scoped_pseudonym(provider, str(identifier))
        )
    except InvalidNationalIdentifier:
        raise InvalidRecord(
            "invalid_identifier", f"{spec.subject_field} is not a valid NIR"
        ) from None
    offset = pseudonymiser.date_offset_days(pseudonym)
    for dotted in spec.date_fields:
        _shift(record, dotted, offset)
    for dotted in spec.remove_fields:
        _pop(record, dotted)
    return record, pseudonym
