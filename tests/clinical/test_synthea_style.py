"""A Synthea-style US export: every resource accounted for, nothing identifying left."""

import base64
import json

import pytest

from hdh_assets.clinical.ingest import JsonIngestSettings, ingest_json_batch
from synthetic.synthea_style import synthea_style_export


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthea") / "export"
    identities = synthea_style_export(folder, patients=6, seed=3)
    result = ingest_json_batch("us", folder, JsonIngestSettings(bytes(32), folder.parent / "q"))
    return folder, identities, result


def test_every_resource_is_accounted_for(export):
    folder, _, result = export
    lines = sum(len(p.read_text().splitlines()) for p in folder.glob("*.ndjson"))
    entries = sum(
        len(json.loads(p.read_text())["entry"]) for p in (folder / "bundles").glob("*.json")
    )
    summary = result.summary()
    assert summary["records_in"] == lines + entries
    assert summary["quarantined"] == 0, result.quarantine.to_dicts()[:3]
    assert summary["duplicates"] == entries  # urn:uuid Bundles resolve to the same resources
    rows = summary["rows_by_table"]
    assert rows["patients"] == 6
    assert (
        rows["diagnostic_reports"] > 0
        and rows["immunizations"] == 6
        and rows["allergy_intolerances"] == 6
    )
    other_types = set(result.tables["other_resources"]["resource_type"])
    assert other_types == {
        "DocumentReference",
        "Location",
        "Medication",
        "Organization",
        "Practitioner",
        "Provenance",
    }
    assert set(result.tables["patients"]["subject_kind"]) == {"provider"}  # no French NIR here


def test_nothing_identifying_is_left(export):
    _, identities, result = export
    text = "\n".join(str(frame.to_dicts()) for frame in result.tables.values())
    needles = set()
    for person in identities:
        needles |= {
            person["family"],
            person["maiden"],
            person["ssn"],
            person["phone"],
            person["line"],
            person["mother"],
            person["birth_date"],
            person["id"],
            *person["given"],
        }
    needles |= {"Quigley282", "9999912345", "316-555-0100"}
    leaked = sorted(n for n in needles if n in text)
    assert leaked == []
    # notes were base64 in attachments: gone, not just encoded
    encoded = {
        base64.b64encode(f"Patient {p['given'][0]} {p['family']}".encode()).decode()[:16]
        for p in identities
    }
    assert not [e for e in encoded if e in text]
