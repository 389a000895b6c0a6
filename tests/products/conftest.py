"""A small lake of the tables the example products read, written as the platform lays it out
(hive folders, one Parquet file per partition), from the deterministic generators."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from synthetic.claims import claims_chunk

PEOPLE = 60
SQL_DIR = Path(__file__).resolve().parents[2] / "dbt_like_sql"


def pseudonym(i: int) -> str:
    return hashlib.sha256(f"person-{i}".encode()).hexdigest()


def _write(lake: Path, asset: str, frame: pl.DataFrame, partition: str | None = None) -> None:
    """One asset; with ``partition``, one hive folder per value of that column."""
    table = lake.joinpath(*asset.split("/"))
    if partition is None:
        table.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(table / "part-00000.parquet")
        return
    for (value,), part in frame.partition_by(partition, as_dict=True).items():
        folder = table / f"{partition}={value}"
        folder.mkdir(parents=True, exist_ok=True)
        part.drop(partition).write_parquet(folder / "part-00000.parquet")


def claims_events(rows: int = 20_000, seed: int = 5) -> pl.DataFrame:
    nirs = pl.Series("nir", [f"person-{i}" for i in range(PEOPLE)])
    raw = claims_chunk(nirs, seed, 0, 0, rows)
    mapping = {f"person-{i}": pseudonym(i) for i in range(PEOPLE)}
    return raw.select(
        pl.col("event_id").alias("source_event_id"),
        pl.col("nir").replace_strict(mapping).alias("subject_pseudonym"),
        "event_date",
        "care_type",
        "code",
        "amount_eur",
        pl.lit("b1").alias("batch"),
        pl.col("event_date").dt.truncate("1mo").dt.strftime("%Y-%m-%d").alias("month"),
    )


def clinical_tables(seed: int = 3) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    utc = pl.Datetime("us", "UTC")
    start = dt.datetime(2022, 1, 1, tzinfo=dt.UTC)
    patients = pl.DataFrame(
        {
            "id": [f"pat-{i}" for i in range(PEOPLE)],
            "subject_pseudonym": [pseudonym(i) for i in range(PEOPLE)],
            "gender": rng.choice(["male", "female", "unknown"], PEOPLE).tolist(),
            "birth_year": rng.integers(1930, 2010, PEOPLE).astype(np.int32).tolist(),
            "batch": ["b1"] * PEOPLE,
        }
    )
    codes = [
        ("http://snomed.info/sct", "44054006"),
        ("http://hl7.org/fhir/sid/icd-10", "E11.9"),
        ("http://hl7.org/fhir/sid/icd-10", "I10"),
        ("http://snomed.info/sct", "38341003"),
    ]
    n = 150
    picks = rng.integers(0, len(codes), n)
    onset = [start + dt.timedelta(days=int(d)) for d in rng.integers(0, 900, n)]
    conditions = pl.DataFrame(
        {
            "id": [f"cond-{i}" for i in range(n)],
            "subject_pseudonym": [pseudonym(int(i)) for i in rng.integers(0, PEOPLE, n)],
            "code_system": [codes[p][0] for p in picks],
            "code": [codes[p][1] for p in picks],
            "onset_at": [None if i % 7 == 0 else o for i, o in enumerate(onset)],
            "recorded_at": onset,
            "batch": ["b1"] * n,
        },
        schema_overrides={"onset_at": utc, "recorded_at": utc},
    )
    m = 400
    loinc = rng.choice(["4548-4", "8480-6", "72166-2"], m)
    observations = pl.DataFrame(
        {
            "id": [f"obs-{i}" for i in range(m)],
            "subject_pseudonym": [pseudonym(int(i)) for i in rng.integers(0, PEOPLE, m)],
            "code_system": ["http://loinc.org"] * m,
            "code": loinc.tolist(),
            "effective_at": [start + dt.timedelta(hours=int(h)) for h in rng.integers(0, 20000, m)],
            "value_quantity": [
                None if i % 11 == 0 else float(round(v, 1))
                for i, v in enumerate(rng.uniform(4.5, 12.0, m))
            ],
            "batch": ["b1"] * m,
        },
        schema_overrides={"effective_at": utc},
    )
    s = 80
    series = pl.DataFrame(
        {
            "series_instance_uid": [f"2.25.{i}" for i in range(s)],
            "study_instance_uid": [f"2.25.9{i // 2}" for i in range(s)],
            "subject_pseudonym": [pseudonym(int(i)) for i in rng.integers(0, 12, s)],
            "modality": rng.choice(["CT", "MR"], s).tolist(),
            "study_date": [
                dt.date(2023, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 90, s)
            ],
        }
    )
    return {
        "clinical/patients": patients,
        "clinical/conditions": conditions,
        "clinical/observations": observations,
        "imaging/dicom_series": series,
    }


def write_lake(lake: Path) -> None:
    _write(lake, "claims/events", claims_events(), partition="month")
    for asset, frame in clinical_tables().items():
        _write(lake, asset, frame, partition="batch" if asset.startswith("clinical") else None)


@pytest.fixture
def product_lake(hdh_home) -> Path:
    write_lake(hdh_home.lake)
    return hdh_home.lake
