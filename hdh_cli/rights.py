"""Processing verified objection and erasure requests in-process (``hdh rights process``).

For each request: exclude the person (the gdpr/exclusions snapshot), remove the pseudonymised
DICOM files and previews that hold them, re-materialise exactly the partitions the subject index
lists and what depends on them, then run the proof checks. The request is completed only when
every run succeeded and every proof passed; its report says what was touched.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import dagster as dg
import polars as pl
from upath import UPath

from hdh_assets.gdpr.processing import plan_erasure
from hdh_assets.gdpr.rights import RequestType, Status
from hdh_cli.runs import materialize_selection
from resources.home import HdhHome
from resources.lake.tables import Lake
from resources.rights_registry import RightsRegistry

PROCESSED_TYPES = {RequestType.OBJECTION, RequestType.ERASURE, RequestType.ACCESS}
ACTOR = "hdh-rights-process"
REQUEST_TAG = "hdh/rights_request"


@dataclass
class Outcome:
    request_id: str
    status: str
    report: dict = field(default_factory=dict)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def remove_store_copies(home: HdhHome, pseudonym: str) -> list[str]:
    """The person's pseudonymised DICOM files and the previews of their series."""
    from hdh_assets.gdpr.access import person_rows

    store = home.store / "dicom"
    removed = []
    instances = person_rows(home.lake, "imaging/dicom_instances", "subject_pseudonym", pseudonym)
    if instances.is_empty():
        return removed
    for relative in instances["store_path"].drop_nulls():
        path = store / relative
        if path.resolve().is_relative_to(store.resolve()) and path.exists():
            path.unlink()
            removed.append(f"store/dicom/{relative}")
    series = sorted(set(instances["series_instance_uid"].drop_nulls()))
    for file in Lake(UPath(home.lake)).table(["imaging", "dicom_previews"]).parquet_files():
        previews = pl.read_parquet(str(file)).filter(pl.col("series_instance_uid").is_in(series))
        for relative in previews["preview_path"].drop_nulls():
            path = home.store / relative
            if path.resolve().is_relative_to(home.store.resolve()) and path.exists():
                path.unlink()
                removed.append(f"store/{relative}")
    return removed


def process_request(
    home: HdhHome, instance: dg.DagsterInstance, registry: RightsRegistry, request_id: str
) -> Outcome:
    from hdh_assets.definitions import PROOF_CHECKS, build_definitions

    request = registry.get(request_id)
    if request.status is Status.VERIFIED or request.status is Status.FAILED:
        registry.start_processing(request_id, ACTOR)
    elif request.status is not Status.PROCESSING:  # resumed after a kill: carry on
        return Outcome(request_id, request.status.value)
    tags = {REQUEST_TAG: request_id}
    report: dict = {"request": request_id, "type": request.type.value, "started_at": _now()}
    if request.type is RequestType.ACCESS:
        return _export_access(home, registry, request, report)
    runs = [materialize_selection(home, instance, 'key:"gdpr/exclusions"', tags=tags)]
    graph = build_definitions(home).resolve_asset_graph()
    index_files = list(home.lake.joinpath("gdpr", "subject_index").glob("*.parquet"))
    index = (
        pl.read_parquet(index_files)
        if index_files
        else pl.DataFrame(
            schema={"asset": pl.String, "partition": pl.String, "subject_pseudonym": pl.String}
        )
    )
    plan = plan_erasure(index, request.subject_pseudonym, graph)
    report.update(plan.to_json())
    report["files_removed"] = remove_store_copies(home, request.subject_pseudonym)
    for planned in plan.runs:
        single = (
            planned.partition_range and planned.partition_range[0] == planned.partition_range[1]
        )
        runs.append(
            materialize_selection(
                home,
                instance,
                planned.selection,
                partition=planned.partition_range[0] if single else None,
                partition_range=None
                if single or not planned.partition_range
                else planned.partition_range,
                tags=tags,
            )
        )
    proofs = dg.materialize(
        [*_all_assets(), *PROOF_CHECKS],
        selection=dg.AssetSelection.checks(*PROOF_CHECKS),
        resources=_resources(home),
        instance=instance,
        tags=tags,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    checks = {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
        for e in proofs.get_asset_check_evaluations()
    }
    report["runs"] = [r.to_json() for r in runs] + [
        {"selection": "proof checks", "run_id": proofs.run_id, "success": proofs.success}
    ]
    report["checks"] = checks
    report["completed_at"] = _now()
    ok = all(r.success for r in runs) and proofs.success and checks and all(checks.values())
    if ok:
        report["releases_reissued"] = reissue_releases(home, instance, request)
    if ok:
        registry.complete(request_id, report, ACTOR)
        return Outcome(request_id, Status.COMPLETED.value, report)
    failed = [r["selection"] for r in report["runs"] if not r["success"]] + [
        c for c, p in checks.items() if not p
    ]
    registry.fail(request_id, f"not done: {', '.join(failed)[:500]}", ACTOR)
    return Outcome(request_id, Status.FAILED.value, report)


def _export_access(home: HdhHome, registry: RightsRegistry, request, report: dict) -> Outcome:
    """Right of access: the archive for the DPO to send, under HDH_HOME/exports/ (mode 0600)."""
    from hdh_assets.definitions import DOMAIN_ASSETS
    from hdh_assets.gdpr.access import write_access_archive
    from hdh_assets.gdpr.assets import indexed_assets
    from resources.pseudonymisation import PseudonymisationKeyResource

    indexed = [(i.asset, i.subject_column) for _, i, _ in indexed_assets(DOMAIN_ASSETS)]
    offset = (
        PseudonymisationKeyResource().pseudonymiser().date_offset_days(request.subject_pseudonym)
    )
    archive = home.root / "exports" / f"{request.id}.zip"
    rows = write_access_archive(
        home.lake, indexed, request.subject_pseudonym, offset, request.id, archive
    )
    report.update(
        {
            "archive": str(archive),
            "rows_by_asset": rows,
            "assets": sorted(rows),
            "completed_at": _now(),
        }
    )
    registry.complete(request.id, report, ACTOR)
    return Outcome(request.id, Status.COMPLETED.value, report)


def reissue_releases(home: HdhHome, instance: dg.DagsterInstance, request) -> list[dict]:
    """Every release holding the person becomes a patch release of the cleaned product, and the
    old snapshot is purged, as both manifests record."""
    from hdh_assets.definitions import build_definitions
    from hdh_assets.products.releases import ReleaseStore, next_patch
    from hdh_cli.products import release_product

    store = ReleaseStore(home.releases)
    defs = build_definitions(home)
    done = []
    for old in store.holding(request.subject_pseudonym):
        latest = store.releases(old.product)[-1].version
        new = release_product(
            home,
            defs,
            instance,
            old.product,
            next_patch(latest),
            extra={"supersedes": old.version, "reissued_for_request": request.id},
        )
        store.purge(old.product, old.version, request.id, new.version)
        done.append({"product": old.product, "purged": old.version, "released": new.version})
    return done


def _all_assets():
    from hdh_assets.definitions import ALL_ASSETS

    return ALL_ASSETS


def _resources(home: HdhHome):
    from hdh_assets.definitions import build_resources

    return build_resources(home)


def erase_sample_person(home: HdhHome, instance: dg.DagsterInstance, person: dict) -> Outcome:
    """What the demo shows: a synthetic person files an erasure, the DPO verifies it, the
    platform processes it (the same calls as the portal, ``hdh rights verify`` and ``process``)."""
    from hdh_assets.gdpr.rights import validate_submission
    from resources.pseudonymisation import PseudonymisationKeyResource

    kind, identity = validate_submission(
        "erasure",
        person["family_name"],
        " ".join(person["given_names"]),
        person["birth_date"],
        person["nir"],
        person["email"],
    )
    registry = RightsRegistry.from_env(home)
    pseudonym = PseudonymisationKeyResource().pseudonymiser().subject_pseudonym(identity.nir)
    request_id, _ = registry.submit(kind, identity, pseudonym, actor="demo")
    registry.verify(request_id, "demo-dpo")
    return process_request(home, instance, registry, request_id)


def pending(registry: RightsRegistry) -> list[str]:
    """Verified (or interrupted) objections and erasures, oldest first."""
    found = [
        r
        for status in (Status.VERIFIED, Status.PROCESSING, Status.FAILED)
        for r in registry.list(status)
        if r.type in PROCESSED_TYPES
    ]
    return [r.id for r in sorted(found, key=lambda r: r.received_at)]
