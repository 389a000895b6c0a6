"""The first data product: imaging studies linked to clinical encounters by subject pseudonym.

A study links to the encounters of the same person within a day of it (both dates shifted by
the same per-subject offset, so the interval is the true one). It proves the two sources share
pseudonyms; the SQL products build on the same tables.
"""

import dagster as dg
import polars as pl

from hdh_assets import owners
from hdh_assets.automation import follows_upstream
from hdh_assets.validation import documented_columns

MAX_DAYS_APART = 1


def link_studies_to_encounters(studies: pl.DataFrame, encounters: pl.DataFrame) -> pl.DataFrame:
    """One row per (study, encounter) of the same subject at most MAX_DAYS_APART days apart."""
    enc = encounters.select(
        pl.col("id").alias("encounter_id"),
        "subject_pseudonym",
        pl.col("class_code").alias("encounter_class"),
        pl.col("period_start").dt.date().alias("encounter_date"),
    )
    joined = studies.select(
        "study_instance_uid", "subject_pseudonym", "study_date", pl.col("modalities")
    ).join(enc, on="subject_pseudonym", how="inner")
    return (
        joined.with_columns(
            (pl.col("encounter_date") - pl.col("study_date")).dt.total_days().alias("days_apart")
        )
        .filter(pl.col("days_apart").abs() <= MAX_DAYS_APART)
        .sort("study_date", "study_instance_uid", "encounter_id")
    )


@dg.asset(
    key=["products", "imaging_clinical_linkage"],
    group_name="products",
    owners=[owners.DATA_REFERENTS],
    kinds={"polars", "parquet"},
    ins={
        "studies": dg.AssetIn(["imaging", "dicom_studies"]),
        "encounters": dg.AssetIn(["clinical", "encounters"]),
    },
    automation_condition=follows_upstream(),
    description=(
        "Imaging studies joined with the clinical encounters of the same person (subject "
        "pseudonym) within a day: proof that DICOM and FHIR link through one pseudonym and one "
        "date offset per person. Pseudonymised, row-level: a product for approved projects."
    ),
    metadata={
        "subject_column": "subject_pseudonym",
        "dagster/column_schema": documented_columns(
            {
                "study_instance_uid": ("string", "pseudonymised Study Instance UID"),
                "subject_pseudonym": ("string", "keyed pseudonym of the person"),
                "study_date": ("date", "shifted study date"),
                "modalities": ("list[string]", "modalities of the study"),
                "encounter_id": ("string", "remapped Encounter id"),
                "encounter_class": ("string", "encounter class (AMB, IMP, ...)"),
                "encounter_date": ("date", "shifted start date of the encounter"),
                "days_apart": ("int", "encounter date minus study date, in days"),
            }
        ),
    },
)
def imaging_clinical_linkage(studies: pl.DataFrame, encounters: pl.DataFrame) -> dg.Output:
    linked = link_studies_to_encounters(studies, encounters.drop("batch", strict=False))
    linked_studies = linked["study_instance_uid"].n_unique()
    return dg.Output(
        linked,
        metadata={
            "studies": studies.height,
            "studies_linked": linked_studies,
            "share_linked": round(linked_studies / studies.height, 3) if studies.height else 0.0,
            "subjects_linked": linked["subject_pseudonym"].n_unique(),
        },
    )


assets = [imaging_clinical_linkage]
