"""GDPR assets: the subject index (requests, processing and proofs arrive with issue #6)."""

import dagster as dg
import polars as pl

from hdh_assets import owners
from hdh_assets.gdpr.subject_index import IndexedAsset, build_subject_index
from hdh_assets.validation import documented_columns
from resources.platform import HomeResource

SUBJECT_INDEX_KEY = dg.AssetKey(["gdpr", "subject_index"])


def _meta(asset: dg.AssetsDefinition, key: dg.AssetKey, name: str):
    value = asset.specs_by_key[key].metadata.get(name)
    return getattr(value, "value", value)


def indexed_assets(
    assets: list[dg.AssetsDefinition],
) -> list[tuple[dg.AssetKey, IndexedAsset, bool]]:
    found = []
    for asset in assets:
        for key in asset.keys:
            column = _meta(asset, key, "subject_column")
            if not column:
                continue
            partitioned = asset.partitions_def is not None
            partition_column = (
                (_meta(asset, key, "partition_column") or "partition") if partitioned else None
            )
            found.append(
                (key, IndexedAsset(key.to_user_string(), column, partition_column), partitioned)
            )
    return found


def subject_index_asset(assets: list[dg.AssetsDefinition]) -> dg.AssetsDefinition:
    sources = indexed_assets(assets)

    @dg.asset(
        key=SUBJECT_INDEX_KEY,
        group_name="gdpr",
        owners=[owners.DPO, owners.PLATFORM],
        kinds={"polars", "parquet"},
        description=(
            "Which asset partition holds which subject pseudonym, built from the lake for every "
            "asset that declares a subject column. GDPR processing reads it to re-materialise "
            "exactly the partitions that hold a person. Pseudonyms only, never identifiers."
        ),
        deps=[
            dg.AssetDep(key, partition_mapping=dg.AllPartitionMapping())
            if partitioned
            else dg.AssetDep(key)
            for key, _, partitioned in sources
        ],
        automation_condition=dg.AutomationCondition.eager(),
        metadata={
            "indexed_assets": dg.MetadataValue.json([s.asset for _, s, _ in sources]),
            "dagster/column_schema": documented_columns(
                {
                    "asset": ("string", "asset key holding the rows"),
                    "partition": ("string", "partition key (null for unpartitioned assets)"),
                    "subject_pseudonym": ("string", "keyed pseudonym of the person"),
                    "rows": ("int", "rows of that person in that partition"),
                }
            ),
        },
    )
    def subject_index(hdh_home: HomeResource) -> dg.Output:
        frame = build_subject_index(hdh_home.home.lake, [s for _, s, _ in sources])
        return dg.Output(
            frame,
            metadata={
                "subjects": frame["subject_pseudonym"].n_unique(),
                "partitions": frame.select("asset", "partition").unique().height,
                "subjects_per_asset": dg.MetadataValue.json(
                    dict(
                        frame.group_by("asset")
                        .agg(pl.col("subject_pseudonym").n_unique())
                        .sort("asset")
                        .iter_rows()
                    )
                ),
            },
        )

    return subject_index
