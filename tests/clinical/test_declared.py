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
