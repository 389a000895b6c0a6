"""Claims assets: pseudonymised care events, one partition per month of (shifted) event date,
computed with Spark (billions of rows in production; a range of months runs as one Spark run)."""

import datetime as dt
from functools import reduce

import dagster as dg
import polars as pl
from dagster_pyspark import PySparkResource
from pyspark import StorageLevel
from pyspark.sql import functions as F

from hdh_assets import owners
from hdh_assets.claims.events import EVENT_SCHEMA, pseudonymise_claims
from hdh_assets.claims.schema import ClaimsEvents
from hdh_assets.landing.assets import landing_inventory_asset
from hdh_assets.landing.batches import ready_batches
from hdh_assets.validation import column_schema, spark_pandera_check
from resources.platform import HomeResource
from resources.pseudonymisation import DEMO_KEY_WARNING, PseudonymisationKeyResource

MONTHS = dg.MonthlyPartitionsDefinition(start_date="2021-01-01", end_offset=1)
EVENTS_KEY = dg.AssetKey(["claims", "events"])
SCHEMA_CHECK = "matches_published_schema"

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
        "Monthly partitions by shifted event date; a range of months runs as one run. Rows "
        "without a valid NIR or date go to quarantine/claims/<batch>/, never to the lake."
    ),
    partitions_def=MONTHS,
    backfill_policy=dg.BackfillPolicy.single_run(),
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
    parts, rejected_by_batch = [], {}
    for batch in batches:
        files = sorted(batch.path.rglob("*.parquet"))
        if not files:
            continue
        raw = spark.read.parquet(*[str(f) for f in files])
        events, rejected = pseudonymise_claims(raw, pseudonymiser, batch.name)
        parts.append(events.where((F.col("event_date") >= start) & (F.col("event_date") < end)))
        rejected_frame = pl.from_arrow(rejected.toArrow())
        rejected_by_batch[batch.name] = rejected_frame.height
        _quarantine_rejected(home.quarantine / "claims" / batch.name, rejected_frame)
    if parts:
        frame = reduce(lambda a, b: a.unionByName(b), parts).persist(StorageLevel.MEMORY_AND_DISK)
    else:
        frame = spark.createDataFrame(pl.DataFrame(schema=EVENT_SCHEMA).to_arrow())
    summary = frame.agg(
        F.count("*").alias("rows"),
        F.countDistinct("subject_pseudonym").alias("subjects"),
        F.min("event_date").alias("first"),
        F.max("event_date").alias("last"),
    ).collect()[0]
    context.log.info(
        f"{summary['rows']} events in {start:%Y-%m} .. {end - dt.timedelta(days=1):%Y-%m} "
        f"from {len(batches)} ready batches; {sum(rejected_by_batch.values())} rows quarantined"
    )
    check = spark_pandera_check(ClaimsEvents, frame, SCHEMA_CHECK, EVENTS_KEY)
    yield dg.Output(
        frame,
        metadata={
            "engine": "spark",
            "subjects": dg.MetadataValue.int(summary["subjects"]),
            "batches": dg.MetadataValue.json(sorted(rejected_by_batch)),
            "quarantined_rows_by_batch": dg.MetadataValue.json(rejected_by_batch),
            "date_range": dg.MetadataValue.text(
                f"{summary['first']} .. {summary['last']}" if summary["rows"] else "-"
            ),
        },
    )
    yield check
    frame.unpersist()


def _quarantine_rejected(folder, rejected: pl.DataFrame) -> None:
    """Keep rejected rows, with their reason, outside the lake; rewriting is idempotent."""
    target = folder / "rejected_rows.parquet"
    if rejected.is_empty():
        target.unlink(missing_ok=True)
        return
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / ".rejected_rows.parquet.partial"
    rejected.write_parquet(partial)
    partial.replace(target)


assets = [landed_claims_files, claims_events]
