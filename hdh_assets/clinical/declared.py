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

    def violations(self, records: list[dict]) -> list[list[str]]:
        return [self._one(record) for record in records]

    def _one(self, record: dict) -> list[str]:
        found = []
        for error in sorted(
            self.validator.iter_errors(record), key=lambda e: list(e.absolute_path)
        ):
            where = "/".join(str(p) for p in error.absolute_path) or "(record)"
            found.append(f"{where}: {error.validator}")
        return found


_PYTHON_OF = {pl.String: (str,), pl.Boolean: (bool,)}


class PanderaRules:
    """A pandera polars schema: each record is a row whose columns are its top-level fields.
    A value of the wrong JSON type fails as 'field: type' (it would otherwise become a null)."""

    def __init__(self, schema: pa.DataFrameSchema) -> None:
        self.schema = schema

    def violations(self, records: list[dict]) -> list[list[str]]:
        problems: list[set[str]] = [set() for _ in records]
        columns = {}
        for name, column in self.schema.columns.items():
            values = [record.get(name) for record in records]
            columns[name], wrong = _typed(values, column.dtype.type)
            for at in wrong:
                problems[at].add(f"{name}: type")
            if column.required:
                for at, record in enumerate(records):
                    if name not in record:
                        problems[at].add(f"{name}: required")
        if self.schema.strict is True:
            for at, record in enumerate(records):
                problems[at].update(f"{k}: not in schema" for k in set(record) - set(columns))
        try:
            self.schema.validate(pl.DataFrame(columns, height=len(records)), lazy=True)
        except pa.errors.SchemaErrors as errors:
            failures = errors.failure_cases.select("column", "check", "index").unique()
            for column, check, at in failures.iter_rows():
                rule = f"{column or '(record)'}: {check}"
                for target in [at] if at is not None else range(len(records)):
                    problems[target].add(rule)
        return [sorted(p) for p in problems]


def _typed(values: list, dtype: pl.DataType) -> tuple[pl.Series, list[int]]:
    """The column of this dtype, and the rows whose value does not fit it."""
    present = [at for at, v in enumerate(values) if v is not None]
    if dtype in (pl.Date, pl.Datetime) or isinstance(dtype, pl.Datetime):
        texts = [v if isinstance(v, str) else None for v in values]
        strings = pl.Series(texts, dtype=pl.String)
        if dtype == pl.Date:
            series = strings.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
        else:
            series = strings.str.to_datetime(
                strict=False, time_zone=getattr(dtype, "time_zone", None)
            )
            series = series.cast(dtype, strict=False)
    elif dtype.is_numeric():
        whole = dtype.is_integer()
        ok = (int,) if whole else (int, float)
        fits = [isinstance(v, ok) and not isinstance(v, bool) for v in values]
        kept = [
            (v if whole else float(v)) if f else None for v, f in zip(values, fits, strict=True)
        ]
        wide = pl.Int64 if whole else pl.Float64
        series = pl.Series(kept, dtype=wide, strict=False).cast(dtype, strict=False)
    elif dtype in _PYTHON_OF:
        fits = [isinstance(v, _PYTHON_OF[dtype]) for v in values]
        series = pl.Series(
            [v if f else None for v, f in zip(values, fits, strict=True)], dtype=dtype
        )
    else:
        try:
            series = pl.Series(values, dtype=dtype, strict=False)
        except (TypeError, ValueError, pl.exceptions.PolarsError):
            series = pl.Series([None] * len(values), dtype=dtype)
    nulls = series.is_null().to_list()
    return series, [at for at in present if nulls[at]]


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
    return PanderaRules(found)


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
