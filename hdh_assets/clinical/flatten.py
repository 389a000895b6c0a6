"""Pseudonymised FHIR resources as rows of typed tables, one table per resource type.

Every resource lands somewhere: the types below have their own table, every other type goes to
``other_resources`` with its pseudonymised JSON. Codings of every resource are exploded into
``codings``. A value of the wrong JSON type raises :class:`InvalidRecord` (``wrong_type``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import orjson
import polars as pl

from hdh_assets.pseudonymisation.fhir import InvalidRecord

TIMESTAMP = pl.Datetime("us", "UTC")


def _get(resource: dict, path: str, kind: type | tuple[type, ...], rtype: str):
    node = resource
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
        if node is None:
            return None
    if isinstance(kind, tuple) and float in kind and isinstance(node, bool):
        raise InvalidRecord("wrong_type", f"{rtype}.{path} has the wrong JSON type")
    if not isinstance(node, kind):
        raise InvalidRecord("wrong_type", f"{rtype}.{path} has the wrong JSON type")
    return node


def _str(resource: dict, path: str) -> str | None:
    return _get(resource, path, str, resource["resourceType"])


def _num(node: dict, path: str, rtype: str) -> float | None:
    value = _get(node, path, (int, float), rtype)
    return float(value) if value is not None else None


def _when(value: str | None) -> dt.datetime | None:
    """FHIR date, dateTime or instant as a UTC timestamp (a date alone is midnight UTC)."""
    if not value:
        return None
    if not isinstance(value, str):
        raise InvalidRecord("wrong_type", "a date is not a string")
    try:
        if len(value) == 10:
            return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
        if len(value) in (4, 7):
            return None  # partial dates have no instant
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    except ValueError:
        raise InvalidRecord("invalid_date", "a date or time that cannot be read") from None


def _ref_id(resource: dict, name: str) -> str | None:
    reference = _get(resource, f"{name}.reference", str, resource["resourceType"])
    if reference and reference.startswith("#"):
        return None  # contained: a local id the provider wrote, not one of ours
    if reference and reference.startswith("urn:uuid:"):
        return reference.removeprefix("urn:uuid:")
    return reference.split("/", 1)[1] if reference and "/" in reference else None


def _first_coding(resource: dict, path: str) -> tuple[str | None, str | None, str | None]:
    concept = _get(resource, path, dict, resource["resourceType"])
    codings = (concept or {}).get("coding") or []
    if not isinstance(codings, list):
        raise InvalidRecord("wrong_type", f"{resource['resourceType']}.{path}.coding is not a list")
    for coding in codings:
        if isinstance(coding, dict):
            return coding.get("system"), coding.get("code"), coding.get("display")
    return None, None, None


def _period(resource: dict, name: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    period = _get(resource, name, dict, resource["resourceType"]) or {}
    return _when(period.get("start")), _when(period.get("end"))


def _choice(resource: dict, prefix: str) -> tuple[str | None, object]:
    """The value[x] (or effective[x], onset[x], ...) variant present, and its value."""
    for key, value in resource.items():
        if key.startswith(prefix) and key != prefix and key[len(prefix)].isupper():
            return key[len(prefix) :], value
    return None, None


def _instant_of_choice(resource: dict, prefix: str) -> dt.datetime | None:
    kind, value = _choice(resource, prefix)
    if kind in ("DateTime", "Instant") and isinstance(value, str):
        return _when(value)
    if kind == "Period" and isinstance(value, dict):
        return _when(value.get("start"))
    return None


VALUE_COLUMNS = {
    "value_type": pl.String,
    "value_quantity": pl.Float64,
    "value_unit": pl.String,
    "value_code_system": pl.String,
    "value_code": pl.String,
    "value_display": pl.String,
    "value_string": pl.String,
    "value_boolean": pl.Boolean,
    "value_integer": pl.Int64,
    "value_datetime": TIMESTAMP,
    "value_low": pl.Float64,
    "value_high": pl.Float64,
}


def _value(node: dict, rtype: str) -> dict:
    row = dict.fromkeys(VALUE_COLUMNS)
    kind, value = _choice(node, "value")
    if kind is None:
        return row
    row["value_type"] = kind
    if kind == "Quantity":
        if not isinstance(value, dict):
            raise InvalidRecord("wrong_type", f"{rtype}.valueQuantity is not an object")
        row["value_quantity"] = _num(value, "value", rtype)
        row["value_unit"] = value.get("code") or value.get("unit")
    elif kind == "CodeableConcept":
        row["value_code_system"], row["value_code"], row["value_display"] = _first_coding(
            {"resourceType": rtype, "v": value}, "v"
        )
    elif kind in ("String", "Code", "Uri", "Markdown"):
        if not isinstance(value, str):
            raise InvalidRecord("wrong_type", f"{rtype}.value{kind} is not a string")
        row["value_string"] = value
    elif kind == "Boolean":
        if not isinstance(value, bool):
            raise InvalidRecord("wrong_type", f"{rtype}.valueBoolean is not a boolean")
        row["value_boolean"] = value
    elif kind == "Integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRecord("wrong_type", f"{rtype}.valueInteger is not an integer")
        row["value_integer"] = value
    elif kind in ("DateTime", "Instant", "Date"):
        row["value_datetime"] = _when(value if isinstance(value, str) else None)
    elif kind == "Period" and isinstance(value, dict):
        row["value_datetime"] = _when(value.get("start"))
    elif kind == "Range" and isinstance(value, dict):
        row["value_low"] = _num(value, "low.value", rtype)
        row["value_high"] = _num(value, "high.value", rtype)
        row["value_unit"] = (value.get("low") or value.get("high") or {}).get("code")
    elif kind == "Ratio" and isinstance(value, dict):
        row["value_low"] = _num(value, "numerator.value", rtype)
        row["value_high"] = _num(value, "denominator.value", rtype)
    elif kind == "Time":
        row["value_string"] = value if isinstance(value, str) else None
    return row


def _base(resource: dict, subject: str | None) -> dict:
    return {"id": resource.get("id"), "subject_pseudonym": subject}


# -- one function per table: (resource, subject) -> row -----------------------------------------
def patient_row(r: dict, subject: str | None, kind: str | None) -> dict:
    birth = r.get("birthDate")
    return {
        **_base(r, subject),
        "subject_kind": kind,
        "gender": _str(r, "gender"),
        "birth_date": birth,
        "birth_year": int(birth[:4]) if isinstance(birth, str) and birth[:4].isdigit() else None,
        "deceased": bool(r.get("deceasedBoolean") or r.get("deceasedDateTime")),
        "deceased_at": _when(r.get("deceasedDateTime")),
    }


def encounter_row(r: dict, subject: str | None) -> dict:
    start, end = _period(r, "period")
    klass = _get(r, "class", dict, "Encounter") or {}
    return {
        **_base(r, subject),
        "status": _str(r, "status"),
        "class_code": klass.get("code"),
        "type_system": _first_coding(
            {"resourceType": "Encounter", "t": (r.get("type") or [{}])[0]}, "t"
        )[0],
        "type_code": _first_coding(
            {"resourceType": "Encounter", "t": (r.get("type") or [{}])[0]}, "t"
        )[1],
        "period_start": start,
        "period_end": end,
        "service_provider_id": _ref_id(r, "serviceProvider"),
    }


def _coded(r: dict, subject: str | None, path: str = "code") -> dict:
    system, code, display = _first_coding(r, path)
    return {**_base(r, subject), "code_system": system, "code": code, "code_display": display}


def condition_row(r: dict, subject: str | None) -> dict:
    return {
        **_coded(r, subject),
        "encounter_id": _ref_id(r, "encounter"),
        "clinical_status": _first_coding(r, "clinicalStatus")[1],
        "verification_status": _first_coding(r, "verificationStatus")[1],
        "onset_at": _instant_of_choice(r, "onset"),
        "recorded_at": _when(r.get("recordedDate")),
    }


def observation_row(r: dict, subject: str | None) -> dict:
    components = r.get("component") or []
    if not isinstance(components, list):
        raise InvalidRecord("wrong_type", "Observation.component is not a list")
    return {
        **_coded(r, subject),
        "encounter_id": _ref_id(r, "encounter"),
        "status": _str(r, "status"),
        "effective_at": _instant_of_choice(r, "effective"),
        "issued_at": _when(r.get("issued")),
        **_value(r, "Observation"),
        "components": len(components),
    }


def component_rows(r: dict) -> list[dict]:
    rows = []
    for index, component in enumerate(r.get("component") or []):
        if not isinstance(component, dict):
            raise InvalidRecord("wrong_type", "Observation.component item is not an object")
        system, code, display = _first_coding(
            {"resourceType": "Observation", "c": component.get("code")}, "c"
        )
        rows.append(
            {
                "observation_id": r.get("id"),
                "index": index,
                "code_system": system,
                "code": code,
                "code_display": display,
                **_value(component, "Observation.component"),
            }
        )
    return rows


def medication_request_row(r: dict, subject: str | None) -> dict:
    return {
        **_coded(r, subject, "medicationCodeableConcept"),
        "encounter_id": _ref_id(r, "encounter"),
        "status": _str(r, "status"),
        "intent": _str(r, "intent"),
        "authored_at": _when(r.get("authoredOn")),
    }


def procedure_row(r: dict, subject: str | None) -> dict:
    return {
        **_coded(r, subject),
        "encounter_id": _ref_id(r, "encounter"),
        "status": _str(r, "status"),
        "performed_at": _instant_of_choice(r, "performed"),
    }


def diagnostic_report_row(r: dict, subject: str | None) -> dict:
    results = r.get("result") or []
    return {
        **_coded(r, subject),
        "encounter_id": _ref_id(r, "encounter"),
        "status": _str(r, "status"),
        "effective_at": _instant_of_choice(r, "effective"),
        "issued_at": _when(r.get("issued")),
        "results": len(results) if isinstance(results, list) else 0,
    }


def immunization_row(r: dict, subject: str | None) -> dict:
    return {
        **_coded(r, subject, "vaccineCode"),
        "encounter_id": _ref_id(r, "encounter"),
        "status": _str(r, "status"),
        "occurred_at": _instant_of_choice(r, "occurrence"),
    }


def allergy_row(r: dict, subject: str | None) -> dict:
    return {
        **_coded(r, subject),
        "clinical_status": _first_coding(r, "clinicalStatus")[1],
        "criticality": _str(r, "criticality"),
        "onset_at": _instant_of_choice(r, "onset"),
        "recorded_at": _when(r.get("recordedDate")),
    }


CODED = {"code_system": pl.String, "code": pl.String, "code_display": pl.String}
BASE = {"id": pl.String, "subject_pseudonym": pl.String}
TABLES: dict[str, tuple[str, dict, Callable]] = {
    # resource type: (table, schema, row function)
    "Patient": (
        "patients",
        {
            **BASE,
            "subject_kind": pl.String,
            "gender": pl.String,
            "birth_date": pl.String,
            "birth_year": pl.Int32,
            "deceased": pl.Boolean,
            "deceased_at": TIMESTAMP,
        },
        patient_row,
    ),
    "Encounter": (
        "encounters",
        {
            **BASE,
            "status": pl.String,
            "class_code": pl.String,
            "type_system": pl.String,
            "type_code": pl.String,
            "period_start": TIMESTAMP,
            "period_end": TIMESTAMP,
            "service_provider_id": pl.String,
        },
        encounter_row,
    ),
    "Condition": (
        "conditions",
        {
            **BASE,
            **CODED,
            "encounter_id": pl.String,
            "clinical_status": pl.String,
            "verification_status": pl.String,
            "onset_at": TIMESTAMP,
            "recorded_at": TIMESTAMP,
        },
        condition_row,
    ),
    "Observation": (
        "observations",
        {
            **BASE,
            **CODED,
            "encounter_id": pl.String,
            "status": pl.String,
            "effective_at": TIMESTAMP,
            "issued_at": TIMESTAMP,
            **VALUE_COLUMNS,
            "components": pl.Int32,
        },
        observation_row,
    ),
    "MedicationRequest": (
        "medication_requests",
        {
            **BASE,
            **CODED,
            "encounter_id": pl.String,
            "status": pl.String,
            "intent": pl.String,
            "authored_at": TIMESTAMP,
        },
        medication_request_row,
    ),
    "Procedure": (
        "procedures",
        {
            **BASE,
            **CODED,
            "encounter_id": pl.String,
            "status": pl.String,
            "performed_at": TIMESTAMP,
        },
        procedure_row,
    ),
    "DiagnosticReport": (
        "diagnostic_reports",
        {
            **BASE,
            **CODED,
            "encounter_id": pl.String,
            "status": pl.String,
            "effective_at": TIMESTAMP,
            "issued_at": TIMESTAMP,
            "results": pl.Int32,
        },
        diagnostic_report_row,
    ),
    "Immunization": (
        "immunizations",
        {**BASE, **CODED, "encounter_id": pl.String, "status": pl.String, "occurred_at": TIMESTAMP},
        immunization_row,
    ),
    "AllergyIntolerance": (
        "allergy_intolerances",
        {
            **BASE,
            **CODED,
            "clinical_status": pl.String,
            "criticality": pl.String,
            "onset_at": TIMESTAMP,
            "recorded_at": TIMESTAMP,
        },
        allergy_row,
    ),
}
COMPONENTS_SCHEMA = {"observation_id": pl.String, "index": pl.Int32, **CODED, **VALUE_COLUMNS}
CODINGS_SCHEMA = {
    "resource_type": pl.String,
    "resource_id": pl.String,
    "path": pl.String,
    "system": pl.String,
    "code": pl.String,
    "display": pl.String,
}
OTHER_SCHEMA = {
    "resource_type": pl.String,
    "id": pl.String,
    "subject_pseudonym": pl.String,
    "first_date": TIMESTAMP,
    "json": pl.String,
}
DECLARED_SCHEMA = {"record_type": pl.String, "subject_pseudonym": pl.String, "json": pl.String}
ALL_TABLES = {
    **{t: s for t, s, _ in TABLES.values()},
    "observation_components": COMPONENTS_SCHEMA,
    "codings": CODINGS_SCHEMA,
    "other_resources": OTHER_SCHEMA,
    "declared_records": DECLARED_SCHEMA,
}


def codings(resource: dict) -> list[dict]:
    """Every Coding in the resource, with the path of its CodeableConcept."""
    rows = []

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            if "coding" in node and isinstance(node["coding"], list):
                for coding in node["coding"]:
                    if isinstance(coding, dict) and (coding.get("code") or coding.get("system")):
                        rows.append(
                            {
                                "resource_type": resource["resourceType"],
                                "resource_id": resource.get("id"),
                                "path": path,
                                "system": coding.get("system"),
                                "code": coding.get("code"),
                                "display": coding.get("display"),
                            }
                        )
            for key, value in node.items():
                if key != "coding":
                    walk(value, f"{path}.{key}" if path else key)
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk(resource, "")
    return rows


def _first_date(node) -> dt.datetime | None:
    if isinstance(node, dict):
        for value in node.values():
            found = _first_date(value)
            if found:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _first_date(value)
            if found:
                return found
    elif isinstance(node, str) and len(node) >= 10 and node[4:5] == "-" and node[7:8] == "-":
        try:
            return _when(node)
        except InvalidRecord:
            return None
    return None


_PYTHON_TYPES = {
    pl.String: str,
    pl.Int32: int,
    pl.Int64: int,
    pl.Float64: (int, float),
    pl.Boolean: bool,
}
_INT_LIMITS = {pl.Int32: 2**31, pl.Int64: 2**63}


def _conforms(rows: list[dict], table: str) -> None:
    """Every value fits its column, so a chunk of rows can always become a frame."""
    schema = ALL_TABLES[table]
    for row in rows:
        for column, dtype in schema.items():
            value = row.get(column)
            if value is None:
                continue
            if isinstance(dtype, pl.Datetime):
                ok = isinstance(value, dt.datetime)
            else:
                expected = _PYTHON_TYPES.get(dtype)
                ok = expected is None or (
                    isinstance(value, expected)
                    and not (isinstance(value, bool) and dtype != pl.Boolean)
                )
                if ok and dtype in _INT_LIMITS:
                    ok = -_INT_LIMITS[dtype] <= value < _INT_LIMITS[dtype]
            if not ok:
                raise InvalidRecord("wrong_type", f"{table}.{column} has the wrong JSON type")


def flatten(resource: dict, subject: str | None, subject_kind: str | None) -> dict[str, list[dict]]:
    """Rows for every table this (pseudonymised) resource feeds."""
    rtype = resource["resourceType"]
    out: dict[str, list[dict]] = {}
    if rtype in TABLES:
        table, _, row_of = TABLES[rtype]
        row = (
            row_of(resource, subject, subject_kind)
            if rtype == "Patient"
            else row_of(resource, subject)
        )
        out[table] = [row]
        if rtype == "Observation":
            out["observation_components"] = component_rows(resource)
    else:
        out["other_resources"] = [
            {
                "resource_type": rtype,
                "id": resource.get("id"),
                "subject_pseudonym": subject,
                "first_date": _first_date(resource),
                "json": orjson.dumps(resource, option=orjson.OPT_SORT_KEYS).decode(),
            }
        ]
    out["codings"] = codings(resource)
    for table, rows in out.items():
        _conforms(rows, table)
    return out
