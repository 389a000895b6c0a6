"""Processing a verified rights request, one step at a time.

Each step runs inside a Dagster run that the rights sensor (or ``hdh rights process --wait``)
launched, and gets what it needs from its run: the home, the registry, the instance and the
asset graph. Nothing here builds definitions or launches runs; ``gdpr.steps`` says which run
comes next.

- prepare: the person's stored DICOM files and previews go, their raw copies are scrubbed
  (erasure), earlier access exports go, and the re-materialisations are planned from the
  subject index;
- finish: once the planned runs and the proof checks ran, re-issue the releases holding the
  person and complete (or fail) the request with its report.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl
from upath import UPath

from hdh_assets.gdpr.processing import batch_rows, plan_erasure, plan_rectification
from hdh_assets.gdpr.raw_copies import scrub_raw_copies
from hdh_assets.gdpr.rights import RequestType, Status
from hdh_assets.landing.intake import land
from hdh_assets.landing.partitions import BATCH_PARTITIONS, LANDING_SOURCES
from resources.home import HdhHome
from resources.lake.tables import Lake
from resources.rights_registry import RightsRegistry

PROCESSED_TYPES = {
    RequestType.OBJECTION,
    RequestType.ERASURE,
    RequestType.ACCESS,
    RequestType.RECTIFICATION,
}
ACTOR = "hdh-rights-process"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# -- what waits -------------------------------------------------------------------------------


def pending(registry: RightsRegistry, home: HdhHome) -> list[str]:
    """Verified (or in-progress) requests to process, oldest first; a rectification waits for
    its corrected data (``hdh rights rectify``). A failed request is not retried on its own:
    the same failure would repeat every tick; the DPO sends it back with ``hdh rights retry``."""
    found = [
        r
        for status in (Status.VERIFIED, Status.PROCESSING)  # failed ones wait for the DPO
        for r in registry.list(status)
        if r.type in PROCESSED_TYPES
        and (r.type is not RequestType.RECTIFICATION or attached_correction(home, r.id))
    ]
    return [r.id for r in sorted(found, key=lambda r: r.received_at)]


def file_sample_erasure(home: HdhHome, registry: RightsRegistry, person: dict, key) -> str:
    """What the demo shows: a synthetic person files an erasure and the DPO verifies it (the
    same calls as the portal and ``hdh rights verify``). Returns the request id."""
    from hdh_assets.gdpr.rights import validate_submission

    kind, identity = validate_submission(
        "erasure",
        person["family_name"],
        " ".join(person["given_names"]),
        person["birth_date"],
        person["nir"],
        person["email"],
    )
    pseudonym = key.pseudonymiser().subject_pseudonym(identity.nir)
    request_id, _ = registry.submit(kind, identity, pseudonym, actor="demo")
    registry.verify(request_id, "demo-dpo")
    return request_id


# -- copies outside the lake ------------------------------------------------------------------


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


def remove_derived_rows(home: HdhHome, pseudonym: str) -> int:
    """The index rows of the person's derived objects (stored by STOW-RS, outside any run), once
    their files are gone: no re-materialisation rewrites those partitions."""
    from hdh_assets.imaging.derived import drop_subject_rows

    return drop_subject_rows(home.lake, home.store / "dicom", pseudonym)


def _scrub(home: HdhHome, registry: RightsRegistry, request, **scope):
    """The raw copies lose the person (their NIR is read from the registry, audited)."""
    nir = registry.identity(request.id, ACTOR)["nir"]
    roots = {"landing": home.landing, "quarantine": home.quarantine}
    return scrub_raw_copies(roots, nir, **scope)


def remove_access_exports(home: HdhHome, registry: RightsRegistry, request) -> list[str]:
    """Archives made for the person's earlier access requests hold their rows: they go too."""
    removed = []
    for other in registry.list():
        if (
            other.subject_pseudonym != request.subject_pseudonym
            or other.type is not RequestType.ACCESS
        ):
            continue
        archive = home.access_export(other.id)
        if archive.exists():
            archive.unlink()
            removed.append(other.id)
    return removed


def _scrubbed_batches(instance: dg.DagsterInstance, graph, scrubbed) -> pl.DataFrame | None:
    """The registered landing batches whose files lost the person: they are ingested again,
    so that their inventories and quarantine tables say what landing now holds."""
    frames = []
    for source, partitions_def in BATCH_PARTITIONS.items():
        known = set(instance.get_dynamic_partitions(partitions_def.name))
        batches = sorted(
            {f.batch for f in scrubbed.files if f.area == "landing" and f.source == source} & known
        )
        if batches:
            frames.append(batch_rows(graph, partitions_def, batches))
    return pl.concat(frames) if frames else None


def _built(instance: dg.DagsterInstance):
    return lambda key: instance.get_latest_materialization_event(key) is not None


def _present(instance: dg.DagsterInstance):
    """Whether a dynamic partition still exists (other partitionings always do)."""
    known: dict[str, set[str]] = {}

    def present(partitions_def: dg.PartitionsDefinition, key: str) -> bool:
        if not isinstance(partitions_def, dg.DynamicPartitionsDefinition):
            return True
        if partitions_def.name not in known:
            known[partitions_def.name] = set(instance.get_dynamic_partitions(partitions_def.name))
        return key in known[partitions_def.name]

    return present


def subject_index(home: HdhHome) -> pl.DataFrame:
    index_files = list(home.lake.joinpath("gdpr", "subject_index").glob("*.parquet"))
    if index_files:
        return pl.read_parquet(index_files)
    return pl.DataFrame(
        schema={"asset": pl.String, "partition": pl.String, "subject_pseudonym": pl.String}
    )


# -- step 1: prepare --------------------------------------------------------------------------


def prepare(
    home: HdhHome, instance: dg.DagsterInstance, registry: RightsRegistry, request, graph
) -> dict:
    """Remove what lives outside the lake and plan the re-materialisations. Returns the
    report so far; its ``runs`` are the planned runs, in order."""
    report: dict = {"request": request.id, "type": request.type.value, "started_at": now()}
    index = subject_index(home)
    if request.type is RequestType.RECTIFICATION:
        return _prepare_rectification(home, instance, registry, request, report, graph, index)
    report["files_removed"] = remove_store_copies(home, request.subject_pseudonym)
    report["derived_rows_removed"] = remove_derived_rows(home, request.subject_pseudonym)
    also = None
    if request.type is RequestType.ERASURE:  # first, so that re-ingestion reads clean batches
        scrubbed = _scrub(home, registry, request)
        report.update(scrubbed.to_json())
        report["access_exports_removed"] = remove_access_exports(home, registry, request)
        also = _scrubbed_batches(instance, graph, scrubbed)
    plan = plan_erasure(
        index, request.subject_pseudonym, graph, _built(instance), also, _present(instance)
    )
    report.update(plan.to_json())
    return report


def _prepare_rectification(home, instance, registry, request, report, graph, index) -> dict:
    attached = attached_correction(home, request.id)
    if attached is None:
        raise ValueError("no corrected data attached: hdh rights rectify ID --source SOURCE PATH")
    source, folder = attached
    batch = folder.name
    instance.add_dynamic_partitions(BATCH_PARTITIONS[source].name, [batch])
    plan = plan_rectification(
        index,
        request.subject_pseudonym,
        graph,
        BATCH_PARTITIONS[source],
        batch,
        _built(instance),
        _present(instance),
    )
    report.update(plan.to_json())
    report.update({"source": source, "corrected_batch": batch})
    within = [home.landing_for(source), home.quarantine / source]
    report.update(_scrub(home, registry, request, keep=[folder], within=within).to_json())
    if source == "dicom":
        report["files_removed"] = remove_store_copies(home, request.subject_pseudonym)
        report["derived_rows_removed"] = remove_derived_rows(home, request.subject_pseudonym)
    return report


# -- last step: finish ------------------------------------------------------------------------


def finish(
    home: HdhHome,
    instance: dg.DagsterInstance,
    registry: RightsRegistry,
    request,
    graph,
    report: dict,
    runs: list[dict],
    checks: dict[str, bool],
) -> dict:
    """Complete the request only if every run succeeded and every proof passed; fail it with
    the reasons otherwise. ``runs``: what was launched for it (run ids included)."""
    report = {**report, "runs": runs, "checks": checks}
    problems = [r["selection"] for r in runs if not r["success"]]
    problems += [c for c, passed in checks.items() if not passed]
    if not checks:
        problems.append("no proof check ran")
    if not report.get("raw_copies_clean", True):
        problems.append("raw copies still holding the person")
    if request.type is RequestType.RECTIFICATION and not problems:
        problems += _rectification_problems(home, request, report)
    report["completed_at"] = now()
    if not problems and request.type is not RequestType.RECTIFICATION:
        report["releases_reissued"] = reissue_releases(home, instance, request, graph)
    if not problems:
        registry.complete(request.id, report, ACTOR)
    else:
        registry.fail(request.id, f"not done: {', '.join(problems)[:500]}", ACTOR, report)
    return report


def reissue_releases(home: HdhHome, instance: dg.DagsterInstance, request, graph) -> list[dict]:
    """Every release holding the person becomes a patch release of the cleaned product, and the
    old snapshot is purged, as both manifests record."""
    from hdh_assets.products.publishing import release_product
    from hdh_assets.products.releases import ReleaseStore, next_patch

    store = ReleaseStore(home.releases)
    done = []
    for old in store.holding(request.subject_pseudonym):
        latest = store.releases(old.product)[-1].version
        new = release_product(
            home,
            graph,
            instance,
            old.product,
            next_patch(latest),
            extra={"supersedes": old.version, "reissued_for_request": request.id},
        )
        store.purge(old.product, old.version, request.id, new.version)
        done.append({"product": old.product, "purged": old.version, "released": new.version})
    return done


def export_access(home: HdhHome, registry: RightsRegistry, request, indexed, offset: int) -> dict:
    """Right of access: the archive for the DPO to send, under HDH_HOME/exports/ (mode 0600).
    ``indexed``: (asset, subject column) of every asset holding people."""
    from hdh_assets.gdpr.access import write_access_archive

    report: dict = {"request": request.id, "type": request.type.value, "started_at": now()}
    archive = home.access_export(request.id)
    rows = write_access_archive(
        home.lake, indexed, request.subject_pseudonym, offset, request.id, archive
    )
    report.update(
        {
            "archive": str(archive),
            "rows_by_asset": rows,
            "assets": sorted(rows),
            "completed_at": now(),
        }
    )
    registry.complete(request.id, report, ACTOR)
    return report


# -- rectification ---------------------------------------------------------------------------


def rectification_batch(request_id: str) -> str:
    return f"rectification-{request_id.lower()}"


def attached_correction(home: HdhHome, request_id: str) -> tuple[str, Path] | None:
    """(source, landed folder) of the corrected data attached to a rectification, if any."""
    for source in LANDING_SOURCES:
        folder = home.landing_for(source) / rectification_batch(request_id)
        if folder.is_dir():
            return source, folder
    return None


def attach_correction(
    home: HdhHome,
    registry: RightsRegistry,
    request_id: str,
    source: str,
    path: Path,
    actor: str,
    provider: str | None = None,
) -> str:
    """Land the corrected source data of a verified rectification as its own batch; processing
    then replaces the person's records of that source with it."""
    request = registry.get(request_id)
    if request.type is not RequestType.RECTIFICATION:
        raise ValueError(f"{request_id} is a {request.type.value} request, not a rectification")
    if request.status not in (Status.VERIFIED, Status.FAILED):
        raise ValueError(f"{request_id} is {request.status.value}; attach to a verified request")
    if source not in LANDING_SOURCES:
        raise ValueError(f"unknown source {source!r}: one of {', '.join(LANDING_SOURCES)}")
    existing = attached_correction(home, request_id)
    if existing and existing[0] != source:
        raise ValueError(f"{request_id} has corrected {existing[0]} data already")
    batch = rectification_batch(request_id)
    land(path, home.landing_for(source), batch, provider)
    registry.note(request_id, actor, "correction_attached", {"source": source, "batch": batch})
    return batch


def _rectification_problems(home: HdhHome, request, report: dict) -> list[str]:
    """The proof of a rectification: the person's rows of the source now come from the
    corrected batch, and from no other batch of that source."""
    index = subject_index(home).filter(pl.col("subject_pseudonym") == request.subject_pseudonym)
    source_assets = set(report.get("assets", []))
    rows = index.filter(pl.col("asset").is_in(sorted(source_assets)))
    batches = set(rows["partition"].drop_nulls().to_list())
    report["rectified_partitions"] = sorted(batches)
    problems = []
    if report["corrected_batch"] not in batches:
        problems.append("the corrected batch holds no row of the person")
    stale = sorted(b for b in batches if b != report["corrected_batch"])
    if stale:
        problems.append(f"older batches still hold the person: {', '.join(stale)}")
    return problems
