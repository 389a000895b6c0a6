"""A Synthea-style FHIR export, as US servers produce it, to test what our own sample does not.

Modelled on the public Synthea Bulk Data samples (CC0): US Core profiles and narrative,
race/ethnicity/birth-sex extensions, mother's maiden name and birth place extensions, SSN,
driver's licence and passport identifiers, official and maiden names with numeric suffixes,
geolocated addresses, conditional references to practitioners and organisations with display
names, base64 clinical notes in DocumentReference and DiagnosticReport, and resource types beyond
our typed tables (Organization, Practitioner, Location, Medication, Provenance). Patients carry
no French national identifier, so they get provider-scoped pseudonyms. Both forms are written:
Bulk Data NDJSON (``Type.000.ndjson``) and one transaction Bundle per patient with
``urn:uuid:`` references, as Synthea's default exporter does.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import uuid
from pathlib import Path

FAMILIES = (
    "Medhurst46",
    "Cummerata161",
    "Schmitt836",
    "Upton904",
    "Considine820",
    "Kulas532",
    "VonRueden376",
)
GIVEN = (
    "Sumiko254",
    "Larue605",
    "Devin82",
    "Anibal473",
    "Denis399",
    "Yvone889",
    "Marine542",
    "Lincoln623",
)
CITIES = (
    ("Emporia", "66801"),
    ("Haysville", "67216"),
    ("Overland Park", "66083"),
    ("Wichita", "67202"),
)
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _concept(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _when(day: dt.date, rng: random.Random) -> str:
    return f"{day.isoformat()}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}-05:00"


def _patient(rng: random.Random) -> tuple[dict, dict]:
    pid = _uuid(rng)
    family, maiden = rng.choice(FAMILIES), rng.choice(FAMILIES)
    given = [rng.choice(GIVEN), rng.choice(GIVEN)]
    birth = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randint(0, 30000))
    city, postal = rng.choice(CITIES)
    ssn = f"999-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"
    phone = f"555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"
    line = (
        f"{rng.randint(10, 999)} {rng.choice(('Abernathy Landing', 'Hahn Dam', 'Harber Viaduct'))}"
    )
    mother = f"{rng.choice(GIVEN)} {rng.choice(FAMILIES)}"
    resource = {
        "resourceType": "Patient",
        "id": pid,
        "meta": {"profile": [US_CORE + "us-core-patient"]},
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{given[0]} {family}</div>',
        },
        "extension": [
            {
                "url": US_CORE + "us-core-race",
                "extension": [
                    {
                        "url": "ombCategory",
                        "valueCoding": {
                            "system": "urn:oid:2.16.840.1.113883.6.238",
                            "code": "2106-3",
                            "display": "White",
                        },
                    },
                    {"url": "text", "valueString": "White"},
                ],
            },
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                "valueString": mother,
            },
            {"url": US_CORE + "us-core-birthsex", "valueCode": rng.choice("FM")},
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                "valueAddress": {"city": city, "state": "Kansas", "country": "US"},
            },
            {
                "url": "http://synthetichealth.github.io/synthea/quality-adjusted-life-years",
                "valueDecimal": rng.uniform(1, 80),
            },
        ],
        "identifier": [
            {"system": "https://github.com/synthetichealth/synthea", "value": pid},
            {
                "type": _concept(
                    "http://terminology.hl7.org/CodeSystem/v2-0203", "SS", "Social Security Number"
                ),
                "system": "http://hl7.org/fhir/sid/us-ssn",
                "value": ssn,
            },
            {
                "type": _concept(
                    "http://terminology.hl7.org/CodeSystem/v2-0203", "PPN", "Passport Number"
                ),
                "system": "http://standardhealthrecord.org/fhir/StructureDefinition/passportNumber",
                "value": f"X{rng.randint(10**7, 10**8 - 1)}X",
            },
        ],
        "name": [
            {"use": "official", "family": family, "given": given, "prefix": ["Mrs."]},
            {"use": "maiden", "family": maiden, "given": given},
        ],
        "telecom": [{"system": "phone", "value": phone, "use": "home"}],
        "gender": rng.choice(("female", "male")),
        "birthDate": birth.isoformat(),
        "address": [
            {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                        "extension": [
                            {"url": "latitude", "valueDecimal": rng.uniform(37, 39)},
                            {"url": "longitude", "valueDecimal": rng.uniform(-98, -94)},
                        ],
                    }
                ],
                "line": [line],
                "city": city,
                "state": "KS",
                "postalCode": postal,
                "country": "US",
            }
        ],
        "maritalStatus": _concept(
            "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "M", "Married"
        ),
        "multipleBirthBoolean": False,
        "communication": [
            {"language": _concept("urn:ietf:bcp:47", "en-US", "English (United States)")}
        ],
    }
    identity = {
        "family": family,
        "maiden": maiden,
        "given": given,
        "ssn": ssn,
        "phone": phone,
        "line": line,
        "mother": mother,
        "birth_date": birth.isoformat(),
        "id": pid,
    }
    return resource, identity


def synthea_style_export(folder: Path, patients: int = 6, seed: int = 1) -> list[dict]:
    """Write the export under ``folder`` (NDJSON files and ``bundles/``); return the identities."""
    rng = random.Random(f"synthea-style:{seed}")
    by_type: dict[str, list[dict]] = {}
    identities, bundles = [], []
    organization = {
        "resourceType": "Organization",
        "id": _uuid(rng),
        "name": "HOSPITAL OF KANSAS",
        "identifier": [{"system": "https://github.com/synthetichealth/synthea", "value": "org-1"}],
        "telecom": [{"system": "phone", "value": "316-555-0100"}],
    }
    practitioner = {
        "resourceType": "Practitioner",
        "id": _uuid(rng),
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "9999912345"}],
        "name": [{"family": "Quigley282", "given": ["Ernest565"], "prefix": ["Dr."]}],
        "gender": "male",
    }
    location = {
        "resourceType": "Location",
        "id": _uuid(rng),
        "name": "HOSPITAL OF KANSAS",
        "status": "active",
        "managingOrganization": {
            "reference": f"Organization/{organization['id']}",
            "display": "HOSPITAL OF KANSAS",
        },
    }
    medication = {
        "resourceType": "Medication",
        "id": _uuid(rng),
        "status": "active",
        "code": _concept(
            RXNORM, "860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"
        ),
    }
    for resource in (organization, practitioner, location, medication):
        by_type.setdefault(resource["resourceType"], []).append(resource)

    for _ in range(patients):
        patient, identity = _patient(rng)
        identities.append(identity)
        own = [patient]
        ref = f"Patient/{patient['id']}"
        name = f"{identity['given'][0]} {identity['family']}"
        for _ in range(rng.randint(2, 4)):
            day = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randint(0, 3000))
            start = _when(day, rng)
            encounter = {
                "resourceType": "Encounter",
                "id": _uuid(rng),
                "meta": {"profile": [US_CORE + "us-core-encounter"]},
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "type": [_concept(SNOMED, "185345009", "Encounter for symptom")],
                "subject": {"reference": ref, "display": f"Mrs. {name}"},
                "participant": [
                    {
                        "individual": {
                            "reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999912345",
                            "display": "Dr. Ernest565 Quigley282",
                        }
                    }
                ],
                "period": {"start": start, "end": start},
                "location": [
                    {
                        "location": {
                            "reference": f"Location?identifier=https://github.com/synthetichealth/synthea|{location['id']}",
                            "display": "HOSPITAL OF KANSAS",
                        }
                    }
                ],
                "serviceProvider": {
                    "reference": f"Organization?identifier=https://github.com/synthetichealth/synthea|{organization['id']}",
                    "display": "HOSPITAL OF KANSAS",
                },
            }
            eref = {"reference": f"Encounter/{encounter['id']}"}
            note = base64.b64encode(
                f"Patient {name}, phone {identity['phone']}. Seen for symptoms.".encode()
            ).decode()
            own += [
                encounter,
                {
                    "resourceType": "Condition",
                    "id": _uuid(rng),
                    "clinicalStatus": _concept(
                        "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "active",
                        "Active",
                    ),
                    "code": _concept(SNOMED, "44054006", "Diabetes mellitus type 2 (disorder)"),
                    "subject": {"reference": ref},
                    "encounter": eref,
                    "onsetDateTime": start,
                    "recordedDate": start,
                },
                {
                    "resourceType": "Observation",
                    "id": _uuid(rng),
                    "status": "final",
                    "category": [
                        _concept(
                            "http://terminology.hl7.org/CodeSystem/observation-category",
                            "laboratory",
                            "Laboratory",
                        )
                    ],
                    "code": _concept(LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"),
                    "subject": {"reference": ref},
                    "encounter": eref,
                    "effectiveDateTime": start,
                    "issued": start.replace("-05:00", ".123-05:00"),
                    "valueQuantity": {
                        "value": round(rng.uniform(5, 10), 2),
                        "unit": "%",
                        "system": "http://unitsofmeasure.org",
                        "code": "%",
                    },
                },
                {
                    "resourceType": "Observation",
                    "id": _uuid(rng),
                    "status": "final",
                    "code": _concept(LOINC, "72166-2", "Tobacco smoking status"),
                    "subject": {"reference": ref},
                    "encounter": eref,
                    "effectiveDateTime": start,
                    "valueCodeableConcept": _concept(
                        SNOMED, "266919005", "Never smoked tobacco (finding)"
                    ),
                },
                {
                    "resourceType": "Observation",
                    "id": _uuid(rng),
                    "status": "final",
                    "code": _concept(
                        LOINC, "85354-9", "Blood pressure panel with all children optional"
                    ),
                    "subject": {"reference": ref},
                    "encounter": eref,
                    "effectiveDateTime": start,
                    "component": [
                        {
                            "code": _concept(LOINC, "8462-4", "Diastolic Blood Pressure"),
                            "valueQuantity": {
                                "value": rng.randint(60, 95),
                                "unit": "mm[Hg]",
                                "code": "mm[Hg]",
                            },
                        },
                        {
                            "code": _concept(LOINC, "8480-6", "Systolic Blood Pressure"),
                            "valueQuantity": {
                                "value": rng.randint(100, 160),
                                "unit": "mm[Hg]",
                                "code": "mm[Hg]",
                            },
                        },
                    ],
                },
                {
                    "resourceType": "MedicationRequest",
                    "id": _uuid(rng),
                    "status": "active",
                    "intent": "order",
                    "medicationReference": {"reference": f"Medication/{medication['id']}"},
                    "subject": {"reference": ref},
                    "encounter": eref,
                    "authoredOn": start,
                    "requester": {
                        "reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999912345",
                        "display": "Dr. Ernest565 Quigley282",
                    },
                },
                {
                    "resourceType": "Procedure",
                    "id": _uuid(rng),
                    "status": "completed",
                    "code": _concept(SNOMED, "430193006", "Medication Reconciliation (procedure)"),
                    "subject": {"reference": ref},
                    "encounter": eref,
                    "performedPeriod": {"start": start, "end": start},
                },
                {
                    "resourceType": "DiagnosticReport",
                    "id": _uuid(rng),
                    "status": "final",
                    "code": _concept(LOINC, "34117-2", "History and physical note"),
                    "subject": {"reference": ref},
                    "encounter": eref,
                    "effectiveDateTime": start,
                    "issued": start,
                    "presentedForm": [{"contentType": "text/plain; charset=utf-8", "data": note}],
                },
                {
                    "resourceType": "DocumentReference",
                    "id": _uuid(rng),
                    "status": "superseded",
                    "type": _concept(LOINC, "34117-2", "History and physical note"),
                    "subject": {"reference": ref},
                    "date": start,
                    "author": [
                        {
                            "reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999912345",
                            "display": "Dr. Ernest565 Quigley282",
                        }
                    ],
                    "content": [
                        {"attachment": {"contentType": "text/plain; charset=utf-8", "data": note}}
                    ],
                    "context": {"encounter": [eref], "period": {"start": start, "end": start}},
                },
            ]
        own.append(
            {
                "resourceType": "Immunization",
                "id": _uuid(rng),
                "status": "completed",
                "vaccineCode": _concept(
                    CVX, "140", "Influenza, seasonal, injectable, preservative free"
                ),
                "patient": {"reference": ref},
                "occurrenceDateTime": _when(dt.date(2019, 10, 1), rng),
                "primarySource": True,
            }
        )
        own.append(
            {
                "resourceType": "AllergyIntolerance",
                "id": _uuid(rng),
                "clinicalStatus": _concept(
                    "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "active",
                    "Active",
                ),
                "code": _concept(SNOMED, "300916003", "Latex allergy (finding)"),
                "patient": {"reference": ref},
                "criticality": "low",
                "recordedDate": _when(dt.date(2016, 4, 2), rng),
            }
        )
        own.append(
            {
                "resourceType": "Provenance",
                "id": _uuid(rng),
                "target": [{"reference": ref}],
                "recorded": _when(dt.date(2024, 1, 1), rng),
                "agent": [
                    {
                        "who": {
                            "reference": f"Organization/{organization['id']}",
                            "display": "HOSPITAL OF KANSAS",
                        }
                    }
                ],
            }
        )
        for resource in own:
            by_type.setdefault(resource["resourceType"], []).append(resource)
        bundles.append(own)

    folder.mkdir(parents=True, exist_ok=True)
    for rtype, resources in sorted(by_type.items()):
        (folder / f"{rtype}.000.ndjson").write_text(
            "".join(json.dumps(r) + "\n" for r in resources)
        )
    (folder / "bundles").mkdir(exist_ok=True)
    for index, resources in enumerate(bundles[:2]):
        # Synthea's default output: a transaction Bundle whose references are urn:uuid fullUrls.
        ids = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{r['id']}" for r in resources}
        entries = [
            {
                "fullUrl": ids[f"{r['resourceType']}/{r['id']}"],
                "resource": json.loads(_replace_refs(json.dumps(r), ids)),
                "request": {"method": "POST", "url": r["resourceType"]},
            }
            for r in resources
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        (folder / "bundles" / f"patient-{index}.json").write_text(json.dumps(bundle))
    return identities


def _replace_refs(text: str, ids: dict[str, str]) -> str:
    for relative, urn in ids.items():
        text = text.replace(f'"reference": "{relative}"', f'"reference": "{urn}"')
    return text
