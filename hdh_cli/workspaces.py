"""``hdh workspaces``: render, diff, apply and decommission research-project workspaces."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from hdh_assets.workspaces.assets import (
    DEPLOYMENTS_KEY,
    GRANTS_KEY,
    MANIFESTS_KEY,
    PROJECTS,
    SPECS_KEY,
    decommission,
)
from hdh_assets.workspaces.config import (
    current_specs,
    render_settings,
    spec_ids,
    specs_dir,
    target_for,
)
from hdh_assets.workspaces.delivery import GitOpsTarget, project_files
from hdh_assets.workspaces.manifests import manifest_digest, render_project
from hdh_assets.workspaces.validation import validate_objects
from hdh_cli.runs import execute, follow
from resources.home import HdhHome

PER_PROJECT_KEYS = [SPECS_KEY, GRANTS_KEY, MANIFESTS_KEY]


class WorkspaceError(RuntimeError):
    """A refusal the command line shows as one clear message."""


def render(projects: list[str] | None = None, out: Path | None = None) -> dict:
    """Render and strictly validate live projects (all, or those named); write their GitOps
    folders under ``out`` when given. Pure: nothing is delivered."""
    live, expired, refused = current_specs()
    wanted = projects or sorted(live)
    reasons = []
    for project in (p for p in wanted if p not in live):
        refusals = [str(e) for e in refused if any(Path(f).stem == project for f in e.files)]
        if refusals:
            reasons += refusals
        elif project in expired:
            reasons.append(f"{project}: expired on {expired[project].expires}")
        else:
            reasons.append(f"{project}: no spec file")
    if reasons:
        raise WorkspaceError("\n".join(reasons))
    settings = render_settings()
    summary: dict = {"kubernetes_version": settings.kubernetes_version, "projects": {}}
    for project in wanted:
        objects = render_project(live[project], settings)
        errors = validate_objects(objects, settings.kubernetes_version)
        summary["projects"][project] = {
            "objects": len(objects),
            "digest": manifest_digest(objects),
            "errors": errors,
        }
        if out is not None:
            folder = out / project
            folder.mkdir(parents=True, exist_ok=True)
            for name, content in project_files(project, objects).items():
                (folder / name).write_text(content, encoding="utf-8")
    summary["refused_specs"] = [str(e) for e in refused]
    summary["valid"] = not any(p["errors"] for p in summary["projects"].values())
    return summary


def diff(home: HdhHome) -> dict:
    """What ``apply`` would change in the delivered state, per project: files of the GitOps
    repository, or objects in a cluster (compared by the digest stamped at their last apply,
    since a cluster holds more than we sent: status, server fields)."""
    from hdh_assets.workspaces.delivery import ObjectRef, object_digest

    live, expired, refused = current_specs()
    settings = render_settings()
    target = target_for(home.root)
    if isinstance(target, GitOpsTarget):
        before = {p: project_files(p, objs) for p, objs in target.delivered().items()}

        def wanted(project: str) -> dict[str, str]:
            return project_files(project, render_project(live[project], settings))
    else:
        before = target.delivered_digests()

        def wanted(project: str) -> dict[str, str]:
            objects = render_project(live[project], settings)
            return {str(ObjectRef.of(o)): object_digest(o) for o in objects}

    changes: dict = {}
    for project in sorted(set(live) | set(before)):
        held = before.get(project, {})
        if project not in live:
            if project in spec_ids() and project not in expired:
                continue  # a refused spec leaves its workspace as it is
            changes[project] = {"status": "decommission", "removed": sorted(held)}
            continue
        after = wanted(project)
        change = {
            "status": "update" if held else "add",
            "added": sorted(set(after) - set(held)),
            "changed": sorted(n for n in set(after) & set(held) if after[n] != held[n]),
            "removed": sorted(set(held) - set(after)),
        }
        if change["added"] or change["changed"] or change["removed"]:
            changes[project] = change
    return {
        "target": type(target).__name__,
        "changes": changes,
        "refused_specs": [str(e) for e in refused],
    }


def _sync_partitions(instance: dg.DagsterInstance, live: set[str]) -> None:
    known = set(instance.get_dynamic_partitions(PROJECTS.name))
    if live - known:
        instance.add_dynamic_partitions(PROJECTS.name, sorted(live - known))


def _last_spec_digest(instance: dg.DagsterInstance, project: str) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=MANIFESTS_KEY, asset_partitions=[project]), limit=1
    ).records
    if not records:
        return None
    specs = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SPECS_KEY, asset_partitions=[project]), limit=1
    ).records
    value = specs[0].asset_materialization.metadata.get("spec_digest") if specs else None
    return getattr(value, "value", value)


def apply(
    home: HdhHome,
    instance: dg.DagsterInstance,
    defs: dg.Definitions | None = None,
    force: bool = False,
    on_run=lambda outcome: None,
) -> dict:
    """Provision what changed (the partitioned assets of each changed project), deliver
    everything once (one commit at most, none when nothing changed), then what the automation
    conditions ask after it (the subject index: grants hold people)."""
    if not specs_dir().is_dir():
        raise WorkspaceError(f"the specs folder {specs_dir()} is missing: nothing was changed")
    live, _, refused = current_specs()
    _sync_partitions(instance, set(live))
    if defs is None:
        from hdh_assets.definitions import build_definitions

        defs = build_definitions(home)
    before = follow(defs, instance, None, on_run)
    runs = []
    for project in sorted(live):  # expired ones are retired by the delivery below
        spec = live[project]
        if force or _last_spec_digest(instance, project) != spec.digest:
            request = dg.RunRequest(
                asset_selection=PER_PROJECT_KEYS,
                partition_key=project,
                tags={"hdh/workspace": project},
            )
            runs.append(execute(defs, instance, request))
            on_run(runs[-1])
    failed = [r.partition for r in runs if not r.success]
    delivery = execute(defs, instance, dg.RunRequest(asset_selection=[DEPLOYMENTS_KEY]))
    on_run(delivery)
    after = follow(defs, instance, before.cursor, on_run)
    report = _latest_delivery(instance)
    return {
        "provisioned": [r.partition for r in runs if r.success and r.partition],
        "failed": failed,
        "refused_specs": [str(e) for e in refused],
        "delivery_run": delivery.to_json(),
        "delivery": report,
        "success": not failed and delivery.success,
        "automation": before.requested + after.requested,
    }


def _latest_delivery(instance: dg.DagsterInstance) -> dict:
    event = instance.get_latest_materialization_event(DEPLOYMENTS_KEY)
    if event is None or event.asset_materialization is None:
        return {}
    metadata = event.asset_materialization.metadata
    shown = ("target", "summary", "commit", "projects", "refused_specs", "decommissioned")
    return {
        name: getattr(metadata[name], "value", metadata[name]) for name in shown if name in metadata
    }


def retire(home: HdhHome, instance: dg.DagsterInstance, project: str) -> dict:
    """Decommission one project now: manifests pruned, grants deleted, a report recorded. Its
    spec must be gone or expired first, or the next apply would bring it back."""
    live, _, _ = current_specs()
    if project in live:
        raise WorkspaceError(
            f"{project} still has a live spec: remove its file or set its expires date first"
        )
    report = target_for(home.root).decommission([project])
    reports = decommission(home, instance, {project}, "decommissioned by an operator", None)
    return {**report.as_dict(), "decommissioned": reports}
