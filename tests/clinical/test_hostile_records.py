"""Records shaped to leak or to crash: nothing identifying survives, nothing stops the batch.
(Cases found by a review of the FHIR pseudonymiser; each leaked or crashed before its fix.)"""

import json
from pathlib import Path

import polars as pl
import pytest

from hdh_assets.clinical.ingest import JsonIngestSettings, ingest_json_batch

NIR = "185057800608436"
PATIENT = {
    "resourceType": "Patient",
    "id": "pat-ORIGID-1",
    "birthDate": "1980-05-06",
    "name": [{"family": "Dupont"}],
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": NIR}],
}
REF = {"reference": "Patient/pat-ORIGID-1"}
NEEDLES = [
    "LEAKNAME",
    NIR,
    "1979-03-04",
    "1955-07-08",
    "1962-09-10",
    "pat-ORIGID-1",
    "TEVBS0RBVEE",
    "2021-03-04",
]

LEAKY = {
    "contained reference": {
        "resourceType": "Observation",
        "id": "obs-c",
        "subject": REF,
        "encounter": {"reference": "#Encounter/LEAKNAME"},
        "contained": [{"resourceType": "Encounter", "id": "LEAKNAME", "status": "finished"}],
    },
    "contained person": {
        "resourceType": "Consent",
        "id": "c1",
        "patient": REF,
        "contained": [
            {
                "resourceType": "Patient",
                "id": "p9",
                "name": [{"family": "LEAKNAME"}],
                "birthDate": "1979-03-04",
            }
        ],
    },
    "related person birth date": {
        "resourceType": "RelatedPerson",
        "id": "rp1",
        "patient": REF,
        "birthDate": "1955-07-08",
        "name": [{"family": "LEAKNAME"}],
    },
    "practitioner birth date": {
        "resourceType": "Practitioner",
        "id": "pr1",
        "birthDate": "1962-09-10",
    },
    "display of an identifier reference": {
        "resourceType": "CarePlan",
        "id": "cp1",
        "subject": REF,
        "author": {"identifier": {"value": "X"}, "display": "LEAKNAME Dr"},
    },
    "display of a broken reference": {
        "resourceType": "CarePlan",
        "id": "cp2",
        "subject": REF,
        "author": {"reference": 5, "display": "LEAKNAME Dr"},
    },
    "attachment without content type": {
        "resourceType": "DocumentReference",
        "id": "d1",
        "subject": REF,
        "content": [{"attachment": {"url": "http://h/LEAKNAME.pdf", "data": "TEVBS0RBVEE="}}],
    },
    "master identifier": {
        "resourceType": "DocumentReference",
        "id": "d2",
        "subject": REF,
        "masterIdentifier": {"value": NIR},
    },
    "coverage subscriber and beneficiary": {
        "resourceType": "Coverage",
        "id": "cov",
        "beneficiary": REF,
        "subscriberId": NIR,
        "period": {"start": "2021-03-04"},
    },
    "free text payload": {
        "resourceType": "Communication",
        "id": "cm1",
        "subject": REF,
        "payload": [{"contentString": "Mr LEAKNAME tel 0601020304"}],
    },
    "contained meta": {
        "resourceType": "Consent",
        "id": "c2",
        "patient": REF,
        "contained": [{"resourceType": "Organization", "id": "o", "meta": {"source": "LEAKNAME"}}],
    },
}
CRASHING = {
    "encounter type is an object": {
        "resourceType": "Encounter",
        "id": "e1",
        "subject": REF,
        "type": {"coding": []},  # a CodeableConcept where a list of them belongs
    },
    "recorded date is a number": {
        "resourceType": "Condition",
        "id": "c1",
        "subject": REF,
        "recordedDate": 20240101,
    },
    "coding code is an object": {
        "resourceType": "Condition",
        "id": "c2",
        "subject": REF,
        "code": {"coding": [{"system": "s", "code": {"x": 1}}]},
    },
    "range low is text": {
        "resourceType": "Observation",
        "id": "o1",
        "subject": REF,
        "valueRange": {"low": "x"},
    },
    "integer beyond 64 bits": {
        "resourceType": "Observation",
        "id": "o2",
        "subject": REF,
        "valueInteger": 2**64 - 1,
    },
    "class code is a list": {
        "resourceType": "Encounter",
        "id": "e2",
        "subject": REF,
        "class": {"code": ["x"]},
    },
    "nested 900 deep": {
        "resourceType": "Basic",
        "id": "b1",
        "subject": REF,
        "extension": json.loads("[" * 900 + "]" * 900),
    },
}


def _ingest(tmp_path: Path, resources: list[dict]):
    batch = tmp_path / "batch"
    batch.mkdir(exist_ok=True)
    (batch / "data.ndjson").write_text("".join(json.dumps(r) + "\n" for r in resources))
    return ingest_json_batch("b", batch, JsonIngestSettings(bytes(32), tmp_path / "q"))


@pytest.mark.parametrize("case", sorted(LEAKY))
def test_nothing_identifying_survives(tmp_path, case):
    result = _ingest(tmp_path, [PATIENT, LEAKY[case]])
    assert result.summary()["ingested"] == 2
    text = "\n".join(str(f.lazy().collect().to_dicts()) for f in result.tables.values())
    assert [n for n in NEEDLES if n in text] == []


@pytest.mark.parametrize("case", sorted(CRASHING))
def test_a_malformed_record_is_quarantined_not_fatal(tmp_path, case):
    result = _ingest(
        tmp_path,
        [PATIENT, CRASHING[case], {"resourceType": "Observation", "id": "ok", "subject": REF}],
    )
    summary = result.summary()
    assert summary["quarantined"] == 1 and summary["ingested"] == 2
    assert result.quarantine["line"].to_list() == [2]


def test_resources_without_id_are_told_apart_by_content(tmp_path):
    same = {"resourceType": "Observation", "subject": REF, "status": "final"}
    other = {**same, "status": "amended"}
    result = _ingest(tmp_path, [PATIENT, same, other, same])
    assert result.summary()["ingested"] == 3 and result.summary()["duplicates"] == 1
    assert isinstance(result.tables["observations"], pl.DataFrame)
