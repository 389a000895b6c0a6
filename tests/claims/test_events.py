"""Claims pseudonymisation on Spark: one pseudonym per person, shifted dates, rejected rows
kept aside, and the published schema checked in Spark with the pandera model."""

import datetime as dt

import polars as pl
import pytest

from hdh_assets.claims.events import months_touched, pseudonymise_claims
from hdh_assets.claims.schema import ClaimsEvents
from hdh_assets.pseudonymisation import Pseudonymiser
from hdh_assets.validation import spark_pandera_check

KEY = bytes(range(32, 64))
GOOD = "269054958815780"
RAW = pl.DataFrame(
    {
        "event_id": [1, 2, 3, 4, 5],
        "nir": [GOOD, "2 69 05 49 588 157 80", "269054958815781", None, GOOD],
        "event_date": [
            dt.date(2024, 1, 31),
            dt.date(2024, 2, 1),
            dt.date(2024, 1, 1),
            dt.date(2024, 1, 1),
            None,
        ],
        "care_type": ["consultation", "pharmacy", "biology", "imaging", "nursing"],
        "code": ["G", "3400936403114", "0552", "ZBQK002", "AMI"],
        "amount_eur": [25.0, 12.5, 8.1, 70.0, 9.0],
    }
)


def _polars(frame) -> pl.DataFrame:
    return pl.from_arrow(frame.toArrow())


@pytest.mark.spark
def test_events_are_pseudonymised_and_shifted_per_subject(spark):
    p = Pseudonymiser(KEY)
    events, rejected = pseudonymise_claims(spark.createDataFrame(RAW.to_arrow()), p, "b1")
    assert spark_pandera_check(ClaimsEvents, events, "schema").passed
    events = _polars(events).sort("source_event_id")
    rejected = _polars(rejected).sort("event_id")
    pseudonym = p.subject_pseudonym(GOOD)
    offset = p.date_offset_days(pseudonym)
    assert events["subject_pseudonym"].to_list() == [pseudonym, pseudonym]  # formatting ignored
    assert events["event_date"].to_list() == [
        dt.date(2024, 1, 31) + dt.timedelta(days=offset),
        dt.date(2024, 2, 1) + dt.timedelta(days=offset),
    ]
    assert (
        events["event_date"].dt.truncate("1mo").dt.strftime("%Y-%m-%d") == events["month"]
    ).all()
    assert "nir" not in events.columns
    ClaimsEvents.validate(events)
    assert dict(zip(rejected["event_id"], rejected["reject_reason"], strict=True)) == {
        3: "invalid_nir",
        4: "missing_nir",
        5: "missing_event_date",
    }


@pytest.mark.spark
def test_rows_in_equal_rows_out_plus_rejected(spark):
    events, rejected = pseudonymise_claims(
        spark.createDataFrame(RAW.to_arrow()), Pseudonymiser(KEY), "b1"
    )
    assert events.count() + rejected.count() == RAW.height


@pytest.mark.spark
def test_the_spark_schema_check_reports_columns_and_rules_never_values(spark):
    p = Pseudonymiser(KEY)
    events, _ = pseudonymise_claims(spark.createDataFrame(RAW.to_arrow()), p, "b1")
    from pyspark.sql import functions as F

    spoiled = events.withColumn("amount_eur", F.lit(-1.0)).withColumn("nir", F.lit(GOOD))
    result = spark_pandera_check(ClaimsEvents, spoiled, "schema")
    assert not result.passed
    failing = result.metadata["failing_checks"].value
    assert {"column": "amount_eur", "check": "greater_than_or_equal_to", "rows": 2} in failing
    assert {"column": "nir", "check": "column_in_schema", "rows": None} in failing
    assert GOOD not in str(result.metadata)


def test_months_touched_covers_every_possible_shift():
    assert months_touched(dt.date(2023, 1, 15), dt.date(2024, 12, 31), 365) == (
        "2022-01-01",
        "2025-12-01",
    )
