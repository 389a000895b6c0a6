"""Rows about a person that carry no subject pseudonym: an erasure would never find them.

The typed tables keep no subject reference, so which rows are about a person is read from what
the rows hold:

- every row of a table whose resources can only be about a person (``PERSON_TABLES``: a Patient,
  an Immunization's or an AllergyIntolerance's patient, a declared record's subject field);
- a row of another typed table recorded in a person's encounter (an Encounter of the batch that
  has a pseudonym): its subject may be a Group, a Device or a Location, the encounter says whose;
- an ``other_resources`` row whose JSON names a Patient as its subject, patient or beneficiary.

Rows about a Group, a Device or a Location, and resources about nobody (Organization,
Practitioner, Medication, a Device without patient), are not counted. Pure polars: no Dagster.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from hdh_assets.pseudonymisation.fhir import SUBJECT_FIELDS

SUBJECT = "subject_pseudonym"
PERSON_TABLES = frozenset({"patients", "immunizations", "allergy_intolerances", "declared_records"})


def _names_a_patient() -> pl.Expr:
    json = pl.col("json")
    return pl.any_horizontal(
        json.str.json_path_match(f"$.{name}.reference").str.starts_with("Patient/").fill_null(False)
        for name in SUBJECT_FIELDS
    )


def unlinked_person_rows(tables: Mapping[str, pl.DataFrame | pl.LazyFrame]) -> dict[str, int]:
    """Per table with a subject column, how many rows about a person have no pseudonym."""
    frames = {name: frame.lazy() for name, frame in tables.items()}
    columns = {name: set(frame.collect_schema().names()) for name, frame in frames.items()}
    encounters = frames.get("encounters")
    person_encounters = (
        encounters.filter(pl.col(SUBJECT).is_not_null()).select(pl.col("id").alias("_encounter"))
        if encounters is not None
        else pl.LazyFrame(schema={"_encounter": pl.String})
    )
    counts = {}
    for name, frame in frames.items():
        if SUBJECT not in columns[name]:
            continue  # codings, components: they hang off a resource row, counted there
        missing = frame.filter(pl.col(SUBJECT).is_null())
        if name == "other_resources":
            missing = missing.filter(_names_a_patient())
        elif name not in PERSON_TABLES:
            if "encounter_id" not in columns[name]:
                counts[name] = 0
                continue
            missing = missing.join(
                person_encounters.unique(), left_on="encounter_id", right_on="_encounter"
            )
        counts[name] = int(missing.select(pl.len()).collect().item())
    return counts
