"""Synthetic FHIR R4: Bulk Data NDJSON (one resource type per file) and a few Bundles.

The same people as the imaging sample, with an imaging encounter on each study's day, so the two
sources can be linked once pseudonymised.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections import defaultdict
from pathlib import Path

from hdh_assets.pseudonymisation.identifiers import INS_NIR_OID
from synthetic.dicom import StudyRecord
from synthetic.people import Person

ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
CCAM = "https://smt.esante.gouv.fr/terminologie-ccam"
UCUM = "http://unitsofmeasure.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

CONDITIONS = (
    ("E11.9", "Type 2 diabetes mellitus without complications", 0.25),
    ("I10", "Essential (primary) hypertension", 0.3),
    ("J45.9", "Asthma, unspecified", 0.1),
    ("M17.1", "Primary gonarthrosis, unilateral", 0.1),
)
PROCEDURES = {
    "CT": ("ZBQK002", "Scanographie du thorax"),
    "MR": ("ACQN001", "Remnographie de l'encéphale"),
}
RESOURCE_TYPES = (
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "Procedure",
)


def _id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _coding(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _quantity(value: float, unit: str) -> dict:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _observer(rng: random.Random, patient_ref: str, encounter: dict, when: str):
    """Observations of one encounter: LOINC code, then value[x], components or notes."""

    def observe(code: str, display: str, **values) -> dict:
        return {
            "resourceType": "Observation",
            "id": _id(rng),
            "status": "final",
            "code": _coding(LOINC, code, display),
            "subject": {"reference": patient_ref},
            "encounter": {"reference": f"Encounter/{encounter['id']}"},
            "effectiveDateTime": when,
            **values,
        }

    return observe


def patient_resource(person: Person, resource_id: str) -> dict:
    return {
        "resourceType": "Patient",
        "id": resource_id,
        "identifier": [
            {
                "use": "official",
                "type": {
                    "coding": [
                        {
                            "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                            "code": "INS-NIR",
                        }
                    ]
                },
                "system": f"urn:oid:{INS_NIR_OID}",
                "value": person.nir,
            },
            {
                "use": "usual",
                "system": "urn:oid:1.2.250.1.71.4.2.7.1",
                "value": person.hospital_patient_id,
            },
        ],
        "name": [
            {"use": "official", "family": person.family_name, "given": list(person.given_names)}
        ],
        "gender": "female" if person.sex == "F" else "male",
        "birthDate": person.birth_date.isoformat(),
        "address": [
            {
                "line": [person.address_line],
                "city": person.city,
                "postalCode": person.postal_code,
                "country": "FR",
            }
        ],
        "telecom": [
            {"system": "phone", "value": person.phone, "use": "mobile"},
            {"system": "email", "value": person.email},
        ],
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{person.family_name} '
            f"{' '.join(person.given_names)}</div>",
        },
    }


def _encounter(rng, patient_ref, day: dt.date, klass: str, reason: str) -> dict:
    start = dt.datetime.combine(day, dt.time(rng.randint(7, 18), rng.choice((0, 15, 30, 45))))
    end = start + (
        dt.timedelta(days=rng.randint(1, 6)) if klass == "IMP" else dt.timedelta(hours=1)
    )
    return {
        "resourceType": "Encounter",
        "id": _id(rng),
        "status": "finished",
        "class": {"system": ACT_CODE, "code": klass},
        "type": [{"text": reason}],
        "subject": {"reference": patient_ref},
        "period": {"start": start.isoformat() + "+01:00", "end": end.isoformat() + "+01:00"},
    }


def person_resources(
    person: Person, studies: list[StudyRecord], rng: random.Random
) -> dict[str, list[dict]]:
    """All resources of one person, by type."""
    out: dict[str, list[dict]] = defaultdict(list)
    patient_id = _id(rng)
    ref = f"Patient/{patient_id}"
    out["Patient"].append(patient_resource(person, patient_id))
    encounters = []
    for study in studies:
        encounter = _encounter(rng, ref, study.study_date, "AMB", f"Imagerie {study.modality}")
        encounters.append(encounter)
        code, display = PROCEDURES[study.modality]
        out["Procedure"].append(
            {
                "resourceType": "Procedure",
                "id": _id(rng),
                "status": "completed",
                "code": _coding(CCAM, code, display),
                "subject": {"reference": ref},
                "encounter": {"reference": f"Encounter/{encounter['id']}"},
                "performedDateTime": encounter["period"]["start"],
                "note": [{"text": f"Patient {person.family_name} coopérant."}],
            }
        )
    base = dt.date(2023, 1, 1)
    for _ in range(rng.randint(1, 3)):
        day = base + dt.timedelta(days=rng.randint(0, 729))
        encounters.append(
            _encounter(rng, ref, day, rng.choice(("AMB", "AMB", "IMP")), "Consultation")
        )
    out["Encounter"].extend(encounters)

    first = encounters[0]
    for code, display, prevalence in CONDITIONS:
        if rng.random() < prevalence:
            out["Condition"].append(
                {
                    "resourceType": "Condition",
                    "id": _id(rng),
                    "clinicalStatus": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                "code": "active",
                            }
                        ]
                    },
                    "code": _coding(ICD10, code, display),
                    "subject": {"reference": ref},
                    "encounter": {"reference": f"Encounter/{first['id']}"},
                    "onsetDateTime": first["period"]["start"][:10],
                    "recordedDate": first["period"]["start"][:10],
                }
            )
            if code == "E11.9":
                out["MedicationRequest"].append(
                    {
                        "resourceType": "MedicationRequest",
                        "id": _id(rng),
                        "status": "active",
                        "intent": "order",
                        "medicationCodeableConcept": _coding(ATC, "A10BA02", "metformin"),
                        "subject": {"reference": ref},
                        "authoredOn": first["period"]["start"][:10],
                        "dosageInstruction": [{"text": "1000 mg deux fois par jour"}],
                    }
                )
    diabetic = any(c["code"]["coding"][0]["code"] == "E11.9" for c in out["Condition"])
    for encounter in encounters:
        when = encounter["period"]["start"]
        observe = _observer(rng, ref, encounter, when)
        out["Observation"].append(
            observe(
                "29463-7",
                "Body weight",
                valueQuantity=_quantity(round(rng.uniform(48, 110), 1), "kg"),
            )
        )
        out["Observation"].append(
            observe(
                "85354-9",
                "Blood pressure panel",
                component=[
                    {
                        "code": _coding(LOINC, "8480-6", "Systolic blood pressure"),
                        "valueQuantity": _quantity(rng.randint(100, 170), "mm[Hg]"),
                    },
                    {
                        "code": _coding(LOINC, "8462-4", "Diastolic blood pressure"),
                        "valueQuantity": _quantity(rng.randint(60, 100), "mm[Hg]"),
                    },
                ],
            )
        )
        if diabetic:
            out["Observation"].append(
                observe(
                    "4548-4",
                    "Hemoglobin A1c/Hemoglobin.total in Blood",
                    valueQuantity=_quantity(round(rng.uniform(5.8, 9.5), 1), "%"),
                    note=[{"text": f"Contrôle pour {person.given_names[0]} {person.family_name}"}],
                )
            )
    if rng.random() < 0.5:
        out["Observation"].append(
            {
                "resourceType": "Observation",
                "id": _id(rng),
                "status": "final",
                "code": _coding(LOINC, "72166-2", "Tobacco smoking status"),
                "subject": {"reference": ref},
                "effectiveDateTime": first["period"]["start"],
                "valueCodeableConcept": _coding(
                    "http://snomed.info/sct", "266919005", "Never smoked tobacco"
                ),
            }
        )
    return out


def dump_line(resource: dict) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def write_fhir(
    people: list[Person],
    studies_by_person: dict[int, list[StudyRecord]],
    folder: Path,
    seed: int,
    bundles: int = 3,
) -> dict[str, int]:
    """Write ``<Type>.ndjson`` files and ``bundles/``; return resources written per type."""
    rng = random.Random(f"hdh-fhir:{seed}")
    by_type: dict[str, list[dict]] = defaultdict(list)
    per_person = []
    for person in people:
        resources = person_resources(person, studies_by_person.get(person.index, []), rng)
        per_person.append(resources)
        for kind, items in resources.items():
            by_type[kind].extend(items)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for kind in RESOURCE_TYPES:
        items = by_type.get(kind, [])
        (folder / f"{kind}.ndjson").write_text(
            "".join(dump_line(r) + "\n" for r in items), encoding="utf-8"
        )
        counts[kind] = len(items)
    bundle_dir = folder / "bundles"
    bundle_dir.mkdir(exist_ok=True)
    for number, bundle_type in zip(
        range(bundles), ("collection", "transaction", "searchset"), strict=False
    ):
        # Bundles repeat a few people the NDJSON already holds: providers send overlapping exports.
        resources = per_person[number % len(per_person)]
        entries = []
        for kind in ("Patient", "Encounter", "Observation"):
            for resource in resources.get(kind, [])[:2]:
                entry = {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}
                if bundle_type == "transaction":
                    entry["request"] = {"method": "PUT", "url": f"{kind}/{resource['id']}"}
                if bundle_type == "searchset":
                    entry["search"] = {"mode": "match"}
                entries.append(entry)
        bundle = {"resourceType": "Bundle", "id": _id(rng), "type": bundle_type, "entry": entries}
        if bundle_type == "searchset":
            bundle["total"] = len(entries)
        (bundle_dir / f"bundle-{number + 1:03d}-{bundle_type}.json").write_text(
            json.dumps(bundle, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        counts.setdefault("Bundle", 0)
        counts["Bundle"] += 1
    return counts
