"""Claims assets: pseudonymised care events, one partition per month of (shifted) event date,
computed with Spark (billions of rows in production).

A run over months [start, end) reads, from each ready batch, only the files and row groups whose
raw dates can shift into them (``events.files_for_window``), and quarantines the rows it cannot
attribute by raw month, the undated ones once per batch (``quarantine``). How many months one run
covers in a backfill is a setting, ``HDH_CLAIMS_MONTHS_PER_RUN`` (``claims_backfill_policy``).
"""

import datetime as dt
import os
import time
from collections.abc import Mapping
from functools import reduce

import dagster as dg
import polars as pl
from dagster_pyspark import PySparkResource
from pyspark.sql import functions as F

from hdh_assets import owners
from hdh_assets.claims.events import (
    EVENT_SCHEMA,
    claims_files,
    files_for_window,
    pseudonymise_claims,
    raw_window,
    read_undated,
    read_window,
    undated_fingerprint,
    window_claims,
)
from hdh_assets.claims.quarantine import (
    REJECTED_SCHEMA,
    clear_undated,
    quarantine_months,
    quarantine_undated,
)
from hdh_assets.claims.schema import ClaimsEvents
from hdh_assets.landing.assets import landing_inventory_asset
from hdh_assets.landing.batches import ready_batches
from hdh_assets.validation import column_schema, spark_schema_check
from resources.platform import HomeResource
from resources.pseudonymisation import DEMO_KEY_WARNING, PseudonymisationKeyResource
from resources.spark import session_placement

MONTHS = dg.MonthlyPartitionsDefinition(start_date="2021-01-01", end_offset=1)
EVENTS_KEY = dg.AssetKey(["claims", "events"])
SCHEMA_CHECK = "matches_published_schema"
MONTHS_PER_RUN_ENV = "HDH_CLAIMS_MONTHS_PER_RUN"


def claims_backfill_policy(env: Mapping[str, str] | None = None) -> dg.BackfillPolicy:
    """How a backfill of ``claims/events`` is cut into runs, from ``HDH_CLAIMS_MONTHS_PER_RUN``
    read when the definitions load: 0 or unset, the whole range in one run (each landed file
    read by one run, the largest run); N > 0, runs of at most N months (smaller runs that fail
    and retry alone, but each reads its months widened by the maximum date shift both ways)."""
    env = os.environ if env is None else env
    value = env.get(MONTHS_PER_RUN_ENV, "").strip() or "0"
    try:
        months = int(value)
    except ValueError:
        raise ValueError(
            f"{MONTHS_PER_RUN_ENV} must be a whole number of months, not {value!r}"
        ) from None
    if months < 0:
        raise ValueError(f"{MONTHS_PER_RUN_ENV} must be 0 (one run) or a positive number")
    if months == 0:
        return dg.BackfillPolicy.single_run()
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=months)


landed_claims_files = landing_inventory_asset(
    source="claims",
    group="claims",
    owners=[owners.CLAIMS, owners.PLATFORM],
    kinds={"parquet"},
    expected_formats={"parquet"},
    description=(
        "Inventory of one landed claims extract (landing/claims/<batch>/): the SNDS-like event "
        "files, one row per file with content hash and size."
    ),
)


@dg.asset(
    key=EVENTS_KEY,
    group_name="claims",
    owners=[owners.CLAIMS, owners.DATA_REFERENTS],
    kinds={"spark", "parquet"},
    description=(
        "SNDS-like care events (consultations, pharmacy, biology, imaging, stays, nursing) from "
        "every ready claims batch, with the national identifier replaced by the subject pseudonym "
        "and dates shifted by the subject's offset (the same as in imaging and clinical data). "
        "Monthly partitions by shifted event date; a run over a range of months reads only the "
        "landed files and row groups whose raw dates can shift into it, and a backfill runs "
        f"{MONTHS_PER_RUN_ENV} months per run (0: all in one). Rows without a valid NIR go to "
        "quarantine/claims/<batch>/rejected-YYYY-MM.parquet by raw month, rows without a date to "
        "rejected-undated-*.parquet once per batch; never to the lake."
    ),
    partitions_def=MONTHS,
    backfill_policy=claims_backfill_policy(),
    deps=[dg.AssetDep(landed_claims_files.key, partition_mapping=dg.AllPartitionMapping())],
    metadata={
        "partition_column": "month",
        "subject_column": "subject_pseudonym",
        "dagster/column_schema": column_schema(ClaimsEvents),
    },
    check_specs=[
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset=EVENTS_KEY,
            blocking=True,
            description="strict pandera schema: pseudonym format, care types, amounts >= 0, "
            "no column beyond the published ones (so no raw identifier)",
        )
    ],
)
def claims_events(
    context: dg.AssetExecutionContext,
    hdh_home: HomeResource,
    pseudonymisation: PseudonymisationKeyResource,
    pyspark: PySparkResource,
):
    home = hdh_home.home
    pseudonymiser = pseudonymisation.pseudonymiser()
    if pseudonymisation.uses_demo_key:
        context.log.warning(DEMO_KEY_WARNING)
    spark = pyspark.spark_session
    window = context.partition_time_window
    start, end = window.start.date(), window.end.date()
    batches = ready_batches(home.landing_for("claims"))
    max_shift = pseudonymiser.max_date_shift_days
    parts, quarantined, files_read, files_landed = [], {}, 0, 0
    seconds = {"subjects": 0.0, "quarantine": 0.0}  # where a run's time goes, beside the write
    for batch in batches:
        files = claims_files(batch.path)
        if not files:
            continue
        files_landed += len(files)
        folder = home.quarantine / "claims" / batch.name
        wanted = files_for_window(files, start, end, max_shift)
        files_read += len(wanted)
        rejected_rows = 0
        if wanted:
            raw = read_window(spark, wanted, *raw_window(start, end, max_shift))
            # Not persisted: measured at 5 M rows on the cluster, caching the window cost more
            # (the executors spill it) than reading the pruned files again for each pass.
            began = time.perf_counter()
            _, events, rejected = window_claims(raw, pseudonymiser, batch.name, start, end)
            seconds["subjects"] += time.perf_counter() - began
            parts.append(events)
            # the rows to quarantine, per month: only those with a refused NIR are read again
            began = time.perf_counter()
            rejected_rows = sum(
                quarantine_months(folder, pl.from_arrow(rejected.toArrow()), start, end).values()
            )
            seconds["quarantine"] += time.perf_counter() - began
        else:
            quarantine_months(folder, pl.DataFrame(schema=REJECTED_SCHEMA), start, end)
        if any(f.may_hold_undated for f in files):
            undated, _ = quarantine_undated(
                folder,
                undated_fingerprint(files),
                _undated_rejects(spark, files, pseudonymiser, batch.name),
            )
        else:
            undated = 0
            clear_undated(folder)
        quarantined[batch.name] = {"in_these_months": rejected_rows, "undated": undated}
    if parts:
        frame = reduce(lambda a, b: a.unionByName(b), parts)
    else:
        frame = spark.createDataFrame(pl.DataFrame(schema=EVENT_SCHEMA).to_arrow())
    # the summary and the schema check's rules in one pass over the events
    schema_check = spark_schema_check(ClaimsEvents, frame)
    began = time.perf_counter()
    summary = frame.agg(
        F.count("*").alias("rows"),
        F.countDistinct("subject_pseudonym").alias("subjects"),
        F.min("event_date").alias("first"),
        F.max("event_date").alias("last"),
        *schema_check.aggregations(),
    ).collect()[0]
    seconds["summary_and_check"] = time.perf_counter() - began
    context.log.info(
        f"{summary['rows']} events in {start:%Y-%m} .. {end - dt.timedelta(days=1):%Y-%m} "
        f"from {len(batches)} ready batches, reading {files_read} of {files_landed} landed files; "
        f"quarantine: {sum(q['in_these_months'] for q in quarantined.values())} rows dated in "
        f"these months, {sum(q['undated'] for q in quarantined.values())} undated"
    )
    check = schema_check.result(summary, SCHEMA_CHECK, EVENTS_KEY)
    yield dg.Output(
        frame,
        metadata={
            "engine": "spark",
            **session_placement(spark),
            "subjects": dg.MetadataValue.int(summary["subjects"]),
            "batches": dg.MetadataValue.json(sorted(quarantined)),
            "quarantined_rows_by_batch": dg.MetadataValue.json(quarantined),
            "landed_files_read": dg.MetadataValue.int(files_read),
            "landed_files": dg.MetadataValue.int(files_landed),
            # the Spark passes before the write (which the lake's write_seconds measures)
            "seconds_by_pass": dg.MetadataValue.json(
                {name: round(value, 1) for name, value in seconds.items()}
            ),
            "date_range": dg.MetadataValue.text(
                f"{summary['first']} .. {summary['last']}" if summary["rows"] else "-"
            ),
        },
    )
    yield check


def _undated_rejects(spark, files, pseudonymiser, batch: str):
    """Reads the batch's undated rows when called: only when their quarantine is not current."""

    def read() -> pl.DataFrame:
        _, rejected = pseudonymise_claims(read_undated(spark, files), pseudonymiser, batch)
        return pl.from_arrow(rejected.toArrow())

    return read


assets = [landed_claims_files, claims_events]
