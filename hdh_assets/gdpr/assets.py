"""GDPR assets: the subject index, the exclusions table and the proof checks."""

import dagster as dg
import polars as pl
from upath import UPath

from hdh_assets import owners
from hdh_assets.automation import follows_whatever_exists
from hdh_assets.gdpr import service, steps
from hdh_assets.gdpr.exclusions import excluded_pseudonyms, exclusions_frame
from hdh_assets.gdpr.subject_index import IndexedAsset, build_subject_index
from hdh_assets.lineage import AssetLineage
from hdh_assets.validation import documented_columns
from resources.lake.tables import Lake
from resources.platform import HomeResource
from resources.pseudonymisation import PseudonymisationKeyResource
from resources.rights_registry import RightsRegistryResource

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
        automation_condition=follows_whatever_exists(),
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


EXCLUSIONS_KEY = steps.EXCLUSIONS_KEY
PROOF_CHECK = steps.PROOF_CHECK


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
def exclusions(hdh_home: HomeResource, rights_registry: RightsRegistryResource) -> dg.Output:
    frame = exclusions_frame(rights_registry.registry(hdh_home.home).excluded())
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


def indexed_in_graph(graph) -> list[tuple[str, str]]:
    """(asset, subject column) of every asset holding people, from the asset graph."""
    found = []
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        column = graph.get(key).metadata.get("subject_column")
        column = getattr(column, "value", column)
        if column:
            found.append((key.to_user_string(), column))
    return found


PREPARED = "prepared"  # the registry's audit entry holding what the prepare step did


def _prepared_report(registry, request, attempt: int) -> dict:
    """What the attempt's prepare step did, from the registry (the DPO's store, not Dagster's
    event log: it names the person's stored files and the partitions that held them)."""
    for entry in reversed(registry.audit(request.id)):
        detail = entry["detail"] or {}
        if entry["action"] == PREPARED and detail.get("attempt") == attempt:
            return dict(detail["report"])
    return {"request": request.id, "type": request.type.value, "started_at": service.now()}


def _counts(report: dict) -> dict:
    """What Dagster's metadata may show of a report: counts, never the files or identifiers."""
    checks = report.get("checks") or {}
    return {
        "files_removed": len(report.get("files_removed", [])),
        "raw_copies_cleaned": len(report.get("raw_copies_removed", [])),
        "raw_copies_clean": report.get("raw_copies_clean", True),
        "checks_passed": sum(1 for passed in checks.values() if passed),
        "checks_failed": sum(1 for passed in checks.values() if not passed),
        "releases_reissued": len(report.get("releases_reissued", [])),
    }


PLAN_COLUMNS = documented_columns(
    {
        "request_id": ("string", "the rights request"),
        "attempt": ("int", "processing attempt (a retried request starts a new one)"),
        "run": ("int", "position of the run in the plan"),
        "wave": ("int", "runs of one wave are independent; a wave starts when the last ended"),
        "assets": ("list[string]", "asset keys the run re-materialises"),
        "partitions": ("string", "partition key, or first..last of a range; null if none"),
    }
)
OUTCOME_COLUMNS = documented_columns(
    {
        "request_id": ("string", "the rights request"),
        "request_type": ("string", "objection, erasure, rectification or access"),
        "attempt": ("int", "processing attempt"),
        "status": ("string", "completed or failed"),
        "runs": ("int", "runs launched for the request (the outcome's own excluded)"),
        "checks_passed": ("int", "proof checks that passed"),
        "checks_failed": ("int", "proof checks that failed"),
        "completed_at": ("string", "when the outcome was reached (UTC, ISO 8601)"),
    }
)


def plan_frame(request_id: str, attempt: int, runs: list[dict], waves) -> pl.DataFrame:
    wave_of = {index: wave for wave, members in enumerate(waves) for index in members}
    return pl.DataFrame(
        [
            {
                "request_id": request_id,
                "attempt": attempt,
                "run": i,
                "wave": wave_of[i],
                "assets": run["assets"],
                "partitions": "..".join(dict.fromkeys(run["partitions"]))
                if run.get("partitions")
                else None,
            }
            for i, run in enumerate(runs)
        ],
        schema={
            "request_id": pl.String,
            "attempt": pl.Int64,
            "run": pl.Int64,
            "wave": pl.Int64,
            "assets": pl.List(pl.String),
            "partitions": pl.String,
        },
    )


def outcome_frame(request, attempt: int, status: str, report: dict) -> pl.DataFrame:
    checks = report.get("checks") or {}
    return pl.DataFrame(
        [
            {
                "request_id": request.id,
                "request_type": request.type.value,
                "attempt": attempt,
                "status": status,
                "runs": len(report.get("runs", [])),
                "checks_passed": sum(1 for passed in checks.values() if passed),
                "checks_failed": sum(1 for passed in checks.values() if not passed),
                "completed_at": report.get("completed_at"),
            }
        ],
        schema={
            "request_id": pl.String,
            "request_type": pl.String,
            "attempt": pl.Int64,
            "status": pl.String,
            "runs": pl.Int64,
            "checks_passed": pl.Int64,
            "checks_failed": pl.Int64,
            "completed_at": pl.String,
        },
    )


def request_assets(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The two assets a rights request runs through, given every asset a request may touch:
    their plans and release manifests read that lineage."""
    lineage = AssetLineage(assets)

    @dg.asset(
        key=steps.PLANS_KEY,
        partitions_def=steps.REQUESTS,
        deps=[EXCLUSIONS_KEY],
        group_name="gdpr",
        owners=[owners.DPO, owners.PLATFORM],
        kinds={"python", "parquet"},
        description=(
            "One partition per rights request being processed: removes the person's stored DICOM "
            "files and previews, scrubs their raw copies (erasure), and plans which asset "
            "partitions to re-materialise from the subject index, one row per planned run. The "
            "rights sensor launches the planned runs wave by wave. Pseudonyms never appear."
        ),
        metadata={"dagster/column_schema": PLAN_COLUMNS},
    )
    def request_plans(
        context: dg.AssetExecutionContext,
        hdh_home: HomeResource,
        rights_registry: RightsRegistryResource,
    ) -> dg.Output:
        home = hdh_home.home
        registry = rights_registry.registry(home)
        request = registry.get(context.partition_key)
        attempt = registry.attempt(request.id)
        report = service.prepare(home, context.instance, registry, request, lineage)
        registry.note(request.id, service.ACTOR, PREPARED, {"attempt": attempt, "report": report})
        context.log.info(
            f"{request.id}: {len(report['runs'])} run(s) planned over {len(report['assets'])} asset(s)"
        )
        return dg.Output(
            plan_frame(request.id, attempt, report["runs"], steps.waves(report["runs"], lineage)),
            metadata={
                "attempt": attempt,
                "request_type": request.type.value,
                "runs_planned": len(report["runs"]),
                "assets": dg.MetadataValue.json(report["assets"]),
                "plan": dg.MetadataValue.json({"runs": report["runs"]}),
                **_counts(report),
            },
        )

    @dg.asset(
        key=steps.OUTCOMES_KEY,
        partitions_def=steps.REQUESTS,
        group_name="gdpr",
        owners=[owners.DPO, owners.PLATFORM],
        kinds={"python", "parquet"},
        description=(
            "One partition per rights request: its outcome. For an objection, erasure or "
            "rectification, after the planned runs and the proof checks: re-issues the releases "
            "that held the person, then completes the request with its report (runs and checks) "
            "or fails it with the reasons. For an access request: the archive of the person's rows."
        ),
        metadata={"dagster/column_schema": OUTCOME_COLUMNS},
    )
    def request_outcomes(
        context: dg.AssetExecutionContext,
        hdh_home: HomeResource,
        rights_registry: RightsRegistryResource,
        pseudonymisation: PseudonymisationKeyResource,
    ) -> dg.Output:
        home = hdh_home.home
        registry = rights_registry.registry(home)
        request = registry.get(context.partition_key)
        attempt = registry.attempt(request.id)
        graph = lineage
        instance = context.instance
        if request.type.value == "access":
            offset = pseudonymisation.pseudonymiser().date_offset_days(request.subject_pseudonym)
            report = service.export_access(home, registry, request, indexed_in_graph(graph), offset)
        else:
            report = service.finish(
                home,
                instance,
                registry,
                request,
                graph,
                _prepared_report(registry, request, attempt),
                steps.run_summaries(instance, request.id, request.type.value, attempt),
                steps.proof_results(instance, request.id, attempt),
            )
        status = registry.get(request.id).status.value
        context.log.info(f"rights request {request.id}: {status}")
        return dg.Output(
            outcome_frame(request, attempt, status, report),
            metadata={
                "attempt": attempt,
                "status": status,
                "runs": len(report.get("runs", [])),
                **_counts(report),
            },
        )

    return [request_plans, request_outcomes]
