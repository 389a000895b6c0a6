"""GDPR assets: the subject index, the exclusions table and the proof checks."""

import dagster as dg
import polars as pl
from upath import UPath

from hdh_assets import owners
from hdh_assets.gdpr.exclusions import EXCLUSIONS_PATH, excluded_pseudonyms, exclusions_frame
from hdh_assets.gdpr.subject_index import IndexedAsset, build_subject_index
from hdh_assets.validation import documented_columns
from resources.lake.tables import Lake
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


EXCLUSIONS_KEY = dg.AssetKey(list(EXCLUSIONS_PATH))
PROOF_CHECK = "no_excluded_subject"


@dg.asset(
    key=EXCLUSIONS_KEY,
    group_name="gdpr",
    owners=[owners.DPO, owners.PLATFORM],
    kinds={"sql", "parquet"},
    description=(
        "The objection and erasure registry as a table: the pseudonym of every person whose "
        "objection or erasure request was verified. The lake IO manager and DICOM ingestion read "
        "it at every write, so such a person is filtered out of every future ingestion; the "
        "no_excluded_subject checks prove it. Pseudonyms and request ids only."
    ),
    metadata={
        "dagster/column_schema": documented_columns(
            {
                "subject_pseudonym": ("string", "keyed pseudonym of the person"),
                "request_id": ("string", "the rights request that excluded them"),
                "request_type": ("string", "objection or erasure"),
            }
        )
    },
)
def exclusions(hdh_home: HomeResource) -> dg.Output:
    from resources.rights_registry import RightsRegistry

    frame = exclusions_frame(RightsRegistry.from_env(hdh_home.home).excluded())
    return dg.Output(
        frame,
        metadata={
            "people": frame.height,
            "by_type": dg.MetadataValue.json(
                dict(frame.group_by("request_type").len().sort("request_type").iter_rows())
            ),
        },
    )


def _excluded_rows(files, column: str, excluded: frozenset[str]) -> int:
    listed = sorted(excluded)
    return sum(
        pl.scan_parquet(str(f)).select(pl.col(column).is_in(listed).sum()).collect().item()
        for f in files
    )


def _proof_check(key: dg.AssetKey, indexed: IndexedAsset) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key,
        name=PROOF_CHECK,
        description=(
            f"no row of {indexed.asset} has the pseudonym of a person whose objection or "
            "erasure was verified (gdpr/exclusions): the proof a request is done"
        ),
    )
    def _proof(hdh_home: HomeResource) -> dg.AssetCheckResult:
        lake = hdh_home.home.lake
        excluded = excluded_pseudonyms(lake)
        files = Lake(UPath(lake)).table(key.path).parquet_files()
        rows = _excluded_rows(files, indexed.subject_column, excluded) if excluded else 0
        return dg.AssetCheckResult(
            passed=rows == 0,
            metadata={
                "rows_of_excluded_people": rows,
                "excluded_people": len(excluded),
                "files_scanned": len(files),
            },
        )

    return _proof


def proof_checks(assets: list[dg.AssetsDefinition]) -> list[dg.AssetChecksDefinition]:
    """One check per asset holding people: no row of an excluded person remains in the lake."""
    return [_proof_check(key, indexed) for key, indexed, _ in indexed_assets(assets)]
