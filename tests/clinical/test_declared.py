"""Non-FHIR JSON with a provider-declared JSON Schema."""

import datetime as dt
import json

import orjson
import pytest

from hdh_assets.clinical.ingest import JsonIngestSettings, file_key, ingest_json_batch
from hdh_assets.clinical.providers import ProviderConfigError, load_providers
from hdh_assets.pseudonymisation import Pseudonymiser

KEY = bytes(range(50, 82))
NIR = "269054958815780"
SCHEMA = {
    "type": "object",
    "required": ["patient", "visit_date", "score"],
    "properties": {
        "patient": {
            "type": "object",
            "required": ["nir"],
            "properties": {"nir": {"type": "string"}, "name": {"type": "string"}},
        },
        "visit_date": {"type": "string", "format": "date"},
        "score": {"type": "integer", "minimum": 0},
        "comment": {"type": "string"},
    },
}


@pytest.fixture
def provider(tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "visits.schema.json").write_text(json.dumps(SCHEMA))
    config = tmp_path / "providers.yaml"
    config.write_text(
        "providers:\n  registry:\n    records:\n      - name: visits\n        files: 'visits*.ndjson'\n"
        "        schema: schemas/visits.schema.json\n        subject_field: patient.nir\n"
        "        date_fields: [visit_date]\n        remove_fields: [patient.name, comment]\n"
    )
    return load_providers(config)["registry"]


def test_declared_records_are_validated_pseudonymised_and_counted(tmp_path, provider):
    batch = tmp_path / "batch"
    batch.mkdir()
    good = {
        "patient": {"nir": NIR, "name": "Jeanne Durand"},
        "visit_date": "2024-03-01",
        "score": 4,
        "comment": "Mme Durand va mieux",
    }
    lines = [
        orjson.dumps(good),
        orjson.dumps({**good, "score": "four hundred"}),  # wrong type
        orjson.dumps({**good, "patient": {"nir": "269054958815799"}}),  # NIR key wrong
        orjson.dumps({**good, "score": -1}),  # below minimum
        orjson.dumps(good),  # duplicate
    ]
    (batch / "visits-2024.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    (batch / "Patient.ndjson").write_bytes(
        orjson.dumps({"resourceType": "Patient", "id": "p", "gender": "female"}) + b"\n"
    )
    result = ingest_json_batch(
        "b", batch, JsonIngestSettings(KEY, tmp_path / "q", provider=provider)
    )
    summary = result.summary()
    assert (
        summary["records_in"]
        == 6
        == summary["ingested"] + summary["duplicates"] + summary["quarantined"]
    )
    assert summary["duplicates"] == 1 and summary["rows_by_table"]["patients"] == 1
    rows = result.tables["declared_records"].to_dicts()
    assert len(rows) == 1
    pseudonymiser = Pseudonymiser(KEY)
    pseudonym = pseudonymiser.subject_pseudonym(NIR)
    assert rows[0]["subject_pseudonym"] == pseudonym and rows[0]["record_type"] == "visits"
    stored = json.loads(rows[0]["json"])
    shifted = dt.date(2024, 3, 1) + dt.timedelta(days=pseudonymiser.date_offset_days(pseudonym))
    assert stored == {"patient": {}, "visit_date": shifted.isoformat(), "score": 4}
    reasons = {(r["file_key"], r["line"]): r["reason"] for r in result.quarantine.to_dicts()}
    visits = file_key("b", "visits-2024.ndjson")
    assert reasons == {
        (visits, 2): "schema_violation",
        (visits, 3): "invalid_identifier",
        (visits, 4): "schema_violation",
    }
    messages = " ".join(result.quarantine["message"])
    assert (
        "four hundred" not in messages
        and "score: type" in messages
        and "score: minimum" in messages
    )


def test_a_bad_declaration_is_refused_with_the_file_named(tmp_path):
    config = tmp_path / "providers.yaml"
    config.write_text(
        "providers:\n  r:\n    records:\n      - name: v\n        files: '*.ndjson'\n        schema: missing.json\n        subject_field: id\n"
    )
    with pytest.raises(ProviderConfigError, match=r"missing\.json"):
        load_providers(config)


LAB_MODEL = """
from typing import Optional

import pandera.polars as pa
import polars as pl


class LabResults(pa.DataFrameModel):
    nir: str
    sampled_on: pl.Date
    analyte: str = pa.Field(isin=["HBA1C", "LDL"])
    value: float = pa.Field(ge=0)
    unit: Optional[str] = pa.Field(nullable=True)
    technician: Optional[str] = pa.Field(nullable=True)

    class Config:
        strict = True


NOT_A_SCHEMA = {"nir": str}
"""


def _lab_provider(tmp_path, reference="schemas/labs.py:LabResults"):
    (tmp_path / "schemas").mkdir(exist_ok=True)
    (tmp_path / "schemas" / "labs.py").write_text(LAB_MODEL)
    config = tmp_path / "providers.yaml"
    config.write_text(
        "providers:\n  lab:\n    records:\n      - name: lab_results\n"
        "        files: 'labs*.ndjson'\n"
        f"        pandera: {reference}\n        subject_field: nir\n"
        "        date_fields: [sampled_on]\n        remove_fields: [technician]\n"
    )
    return load_providers(config)["lab"]


@pytest.mark.parametrize("chunk", [3, 5_000], ids=["small-chunks", "one-chunk"])
def test_records_with_a_pandera_schema_are_validated_by_chunk(tmp_path, monkeypatch, chunk):
    import hdh_assets.clinical.ingest as ingest

    monkeypatch.setattr(ingest, "DECLARED_CHUNK", chunk)
    provider = _lab_provider(tmp_path)
    good = {
        "nir": NIR,
        "sampled_on": "2024-05-02",
        "analyte": "HBA1C",
        "value": 6.4,
        "unit": "%",
        "technician": "Paul Martin",
    }
    lines = [
        orjson.dumps(good),
        orjson.dumps({**good, "value": "very high"}),  # 2 wrong type
        orjson.dumps({**good, "analyte": "XYZ"}),  # 3 not an accepted value
        orjson.dumps({**good, "value": -1.0}),  # 4 below minimum
        orjson.dumps({k: v for k, v in good.items() if k != "sampled_on"}),  # 5 missing
        orjson.dumps({**good, "ward": "cardio"}),  # 6 not in the (strict) schema
        orjson.dumps({**good, "sampled_on": "2024-13-45"}),  # 7 not a date
        b'{"nir": ',  # 8 invalid JSON
        orjson.dumps([good]),  # 9 not an object
        orjson.dumps({**good, "value": 5, "unit": None}),  # 10 good: an int is a float, null unit
        orjson.dumps(good),  # 11 duplicate of line 1
    ]
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "labs-2024.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    result = ingest_json_batch(
        "b", batch, JsonIngestSettings(KEY, tmp_path / "q", provider=provider)
    )
    summary = result.summary()
    assert (summary["records_in"], summary["ingested"], summary["duplicates"]) == (11, 2, 1)
    assert summary["quarantined"] == 8
    labs = file_key("b", "labs-2024.ndjson")
    quarantine = {(r["file_key"], r["line"]): r for r in result.quarantine.to_dicts()}
    reasons = {line: quarantine[(labs, line)]["reason"] for _, line in quarantine}
    assert reasons == {
        **{line: "schema_violation" for line in (2, 3, 4, 5, 6, 7)},
        8: "invalid_json",
        9: "not_a_record",
    }
    message = {line: quarantine[(labs, line)]["message"] for line in range(2, 8)}
    assert "value: type" in message[2]
    assert "analyte: isin" in message[3]
    assert "value: greater_than_or_equal_to(0)" in message[4]
    assert "sampled_on: required" in message[5]
    assert message[6] == "1 field(s): not in schema"  # the field's name is the record's text
    assert "sampled_on: type" in message[7]
    text = " ".join(result.quarantine["message"])
    assert not [v for v in ("very high", "XYZ", "cardio", "ward", "2024-13-45", NIR) if v in text]
    rows = result.tables["declared_records"].to_dicts()
    pseudonymiser = Pseudonymiser(KEY)
    pseudonym = pseudonymiser.subject_pseudonym(NIR)
    shifted = dt.date(2024, 5, 2) + dt.timedelta(days=pseudonymiser.date_offset_days(pseudonym))
    stored = sorted((json.loads(r["json"]) for r in rows), key=lambda r: r["value"])
    assert stored == [
        {"sampled_on": shifted.isoformat(), "analyte": "HBA1C", "value": 5, "unit": None},
        {"sampled_on": shifted.isoformat(), "analyte": "HBA1C", "value": 6.4, "unit": "%"},
    ]
    assert {r["subject_pseudonym"] for r in rows} == {pseudonym}
    assert {r["record_type"] for r in rows} == {"lab_results"}


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("schemas/missing.py:LabResults", r"missing\.py not found"),
        ("schemas/labs.py:Nobody", r"cannot be loaded \(AttributeError\)"),
        ("schemas/labs.py:NOT_A_SCHEMA", "not a pandera polars DataFrameModel"),
        ("LabResults", "must be 'file.py:Name'"),
        ("no_such_module_here:X", r"cannot be loaded \(ModuleNotFoundError\)"),
    ],
)
def test_a_bad_pandera_reference_is_refused_with_the_reason(tmp_path, reference, expected):
    with pytest.raises(ProviderConfigError, match=expected) as raised:
        _lab_provider(tmp_path, reference)
    assert "providers.yaml" in str(raised.value) and "lab_results" in str(raised.value)


def test_a_pandera_schema_can_be_named_by_module(tmp_path, monkeypatch):
    (tmp_path / "lab_schemas.py").write_text(LAB_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    provider = _lab_provider(tmp_path, "lab_schemas:LabResults")
    found = provider.records[0].violations([{"nir": NIR, "technician": None}])[0]
    assert {"analyte: required", "sampled_on: required", "value: required"} <= set(found)
    assert "technician: required" not in found and not [f for f in found if f.startswith("nir")]


def _rules(schema):
    from hdh_assets.clinical.declared import PanderaRules

    return PanderaRules(schema)


def test_pandera_values_are_judged_one_by_one_whatever_their_neighbours():
    import pandera.polars as pa
    import polars as pl

    rules = _rules(
        pa.DataFrameSchema(
            {
                "at": pa.Column(pl.Datetime("us", "UTC")),
                "on": pa.Column(pl.Date, nullable=True, required=False),
                "doses": pa.Column(pl.List(pl.Int64), nullable=True, required=False),
                "site": pa.Column(pl.Struct({"ward": pl.String}), nullable=True, required=False),
                "n": pa.Column(pl.Int8, nullable=True, required=False),
            }
        )
    )
    good = [
        {"at": "2024-01-01"},
        {"at": "2024-01-01T10:00:00+01:00"},
        {"at": "2024-01-01T10:00:00.123Z"},
        {"at": "2024-01-01T10:00:00", "on": "2024-02-03", "doses": [1, 2], "site": {"ward": "B"}},
    ]
    bad = [
        {"at": "yesterday"},
        {"at": "2024-01-01", "doses": ["secret"]},
        {"at": "2024-01-01", "doses": "1,2"},
        {"at": "2024-01-01", "site": {"ward": 5}},
        {"at": "2024-01-01", "site": "B"},
        {"at": "2024-01-01", "n": 300},  # beyond Int8
        {"at": "2024-01-01", "on": "2024-02-30"},
    ]
    for order in (good + bad, bad + good, list(reversed(good + bad))):
        found = dict(zip(map(id, order), rules.violations(order), strict=True))
        assert all(found[id(record)] == [] for record in good), order
        assert all(found[id(record)] for record in bad), order
    found = rules.violations(bad)
    assert found[0] == ["at: not_nullable", "at: type"]
    assert [f for f in found[1] if f.endswith("type")] == ["doses: type"]
    assert "n: type" in found[5] and "on: type" in found[6]


def test_a_pandera_column_json_cannot_fill_is_refused_at_load(tmp_path):
    (tmp_path / "s.py").write_text(
        "import pandera.polars as pa\nimport polars as pl\n"
        "ANY = pa.DataFrameSchema({'nir': pa.Column(str), 'x': pa.Column(nullable=True)})\n"
        "BLOB = pa.DataFrameSchema({'nir': pa.Column(str), 'x': pa.Column(pl.Binary)})\n"
    )
    for name in ("ANY", "BLOB"):
        config = tmp_path / "providers.yaml"
        config.write_text(
            f"providers:\n  p:\n    records:\n      - name: r\n        files: '*.ndjson'\n"
            f"        pandera: s.py:{name}\n        subject_field: nir\n"
        )
        with pytest.raises(ProviderConfigError, match="column 'x' has dtype"):
            load_providers(config)


def test_json_schema_errors_do_not_name_keys_the_schema_does_not_declare():
    from hdh_assets.clinical.declared import JsonSchemaRules

    rules = JsonSchemaRules(
        {
            "type": "object",
            "properties": {
                "scores": {"type": "object", "additionalProperties": {"type": "integer"}}
            },
        }
    )
    (found,) = rules.violations([{"scores": {"1850578123456": "x"}}])
    assert found == ["scores/*: type"]
