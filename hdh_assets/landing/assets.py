"""The landed-files inventory asset, built once per source by its domain."""

import dagster as dg
import polars as pl

from hdh_assets.landing.inventory import LandedFiles, inventory_batch
from hdh_assets.landing.partitions import BATCH_PARTITIONS
from hdh_assets.validation import column_schema
from resources.platform import HomeResource
from resources.pseudonymisation import DEMO_KEY_WARNING

INVENTORY_CHECK = "recognised_formats"


def landed_batch(
    context: dg.AssetExecutionContext, hdh_home: HomeResource, source: str, key_resource=None
):
    """The folder of the batch this run ingests; warns when the demo key is in use."""
    batch = context.partition_key
    folder = hdh_home.home.landing_for(source) / batch
    if not folder.is_dir():
        raise dg.Failure(f"landed batch '{batch}' not found under landing/{source}/")
    if key_resource is not None and key_resource.uses_demo_key:
        context.log.warning(DEMO_KEY_WARNING)
    return batch, folder


def landing_inventory_asset(
    *,
    source: str,
    group: str,
    owners: list[str],
    kinds: set[str],
    expected_formats: set[str],
    description: str,
) -> dg.AssetsDefinition:
    """``<group>/landed_files``: one row per file of a batch, named by content hash."""
    key = dg.AssetKey([group, "landed_files"])

    @dg.asset(
        key=key,
        group_name=group,
        owners=owners,
        kinds=kinds | {"parquet", "polars"},
        description=description,
        partitions_def=BATCH_PARTITIONS[source],
        metadata={
            "partition_column": "batch",
            "landing_source": source,
            "dagster/column_schema": column_schema(LandedFiles),
        },
        check_specs=[
            dg.AssetCheckSpec(
                INVENTORY_CHECK,
                asset=key,
                description=f"every file is one of the formats this source accepts: "
                f"{', '.join(sorted(expected_formats))} (others will be quarantined at ingestion)",
            )
        ],
    )
    def landed_files(context: dg.AssetExecutionContext, hdh_home: HomeResource):
        batch, folder = landed_batch(context, hdh_home, source)
        frame = inventory_batch(batch, folder)
        by_format = dict(frame.group_by("format").len().sort("format").iter_rows())
        unexpected = frame.filter(~pl.col("format").is_in(sorted(expected_formats)))
        yield dg.Output(
            frame.drop("batch"),
            metadata={
                "files_by_format": dg.MetadataValue.json(by_format),
                "total_bytes": dg.MetadataValue.int(int(frame["bytes"].sum() or 0)),
                "distinct_contents": dg.MetadataValue.int(frame["file_sha256"].n_unique()),
            },
        )
        yield dg.AssetCheckResult(
            check_name=INVENTORY_CHECK,
            passed=unexpected.is_empty(),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "unexpected_files": dg.MetadataValue.int(unexpected.height),
                "unexpected_formats": dg.MetadataValue.json(
                    dict(unexpected.group_by("format").len().sort("format").iter_rows())
                ),
            },
        )

    return landed_files
