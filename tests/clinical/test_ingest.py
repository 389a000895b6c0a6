"""JSON/FHIR ingestion: every record accounted for, malformed lines quarantined with file and line,
one pseudonym and one date offset per person across DICOM and FHIR, nothing identifying in tables."""

import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import orjson
import polars as pl
import pydicom
import pytest

from hdh_assets.clinical.ingest import JsonIngestSettings, file_key, ingest_json_batch
from hdh_assets.clinical.providers import Provider, ProviderConfigError, load_providers
from hdh_assets.imaging.ingest import IngestSettings, ingest_batch
from hdh_assets.pseudonymisation import Pseudonymiser
from tests.conftest import identity_needles

KEY = bytes(range(7, 39))


def _settings(tmp_path: Path, **kwargs) -> JsonIngestSettings:
    return JsonIngestSettings(KEY, tmp_path / "quarantine" / "json", **kwargs)


@pytest.fixture(scope="module")
def sample_result(sample_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("json")
    batch = sample_root / "landing" / "json" / "sample-seed7"
    return ingest_json_batch("sample-seed7", batch, _settings(root)), batch


def _table_text(result) -> str:
    return "\n".join(str(frame.to_dicts()) for frame in result.tables.values())


def test_every_sample_record_is_accounted_for(sample_result):
    result, batch = sample_result
    summary = result.summary()
    lines = sum(len(p.read_text().splitlines()) for p in batch.glob("*.ndjson"))
    entries = sum(
        len(json.loads(p.read_text())["entry"]) for p in (batch / "bundles").glob("*.json")
    )
    assert summary["records_in"] == lines + entries
    assert (
        summary["records_in"]
        == summary["ingested"] + summary["duplicates"] + summary["quarantined"]
    )
    assert summary["quarantined"] == 0
    assert summary["duplicates"] == entries  # the Bundles repeat resources of the NDJSON export
    counts = result.per_file
    assert (
        counts["records_in"] == counts["ingested"] + counts["duplicates"] + counts["quarantined"]
    ).all()
    assert summary["rows_by_table"]["patients"] == len(
        (batch / "Patient.ndjson").read_text().splitlines()
    )
    components = result.tables["observation_components"]
    assert components.height > 0 and set(components["code"]) == {"8480-6", "8462-4"}
    assert result.tables["codings"].filter(pl.col("system") == "http://loinc.org").height > 0


def test_no_identifier_in_the_tables(sample_result, identities):
    result, _ = sample_result
    text = _table_text(result)
    needles = identity_needles(identities)
    needles |= {p["address_line"] for p in identities} | {p["birth_date"] for p in identities}
    needles |= {p["hospital_patient_id"] for p in identities}
    leaked = [n for n in needles if n in text]
    assert not leaked, f"{len(leaked)} identifiers in the clinical tables"
    patients = result.tables["patients"]
    assert patients["birth_date"].str.len_chars().max() == 4  # generalised to the year


def test_references_are_rewritten_and_resolve(sample_result):
    result, _ = sample_result
    patients = set(result.tables["patients"]["subject_pseudonym"])
    encounters = set(result.tables["encounters"]["id"])
    for table in ("encounters", "conditions", "observations", "procedures", "medication_requests"):
        frame = result.tables[table]
        assert set(frame["subject_pseudonym"]) <= patients, table
    linked = result.tables["observations"]["encounter_id"].drop_nulls()
    assert set(linked) <= encounters


def test_one_person_has_the_same_pseudonym_and_date_offset_in_dicom_and_fhir(
    sample_root, identities, tmp_path
):
    """The imaging study of a person and the FHIR imaging encounter of that day stay aligned."""
    dicom_batch = sample_root / "landing" / "dicom" / "sample-seed7"
    json_batch = sample_root / "landing" / "json" / "sample-seed7"
    imaging = ingest_batch(
        "d", dicom_batch, IngestSettings(KEY, tmp_path / "store", tmp_path / "q", workers=1)
    )
    clinical = ingest_json_batch("j", json_batch, _settings(tmp_path))
    index = imaging.index()
    person = next(
        p
        for p in identities
        if Pseudonymiser(KEY).subject_pseudonym(p["nir"]) in set(index["subject_pseudonym"])
    )
    pseudonym = Pseudonymiser(KEY).subject_pseudonym(person["nir"])
    assert pseudonym in set(clinical.tables["patients"]["subject_pseudonym"])

    original = next(
        pydicom.dcmread(p)
        for p in dicom_batch.rglob("*.dcm")
        if p.parent.name != "misc"
        and pydicom.dcmread(p, stop_before_pixels=True).PatientID == person["nir"]
        and pydicom.dcmread(p, stop_before_pixels=True).BurnedInAnnotation != "YES"
    )
    original_day = dt.datetime.strptime(original.StudyDate, "%Y%m%d").date()
    stored = index.filter(
        pl.col("sop_instance_uid") == Pseudonymiser(KEY).remap_uid(str(original.SOPInstanceUID))
    )
    offset = (stored["study_date"][0] - original_day).days
    assert offset == Pseudonymiser(KEY).date_offset_days(pseudonym) != 0
    # the FHIR imaging encounter of the same day moved by the same offset
    encounters = clinical.tables["encounters"].filter(pl.col("subject_pseudonym") == pseudonym)
    days = {t.date() for t in encounters["period_start"].to_list()}
    assert original_day + dt.timedelta(days=offset) in days


def _write_batch(folder: Path, lines: list[bytes], name: str = "Observation.ndjson") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"\n".join(lines) + b"\n")


def test_malformed_lines_are_quarantined_with_file_and_line(tmp_path):
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "269054958815780"}],
        "name": [{"family": "Durand"}],
        "birthDate": "1969-05-12",
    }
    good = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "effectiveDateTime": "2024-01-02",
        "valueQuantity": {"value": 7.1, "unit": "%"},
    }
    batch = tmp_path / "landing" / "b1"
    _write_batch(batch, [orjson.dumps(patient)], "Patient.ndjson")
    _write_batch(
        batch,
        [
            orjson.dumps(good),
            b'{"resourceType": "Observation", "id": "o2", ',  # truncated JSON
            orjson.dumps({"id": "o3", "status": "final"}),  # no resourceType
            orjson.dumps({**good, "id": "o4", "valueQuantity": {"value": "seven"}}),  # wrong type
            orjson.dumps(
                {**good, "id": "o5", "subject": {"reference": "Patient/nobody"}}
            ),  # unknown reference
            b"[1, 2, 3]",  # not a resource
            orjson.dumps(good),  # exact duplicate
        ],
    )
    with gzip.open(batch / "Condition.ndjson.gz", "wb") as handle:
        handle.write(
            orjson.dumps(
                {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}
            )
            + b"\n"
        )
    (batch / "broken.json").write_text('{"resourceType": "Bundle", "entry": [')
    result = ingest_json_batch("b1", batch, _settings(tmp_path))
    quarantine = result.quarantine
    by_line = {(row["file_key"], row["line"]): row["reason"] for row in quarantine.to_dicts()}
    observations = file_key("b1", "Observation.ndjson")
    assert by_line == {
        (observations, 2): "invalid_json",
        (observations, 3): "missing_resource_type",
        (observations, 4): "wrong_type",
        (observations, 5): "unknown_reference",
        (observations, 6): "not_a_resource",
        (file_key("b1", "broken.json"), 1): "invalid_json",
    }
    summary = result.summary()
    assert summary["duplicates"] == 1
    assert (
        summary["records_in"]
        == summary["ingested"] + summary["duplicates"] + summary["quarantined"]
        == 10
    )
    assert result.tables["conditions"].height == 1  # gzip NDJSON read too
    notes = [
        json.loads(line)
        for line in (tmp_path / "quarantine/json/b1/rejected_records.ndjson")
        .read_text()
        .splitlines()
    ]
    assert {(n["file"], n["line"]) for n in notes} >= {
        ("Observation.ndjson", 2),
        ("broken.json", 1),
    }
    assert "Durand" not in str(quarantine.to_dicts())


def test_birth_date_generalisation_and_provider_scope(tmp_path):
    patient = {"resourceType": "Patient", "id": "local-7", "birthDate": "1969-05-12"}
    batch = tmp_path / "b"
    _write_batch(batch, [orjson.dumps(patient)], "Patient.ndjson")
    by_month = ingest_json_batch(
        "b", batch, _settings(tmp_path, provider=Provider("lab", birth_date="month"))
    )
    row = by_month.tables["patients"].row(0, named=True)
    assert row["birth_date"] == "1969-05" and row["subject_kind"] == "provider"
    other = ingest_json_batch(
        "b", batch, _settings(tmp_path, provider=Provider("other-lab", birth_date="none"))
    )
    other_row = other.tables["patients"].row(0, named=True)
    assert other_row["birth_date"] is None
    assert other_row["subject_pseudonym"] != row["subject_pseudonym"]  # scoped by provider


def test_provider_file_is_validated(tmp_path):
    good = tmp_path / "providers.yaml"
    good.write_text(
        "providers:\n  chu:\n    national_identifier_systems: ['urn:oid:9.9']\n    birth_date: month\n"
    )
    providers = load_providers(good)
    assert (
        providers["chu"].national_identifier_systems == ("urn:oid:9.9",) and "default" in providers
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  chu:\n    birth_date: decade\n")
    with pytest.raises(ProviderConfigError, match=r"bad\.yaml"):
        load_providers(bad)
    shutil.rmtree(tmp_path / "quarantine", ignore_errors=True)
