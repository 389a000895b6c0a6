"""JSON records that are not FHIR, for which a provider declared a schema.

A provider's ``records`` entry says which files of a batch hold such records, the schema they
follow (a JSON Schema, or a pandera polars schema whose columns are the records' top-level
fields), where the person's identifier is, which fields are dates (shifted by the subject's
offset) and which are removed. Each valid record becomes a row of ``declared_records`` with its
pseudonymised JSON; an invalid one is quarantined with file, line and the failing rule (never the
value). Records are validated a chunk at a time, so a pandera schema checks thousands of records
in one call.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jsonschema
import pandera.polars as pa
import polars as pl

from hdh_assets.pseudonymisation.fhir import InvalidRecord
from hdh_assets.pseudonymisation.identifiers import InvalidNationalIdentifier
from hdh_assets.pseudonymisation.subjects import Pseudonymiser

DECLARED_FIELDS = {
    "name",
    "files",
    "schema",
    "pandera",
    "subject_field",
    "subject_is_national",
    "date_fields",
    "remove_fields",
}


class RecordRules(Protocol):
    def violations(self, records: list[dict]) -> list[list[str]]:
        """Per record, its failing rules as 'field: rule', never the offending values."""
        ...


class JsonSchemaRules:
    """A JSON Schema (draft 2020-12), record by record."""

    def __init__(self, schema: dict) -> None:
        jsonschema.Draft202012Validator.check_schema(schema)
        self.validator = jsonschema.Draft202012Validator(schema)
        self.names = _property_names(schema)

    def violations(self, records: list[dict]) -> list[list[str]]:
        return [self._one(record) for record in records]

    def _one(self, record: dict) -> list[str]:
        found = []
        for error in sorted(
            self.validator.iter_errors(record), key=lambda e: [str(p) for p in e.absolute_path]
        ):
            # a key the schema does not name is the record's own text: shown as '*'
            parts = [
                str(p) if isinstance(p, int) or p in self.names else "*"
                for p in error.absolute_path
            ]
            found.append(f"{'/'.join(parts) or '(record)'}: {error.validator}")
        return found


def _property_names(schema: object) -> set[str]:
    names: set[str] = set()
    if isinstance(schema, dict):
        if isinstance(schema.get("properties"), dict):
            names.update(schema["properties"])
        for value in schema.values():
            names |= _property_names(value)
    elif isinstance(schema, list):
        for value in schema:
            names |= _property_names(value)
    return names


class PanderaRules:
    """A pandera polars schema: each record is a row whose columns are its top-level fields.
    A value of the wrong JSON type fails as 'field: type' (it would otherwise become a null);
    a date-time without a zone is taken as UTC."""

    def __init__(self, schema: pa.DataFrameSchema) -> None:
        for name, column in schema.columns.items():
            dtype = column.dtype.type if column.dtype is not None else None
            if dtype is None or not _from_json(dtype):
                raise TypeError(
                    f"column '{name}' has dtype {dtype}, which JSON values cannot be read as"
                )
        self.schema = schema

    def violations(self, records: list[dict]) -> list[list[str]]:
        problems: list[set[str]] = [set() for _ in records]
        columns = {}
        for name, column in self.schema.columns.items():
            values = [record.get(name) for record in records]
            columns[name], wrong = _typed(name, values, column.dtype.type)
            for at in wrong:
                problems[at].add(f"{name}: type")
            if column.required:
                for at, record in enumerate(records):
                    if name not in record:
                        problems[at].add(f"{name}: required")
        if self.schema.strict is True:
            for at, record in enumerate(records):
                extra = len(set(record) - set(columns))  # their names are the record's text
                if extra:
                    problems[at].add(f"{extra} field(s): not in schema")
        try:
            self.schema.validate(pl.DataFrame(columns, height=len(records)), lazy=True)
        except pa.errors.SchemaErrors as errors:
            failures = errors.failure_cases.select("column", "check", "index").unique()
            for column, check, at in failures.iter_rows():
                rule = f"{column or '(record)'}: {check}"
                for target in [at] if at is not None else range(len(records)):
                    problems[target].add(rule)
        return [sorted(p) for p in problems]


_BAD = object()  # a JSON value that does not fit the dtype


def _from_json(dtype: pl.DataType) -> bool:
    """Whether JSON values can be read as this dtype (see :func:`_converted`)."""
    if isinstance(dtype, pl.List | pl.Array):
        return _from_json(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return all(_from_json(f.dtype) for f in dtype.fields)
    return (
        (dtype.is_numeric() and not dtype.is_decimal())
        or dtype in (pl.String, pl.Boolean, pl.Date, pl.Categorical, pl.Null)
        or isinstance(dtype, pl.Datetime | pl.Categorical | pl.Enum)
    )


def _converted(value: object, dtype: pl.DataType) -> object:
    """The JSON value as a Python value of the dtype, or ``_BAD``."""
    if value is None:
        return None
    if isinstance(dtype, pl.List | pl.Array):
        if not isinstance(value, list):
            return _BAD
        items = [_converted(v, dtype.inner) for v in value]
        return _BAD if any(i is _BAD for i in items) else items
    if isinstance(dtype, pl.Struct):
        fields = {f.name: f.dtype for f in dtype.fields}
        if not isinstance(value, dict) or set(value) - set(fields):
            return _BAD
        out = {name: _converted(value.get(name), inner) for name, inner in fields.items()}
        return _BAD if any(v is _BAD for v in out.values()) else out
    if isinstance(value, bool):
        return value if dtype == pl.Boolean else _BAD
    if dtype.is_integer():
        return value if isinstance(value, int) else _BAD
    if dtype.is_float():
        return float(value) if isinstance(value, int | float) else _BAD
    if not isinstance(value, str) or dtype == pl.Boolean:
        return _BAD
    if dtype == pl.Date:
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return _BAD
    if isinstance(dtype, pl.Datetime):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return _BAD
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        moment = moment.astimezone(dt.UTC)
        return moment if dtype.time_zone else moment.replace(tzinfo=None)
    return value  # String, Categorical, Enum (pandera checks an Enum's categories)


def _typed(name: str, values: list, dtype: pl.DataType) -> tuple[pl.Series, list[int]]:
    """The column of this dtype, and the rows whose value does not fit it."""
    converted = [_converted(v, dtype) for v in values]
    wrong = [at for at, v in enumerate(converted) if v is _BAD]
    kept = [None if v is _BAD else v for v in converted]
    if isinstance(dtype, pl.Enum):  # a value outside the categories is a failed check, not a crash
        series = pl.Series(name, kept, dtype=pl.String).cast(dtype, strict=False)
    elif isinstance(dtype, pl.Datetime) and dtype.time_zone:
        series = pl.Series(name, kept, dtype=pl.Datetime(dtype.time_unit, "UTC"), strict=False)
        series = series.dt.convert_time_zone(dtype.time_zone)
    else:
        series = pl.Series(name, kept, dtype=dtype, strict=False)
    nulls = series.is_null().to_list()  # e.g. an integer beyond the dtype's range
    wrong += [at for at, v in enumerate(kept) if v is not None and nulls[at]]
    return series, sorted(set(wrong))


@dataclass(frozen=True)
class DeclaredRecords:
    name: str
    files: str  # a glob matched against the file's path inside the batch
    rules: RecordRules
    subject_field: str
    subject_is_national: bool = True
    date_fields: tuple[str, ...] = ()
    remove_fields: tuple[str, ...] = ()

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatch(name, self.files) or fnmatch.fnmatch(Path(name).name, self.files)

    def violations(self, records: list[dict]) -> list[list[str]]:
        return self.rules.violations(records)


def load_declared(entry: dict, base: Path, provider: str) -> DeclaredRecords:
    unknown = set(entry) - DECLARED_FIELDS
    if unknown:
        raise ValueError(f"provider '{provider}': records: unknown field(s) {sorted(unknown)}")
    for required in ("name", "files", "subject_field"):
        if required not in entry:
            raise ValueError(f"provider '{provider}': records: '{required}' is required")
    where = f"provider '{provider}': records '{entry['name']}'"
    if ("schema" in entry) == ("pandera" in entry):
        raise ValueError(f"{where}: give exactly one of 'schema' (JSON Schema) or 'pandera'")
    rules = (
        _json_schema_rules(base / entry["schema"], where)
        if "schema" in entry
        else _pandera_rules(str(entry["pandera"]), base, where)
    )
    return DeclaredRecords(
        entry["name"],
        entry["files"],
        rules,
        entry["subject_field"],
        bool(entry.get("subject_is_national", True)),
        tuple(entry.get("date_fields") or ()),
        tuple(entry.get("remove_fields") or ()),
    )


def _json_schema_rules(path: Path, where: str) -> JsonSchemaRules:
    path = path.resolve()
    if not path.exists():
        raise ValueError(f"{where}: schema {path} not found")
    try:
        return JsonSchemaRules(json.loads(path.read_text()))
    except (json.JSONDecodeError, jsonschema.SchemaError) as error:
        raise ValueError(
            f"{where}: {path} is not a valid JSON Schema ({error.__class__.__name__})"
        ) from None


def _pandera_rules(reference: str, base: Path, where: str) -> PanderaRules:
    """``file.py:Name`` (relative to the provider file) or ``package.module:Name``: a pandera
    polars ``DataFrameModel`` or ``DataFrameSchema``. The provider file is the platform's own
    configuration, so loading its Python is as trusted as loading the platform."""
    location, _, attribute = reference.rpartition(":")
    if not location or not attribute:
        raise ValueError(f"{where}: pandera must be 'file.py:Name' or 'module:Name'")
    try:
        if location.endswith(".py"):
            path = (base / location).resolve()
            if not path.exists():
                raise ValueError(f"{where}: pandera schema file {path} not found")
            spec = importlib.util.spec_from_file_location(f"hdh_declared_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(location)
        found = getattr(module, attribute)
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(
            f"{where}: pandera schema {reference} cannot be loaded ({error.__class__.__name__})"
        ) from None
    if isinstance(found, type) and issubclass(found, pa.DataFrameModel):
        found = found.to_schema()
    if not isinstance(found, pa.DataFrameSchema):
        raise ValueError(
            f"{where}: {reference} is not a pandera polars DataFrameModel or DataFrameSchema"
        )
    try:
        return PanderaRules(found)
    except TypeError as error:
        raise ValueError(f"{where}: {reference}: {error}") from None


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
    record: object,
    spec: DeclaredRecords,
    pseudonymiser: Pseudonymiser,
    provider: str,
    problems: list[str] | None = None,
) -> tuple[dict, str]:
    """Validate (unless ``problems`` were found for a whole chunk already), replace the
    identifier by the pseudonym, shift dates, drop removed fields."""
    if not isinstance(record, dict):
        raise InvalidRecord("not_a_record", "the record is not a JSON object")
    if problems is None:
        problems = spec.violations([record])[0]
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
