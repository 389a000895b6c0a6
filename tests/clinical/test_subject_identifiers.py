"""A resource naming its subject by identifier (``"subject": {"identifier": {...}}``, allowed by
FHIR where the national health identifier is the exchange key) is linked to the same pseudonym as
its Patient, on both paths; one naming nobody known is quarantined as ``unresolved_subject``,
never stored unlinked, where an erasure could not find it. No identifier value reaches the lake,
the quarantine or a log."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import polars as pl

from hdh_assets.clinical.assets import (
    LINKED_CHECK,
    LINKED_TABLES,
    json_ingestion,
    without_excluded_people,
)
from hdh_assets.clinical.ingest import JsonIngestSettings, ingest_json_batch
from hdh_assets.clinical.linkage import unlinked_person_rows
from hdh_assets.clinical.providers import Provider
from hdh_assets.clinical.vectorised import decoding
from hdh_assets.pseudonymisation import Pseudonymiser
from hdh_assets.pseudonymisation.fhir import Subject
from hdh_assets.pseudonymisation.identifiers import nir_key
from tests.clinical.test_vectorised import KEY, _assert_same, _both

NIR_OID = "urn:oid:1.2.250.1.213.1.4.8"
NIR = "2690549588157" + nir_key("2690549588157")
SPACED = f"{NIR[0]} {NIR[1:3]} {NIR[3:5]} {NIR[5:7]} {NIR[7:10]} {NIR[10:13]} {NIR[13:]}"
OTHER_NIR = "1850578006084" + nir_key("1850578006084")  # valid, but nobody's
BAD_NIR = NIR[:-2] + f"{(int(NIR[-2:]) + 1) % 100:02d}"  # control key off by one
IPP_SYSTEM = "https://chu.example.fr/ipp"
IPP = "IPP-000042"
VALUES = (NIR, SPACED, OTHER_NIR, BAD_NIR, IPP, "IPP-000043", NIR[:13])

PATIENT = {
    "resourceType": "Patient",
    "id": "pat-1",
    "identifier": [{"system": NIR_OID, "value": NIR}, {"system": IPP_SYSTEM, "value": IPP}],
    "gender": "female",
    "birthDate": "1969-05-02",
}
ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "enc-1",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
    "subject": {"reference": "Patient/pat-1"},
    "period": {"start": "2024-01-02T09:00:00Z", "end": "2024-01-02T11:00:00Z"},
}


def _by(system: str, value: str, **extra) -> dict:
    return {"identifier": {"system": system, "value": value}, **extra}


def _obs(rid: str, subject: dict, **fields) -> dict:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "subject": subject,
        "encounter": {"reference": "Encounter/enc-1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "effectiveDateTime": "2024-01-02T10:00:00+01:00",
        "valueQuantity": {"value": 7.1, "unit": "%", "code": "%"},
        **fields,
    }


LINKED = {  # id: how it names its subject; each resolves to the Patient's pseudonym
    "by-reference": {"reference": "Patient/pat-1"},
    "by-nir": _by(NIR_OID, NIR),
    "by-bare-oid": _by("1.2.250.1.213.1.4.8", SPACED),  # another national system, spaced
    "by-ins-url": _by("https://hl7.fr/ig/fhir/core/NamingSystem/INS-NIR", NIR),
    "by-nir-without-key": _by(NIR_OID, NIR[:13]),
    "by-ipp": _by(IPP_SYSTEM, IPP),  # a local system the Patient carries
}
UNRESOLVED = {  # id: a reference by identifier that names nobody known
    "nobody-nir": _by(NIR_OID, OTHER_NIR),
    "bad-key-nir": _by(NIR_OID, BAD_NIR),
    "nobody-ipp": _by(IPP_SYSTEM, "IPP-000043"),
    "unknown-system": _by("urn:example:unknown", IPP),
    "no-value": {"identifier": {"system": NIR_OID}},
}


def _write(folder: Path, name: str, resources: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))


def _linked_batch(folder: Path) -> None:
    _write(folder, "Patient.ndjson", [PATIENT])
    _write(folder, "Encounter.ndjson", [ENCOUNTER])
    _write(folder, "Observation.ndjson", [_obs(rid, s) for rid, s in LINKED.items()])
    _write(
        folder,
        "Immunization.ndjson",
        [
            {
                "resourceType": "Immunization",
                "id": "imm-1",
                "status": "completed",
                "vaccineCode": {
                    "coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "08"}]
                },
                "patient": _by(NIR_OID, NIR),
                "occurrenceDateTime": "2023-03-04",
            }
        ],
    )


def _pseudonym() -> str:
    return Pseudonymiser(KEY).subject_pseudonym(NIR)


def _text(result) -> str:
    tables = "\n".join(str(f.lazy().collect().to_dicts()) for f in result.tables.values())
    return tables + "\n" + str(result.quarantine.to_dicts())


def test_references_by_identifier_get_the_patients_pseudonym_on_both_paths(tmp_path):
    folder = tmp_path / "linked"
    _linked_batch(folder)
    slow, fast, calls = _both(folder, tmp_path)
    # every line read column-wise, none sent back: the column-wise path resolved them itself
    _assert_same(slow, fast, columnwise=3 + len(LINKED), per_record=0)
    assert calls == []
    for result in (slow, fast):
        assert result.summary()["quarantined"] == 0
        patients = result.tables["patients"]
        assert patients["subject_pseudonym"].to_list() == [_pseudonym()]
        assert patients["subject_kind"].to_list() == ["national"]
        observations = result.tables["observations"]
        assert observations.height == len(LINKED)
        assert set(observations["subject_pseudonym"]) == {_pseudonym()}
        # the same date offset as the Patient's: one instant for all of them
        assert observations["effective_at"].n_unique() == 1
        assert result.tables["immunizations"]["subject_pseudonym"].to_list() == [_pseudonym()]
        assert unlinked_person_rows(result.tables) == dict.fromkeys(LINKED_TABLES, 0)


def test_the_per_record_path_resolves_them_in_bundles_and_conditional_references(tmp_path):
    """Bundles are read one by one only; a conditional reference (``Patient?identifier=``) is
    an identifier reference too, which the column-wise path sends back one by one."""
    folder = tmp_path / "bundle"
    _write(folder, "Patient.ndjson", [PATIENT])
    _write(
        folder,
        "Observation.ndjson",
        [
            _obs("conditional", {"reference": f"Patient?identifier={NIR_OID}|{NIR}"}),
            _obs("conditional-nobody", {"reference": f"Patient?identifier={NIR_OID}|{OTHER_NIR}"}),
            _obs("conditional-by-name", {"reference": "Patient?name=someone"}),
            _obs("both", {"reference": "#contained", **_by(IPP_SYSTEM, IPP)}),
            _obs("typed", _by(NIR_OID, NIR, type="Patient")),
        ],
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": _obs("in-bundle", _by(NIR_OID, SPACED))},
            {"fullUrl": "urn:uuid:2", "resource": _obs("in-bundle-2", _by(IPP_SYSTEM, "x"))},
        ],
    }
    (folder / "bundle.json").write_bytes(orjson.dumps(bundle))
    slow, fast, calls = _both(folder, tmp_path)
    _assert_same(slow, fast, columnwise=1, per_record=5)
    assert {c.file for c in calls} == {"Observation.ndjson", "bundle.json"}
    for result in (slow, fast):
        observations = result.tables["observations"]
        assert observations.height == 4
        assert set(observations["subject_pseudonym"]) == {_pseudonym()}
        assert result.quarantine["reason"].to_list() == ["unresolved_subject"] * 3


def test_unresolvable_references_are_quarantined_and_the_lake_holds_nothing_of_them(
    tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "unresolved"
    _linked_batch(folder)
    _write(
        folder,
        "Observation.2.ndjson",
        [_obs(rid, s, component=[{"code": {"text": "c"}}]) for rid, s in UNRESOLVED.items()],
    )
    _write(
        folder,
        "Condition.ndjson",
        [
            {
                "resourceType": "Condition",
                "id": "cond-nobody",
                "subject": _by(NIR_OID, OTHER_NIR),
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
            }
        ],
    )
    slow, fast, _ = _both(folder, tmp_path)
    # the unresolved lines go back one by one: the per-record path quarantines them
    _assert_same(slow, fast, columnwise=3 + len(LINKED), per_record=len(UNRESOLVED) + 1)
    for result in (slow, fast):
        quarantine = result.quarantine
        assert quarantine["reason"].to_list() == ["unresolved_subject"] * (len(UNRESOLVED) + 1)
        assert all(
            m.startswith(("Observation.subject", "Condition.subject"))
            for m in quarantine["message"]
        )
        assert result.tables["observations"].height == len(LINKED)
        assert result.tables["conditions"].height == 0
        assert result.tables["observation_components"].height == 0
        assert result.tables["codings"].filter(pl.col("code") == "44054006").height == 0
        text = _text(result)
        assert not [v for v in VALUES if v in text]
    assert not [v for v in VALUES for r in caplog.records if v in r.getMessage()]


def test_an_identifier_only_earlier_deliveries_knew(tmp_path):
    """A national identifier names a person an earlier delivery brought; a local one resolves
    only against the Patients of its own delivery (identifiers never reach the lake)."""
    first, second = tmp_path / "first", tmp_path / "second"
    _write(first, "Patient.ndjson", [PATIENT])
    _write(
        second,
        "Observation.ndjson",
        [_obs("later-nir", _by(NIR_OID, SPACED)), _obs("later-ipp", _by(IPP_SYSTEM, IPP))],
    )
    settings = JsonIngestSettings(KEY, tmp_path / "quarantine")
    earlier = ingest_json_batch("a", first, settings)
    known = {
        rid: Subject(pseudonym, kind)
        for rid, pseudonym, kind in earlier.tables["patients"]
        .select("id", "subject_pseudonym", "subject_kind")
        .iter_rows()
    }
    slow, fast, _ = _both(second, tmp_path, known_subjects=known)
    _assert_same(slow, fast, columnwise=1, per_record=1)
    assert fast.tables["observations"]["subject_pseudonym"].to_list() == [_pseudonym()]
    assert fast.quarantine["reason"].to_list() == ["unresolved_subject"]
    # without the earlier delivery, the national one names nobody either
    alone = ingest_json_batch("b", second, settings)
    assert alone.quarantine["reason"].to_list() == ["unresolved_subject"] * 2
    assert alone.tables["observations"].height == 0


def test_provider_profiles_decide_what_is_national(tmp_path):
    """Under a profile with no national system, the NIR system is a local one: resolved when a
    Patient of the delivery carries it, to that Patient's provider-scoped pseudonym."""
    folder = tmp_path / "registry"
    _linked_batch(folder)
    provider = Provider("registry", national_identifier_systems=(), birth_date="none")
    slow, fast, _ = _both(folder, tmp_path, settings={"provider": provider})
    _assert_same(slow, fast, columnwise=6, per_record=3)
    patient = fast.tables["patients"].row(0, named=True)
    assert patient["subject_kind"] == "provider"
    observations = fast.tables["observations"]
    # by reference, by the urn:oid NIR and by the IPP the Patient carries: the same person
    assert observations.height == 3 and set(observations["subject_pseudonym"]) == {
        patient["subject_pseudonym"]
    }
    assert set(fast.quarantine["reason"]) == {"unresolved_subject"}


def test_resources_about_no_person_are_unaffected(tmp_path):
    folder = tmp_path / "nobody"
    _write(folder, "Patient.ndjson", [PATIENT])
    _write(
        folder,
        "Observation.ndjson",
        [
            _obs("group", {"reference": "Group/g1"}),
            _obs("device-by-identifier", _by("urn:example:devices", "D1", type="Device")),
            {k: v for k, v in _obs("no-subject", {}).items() if k != "subject"},
        ],
    )
    _write(
        folder,
        "Other.ndjson",
        [
            {"resourceType": "Organization", "id": "org-1", "name": "CHU"},
            {"resourceType": "Practitioner", "id": "pr-1", "name": [{"family": "X"}]},
            {"resourceType": "Device", "id": "dev-1", "status": "active"},
            {"resourceType": "Device", "id": "dev-2", "patient": _by(NIR_OID, NIR)},
        ],
    )
    slow, fast, _ = _both(folder, tmp_path)
    for result in (slow, fast):
        assert result.summary()["quarantined"] == 0
        assert result.tables["observations"]["subject_pseudonym"].null_count() == 3
        other = result.tables["other_resources"].sort("resource_type")
        assert other["subject_pseudonym"].null_count() == 3
        assert other.filter(pl.col("subject_pseudonym").is_not_null())[
            "resource_type"
        ].to_list() == ["Device"]
        assert unlinked_person_rows(result.tables) == dict.fromkeys(LINKED_TABLES, 0)


def test_an_erasure_removes_the_resources_referring_by_identifier(tmp_path):
    """The erasure recomputes the pseudonym from the NIR of the request and drops its rows at
    every ingestion boundary (without_excluded_people): nothing of the person is left, the
    resources naming them by identifier, their components and codings included."""
    folder = tmp_path / "erased"
    _linked_batch(folder)
    _write(
        folder,
        "Observation.2.ndjson",
        [_obs("bp", _by(NIR_OID, NIR), component=[{"code": {"coding": [{"code": "8480-6"}]}}])],
    )
    result = ingest_json_batch("b", folder, JsonIngestSettings(KEY, tmp_path / "q"))
    assert result.tables["observation_components"].height == 1
    erased = Pseudonymiser(KEY).subject_pseudonym(SPACED)  # as the rights request spells it
    kept = {
        t: f.collect()
        for t, f in without_excluded_people(
            {t: f.lazy() for t, f in result.tables.items()}, frozenset({erased})
        ).items()
    }
    assert all(frame.height == 0 for frame in kept.values()), {
        t: f.height for t, f in kept.items() if f.height
    }


# -- the check -----------------------------------------------------------------------------------
def test_the_check_counts_rows_about_a_person_without_pseudonym():
    """Pure: rows whose resources can only be about a person, rows in a person's encounter,
    other resources naming a Patient; not rows about a Group, a Device or nobody."""
    subject = "0" * 32
    tables = {
        "patients": pl.DataFrame({"id": ["p1", "p2"], "subject_pseudonym": [subject, None]}),
        "encounters": pl.DataFrame({"id": ["e1", "e2"], "subject_pseudonym": [subject, None]}),
        "observations": pl.DataFrame(
            {
                "id": ["o1", "o2", "o3", "o4"],
                "subject_pseudonym": [subject, None, None, None],
                "encounter_id": ["e1", "e1", "e2", None],  # o2: in a person's encounter
            }
        ),
        "immunizations": pl.DataFrame({"id": ["i1"], "subject_pseudonym": [None]}),
        "other_resources": pl.DataFrame(
            {
                "id": ["d1", "d2", "g1", "org"],
                "subject_pseudonym": [None, subject, None, None],
                "json": [
                    '{"patient": {"reference": "Patient/abc"}}',
                    '{"patient": {"reference": "Patient/abc"}}',
                    '{"subject": {"reference": "Group/g1"}}',
                    '{"name": "CHU"}',
                ],
            }
        ),
        "codings": pl.DataFrame({"resource_id": ["o2"], "code": ["x"]}),
    }
    assert unlinked_person_rows(tables) == {
        "patients": 1,
        "encounters": 0,
        "observations": 1,
        "immunizations": 1,
        "other_resources": 1,
    }


def test_the_check_is_a_blocking_check_of_every_table_with_a_subject():
    specs = {
        spec.asset_key.path[-1]: spec
        for spec in json_ingestion.check_specs
        if spec.name == LINKED_CHECK
    }
    assert set(specs) == set(LINKED_TABLES) and "observations" in specs
    assert all(spec.blocking for spec in specs.values())


def test_the_check_fails_on_what_the_bug_left(tmp_path):
    """The rows the bug made (no subject for resources naming their Patient by identifier):
    the check counts every one of them."""
    folder = tmp_path / "linked"
    _linked_batch(folder)
    result = ingest_json_batch("b", folder, JsonIngestSettings(KEY, tmp_path / "q"))
    unlinked = dict(result.tables)
    for table in ("observations", "immunizations"):
        unlinked[table] = result.tables[table].with_columns(
            subject_pseudonym=pl.lit(None, pl.String)
        )
    counts = unlinked_person_rows(unlinked)
    assert counts["observations"] == len(LINKED) and counts["immunizations"] == 1


def test_odd_identifier_references_get_the_same_result_both_ways(tmp_path, monkeypatch):
    """Shapes the column-wise path must not read differently: sent back, decided one by one."""
    monkeypatch.setattr(decoding, "MIN_PIECE", 1)  # every decodable line decoded column-wise
    folder = tmp_path / "odd"
    _write(folder, "Patient.ndjson", [PATIENT])
    lines = [
        orjson.dumps(_obs("number", {"identifier": {"system": NIR_OID, "value": int(NIR)}})),
        orjson.dumps(_obs("list", {"identifier": [{"system": NIR_OID, "value": NIR}]})),
        orjson.dumps(_obs("string", {"identifier": NIR})),
        orjson.dumps(_obs("extra", _by(NIR_OID, NIR, extension=[{"url": "u"}]))),
        orjson.dumps(
            _obs("period", {"identifier": {"system": NIR_OID, "value": NIR, "use": "official"}})
        ),
        orjson.dumps(_obs("padded", _by(IPP_SYSTEM, f" {IPP} "))),
        orjson.dumps(_obs("empty-system", _by("", NIR))),
        b'{"resourceType":"Observation","id":"dup","subject":{"identifier":{"system":"'
        + NIR_OID.encode()
        + b'","value":"x","value":"'
        + NIR.encode()
        + b'"}}}',
    ]
    (folder / "Observation.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    slow, fast, _ = _both(folder, tmp_path)
    _assert_same(slow, fast, columnwise=2, per_record=7)
    reasons = dict(
        zip(slow.quarantine["line"].to_list(), slow.quarantine["reason"].to_list(), strict=True)
    )
    assert reasons == {
        1: "unresolved_subject",  # a number is no identifier value
        2: "wrong_type",  # a list
        3: "wrong_type",  # a string
        6: "unresolved_subject",  # values match exactly: no trimming
        7: "unresolved_subject",  # no system
    }
    # an extension or a use beside the identifier, a repeated key (the last one wins): resolved
    assert set(fast.tables["observations"]["subject_pseudonym"]) == {_pseudonym()}
    assert fast.tables["observations"].height == 3


def test_the_check_passes_on_the_sample(sample_root, tmp_path):
    batch = sample_root / "landing" / "json" / "sample-seed7"
    result = ingest_json_batch("sample-seed7", batch, JsonIngestSettings(KEY, tmp_path / "q"))
    assert unlinked_person_rows(result.tables) == dict.fromkeys(LINKED_TABLES, 0)
