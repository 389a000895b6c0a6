"""Workspace assets (group ``workspaces``): one dynamic partition per project spec.

``workspace_specs`` validates the project's spec, ``workspace_data_grants`` extracts exactly its
granted releases into its storage area (the ledger of who is in them goes to the lake, so the
subject index and GDPR processing reach grants), ``workspace_manifests`` renders and strictly
validates its Kubernetes objects, and ``workspace_deployments`` delivers every project's
manifests to the configured target in one go: one GitOps commit per run that changed something.
"""

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import yaml

from hdh_assets import owners
from hdh_assets.files import exclusive_lock, remove_tree
from hdh_assets.gdpr.exclusions import excluded_pseudonyms
from hdh_assets.products.releases import ReleaseStore
from hdh_assets.validation import documented_columns
from hdh_assets.workspaces.config import (
    current_specs,
    render_settings,
    spec_ids,
    spec_of,
    specs_dir,
    target_for,
)
from hdh_assets.workspaces.grants import (
    LEDGER_SCHEMA,
    Grant,
    extract_grants,
    extracts_holding,
    remove_grants,
)
from hdh_assets.workspaces.manifests import (
    manifest_digest,
    render_project,
    to_yaml,
    workspace_image,
)
from hdh_assets.workspaces.specs import (
    APPROVALS_FILE,
    ProjectSpec,
    SpecError,
    is_expired,
    spec_files,
)
from hdh_assets.workspaces.validation import validate_objects
from resources.lake.tables import Lake, PartitionSpec
from resources.platform import HomeResource

PROJECTS = dg.DynamicPartitionsDefinition(name="workspace_projects")
SPEC_SCHEMA = {
    "title": pl.String,
    "authorisation": pl.String,
    "members": pl.String,
    "grants": pl.String,
    "cpu": pl.String,
    "memory": pl.String,
    "storage": pl.String,
    "applications": pl.String,
    "expires": pl.Date,
    "expired": pl.Boolean,
    "spec_digest": pl.String,
}
SPECS_KEY = dg.AssetKey(["workspaces", "workspace_specs"])
GRANTS_KEY = dg.AssetKey(["workspaces", "workspace_data_grants"])
MANIFESTS_KEY = dg.AssetKey(["workspaces", "workspace_manifests"])
DELIVERY_POOL = "workspace_delivery"
DEPLOYMENTS_KEY = dg.AssetKey(["workspaces", "workspace_deployments"])
GRANTS_PROOF = "extracts_hold_no_excluded_subject"
MANIFESTS_VALID = "objects_pass_strict_schema_validation"
OWNERS = [owners.PLATFORM, owners.DATA_REFERENTS]
# metadata of a workspace_specs materialisation: the spec_file_digests() entry of its project
# when it was provisioned, what workspace_specs_sensor compares a spec file with
SPEC_FILE_DIGEST = "spec_file_digest"


def spec_file_digests(folder: Path | None = None) -> dict[str, str] | None:
    """Content digest per spec file (the project id), the approvals file included (revoking an
    approval re-provisions the projects it covered); None when the folder is missing. The one
    definition workspace_specs records and workspace_specs_sensor compares, so they never
    disagree."""
    folder = folder or specs_dir()
    if not folder.is_dir():
        return None
    approvals = folder.parent / APPROVALS_FILE
    shared = approvals.read_bytes() if approvals.exists() else b""
    return {
        p.stem: hashlib.sha256(shared + b"\0" + p.read_bytes()).hexdigest()[:16]
        for p in spec_files(folder)
    }


def _spec(context: dg.AssetExecutionContext) -> ProjectSpec | None:
    """The partition's spec, validated, or None when its file is gone (the project is retired:
    it holds nothing any more). A refused spec fails the step with file, field and reason."""
    try:
        return spec_of(context.partition_key)
    except LookupError:
        return None
    except SpecError as refused:
        raise dg.Failure(description=str(refused)) from None


def _retired(spec: ProjectSpec | None) -> bool:
    return spec is None or is_expired(spec, _today())


def _today() -> dt.date:
    return dt.date.today()


@dg.asset(
    key=SPECS_KEY,
    group_name="workspaces",
    owners=OWNERS,
    kinds={"yaml", "pydantic"},
    partitions_def=PROJECTS,
    description=(
        "A research project's workspace spec (workspaces/projects/<id>.yaml), validated: members "
        "and roles, granted releases approved by its authorisation (approvals.yaml), compute, "
        "applications, packages, expiry. One partition per spec file, kept in step by "
        "workspace_specs_sensor."
    ),
    metadata={
        "partition_column": "project",
        "dagster/column_schema": documented_columns(
            {
                "title": ("string", "the project's title"),
                "authorisation": ("string", "the regulatory authorisation it works under"),
                "members": ("string", "JSON: user and role of each member"),
                "grants": ("string", "JSON: granted product releases"),
                "cpu": ("string", "CPU quota"),
                "memory": ("string", "memory quota"),
                "storage": ("string", "work volume size"),
                "applications": ("string", "enabled applications"),
                "expires": ("date", "the workspace is decommissioned after this day"),
                "expired": ("bool", "past its expiry date"),
                "spec_digest": ("string", "SHA-256 of the validated spec"),
            }
        ),
    },
)
def workspace_specs(context: dg.AssetExecutionContext) -> dg.Output:
    # taken before the spec is read: if the file changes in between, the digest recorded is the
    # older one and the sensor provisions the project again, never the reverse
    file_digest = (spec_file_digests() or {}).get(context.partition_key)
    spec = _spec(context)
    if spec is None:
        context.log.info(f"no spec for {context.partition_key} any more: the project is retired")
        return dg.Output(pl.DataFrame(schema=SPEC_SCHEMA), metadata={"status": "retired"})
    expired = is_expired(spec, _today())
    row = {
        "title": spec.title,
        "authorisation": spec.authorisation,
        "members": json.dumps([m.model_dump(mode="json") for m in spec.members]),
        "grants": json.dumps([g.model_dump(mode="json") for g in spec.grants]),
        "cpu": spec.compute.cpu,
        "memory": spec.compute.memory,
        "storage": spec.compute.storage,
        "applications": ", ".join(spec.applications.enabled()),
        "expires": spec.expires,
        "expired": expired,
        "spec_digest": spec.digest,
    }
    return dg.Output(
        pl.DataFrame([row], schema=SPEC_SCHEMA),
        metadata={
            "status": "expired" if expired else "live",
            "spec_digest": spec.digest,
            **({SPEC_FILE_DIGEST: file_digest} if file_digest else {}),
            "expired": expired,
            "members": len(spec.members),
            "grants": dg.MetadataValue.json(json.loads(row["grants"])),
            "applications": row["applications"],
            "expires": str(spec.expires),
        },
    )


@dg.asset(
    key=GRANTS_KEY,
    group_name="workspaces",
    owners=[owners.PLATFORM, owners.DPO],
    kinds={"parquet", "polars"},
    partitions_def=PROJECTS,
    deps=[SPECS_KEY],
    description=(
        "Read-only extracts of exactly the releases the project is granted, in "
        "HDH_HOME/workspaces/<id>/grants/<product>/<version>/ with a manifest (what was granted, "
        "what was delivered, file hashes). A release purged by an erasure is delivered from its "
        "patch release; people excluded since are left out. The lake keeps the ledger of whose "
        "rows each grant holds, so the subject index and GDPR processing reach every grant."
    ),
    metadata={
        "partition_column": "project",
        "subject_column": "subject_pseudonym",
        "dagster/column_schema": documented_columns(
            {
                "product": ("string", "granted data product"),
                "version": ("string", "granted release version"),
                "subject_pseudonym": ("string", "keyed pseudonym of a person in the extract"),
                "rows": ("int", "the person's rows in the extract"),
            }
        ),
    },
    check_specs=[
        dg.AssetCheckSpec(
            GRANTS_PROOF,
            asset=GRANTS_KEY,
            description="No extract file holds a person who objected or was erased.",
        )
    ],
)
def workspace_data_grants(context: dg.AssetExecutionContext, hdh_home: HomeResource):
    spec = _spec(context)
    home = hdh_home.home
    project_root = home.workspaces / context.partition_key
    excluded = excluded_pseudonyms(home.lake)
    if _retired(spec):
        remove_grants(project_root)
        ledger, manifest = pl.DataFrame(schema=LEDGER_SCHEMA), {"grants": []}
        context.log.info(f"project {context.partition_key} is retired: its grants are removed")
    else:
        result = extract_grants(
            ReleaseStore(home.releases),
            project_root,
            spec.id,
            [Grant(g.product, g.version) for g in spec.grants],
            excluded,
            spec.authorisation,
        )
        ledger, manifest = result.ledger, result.manifest
    remaining = extracts_holding(project_root, excluded)
    yield dg.Output(
        ledger.drop("project"),  # the partition says it
        metadata={
            "grants": dg.MetadataValue.json(
                [
                    {k: g[k] for k in ("product", "granted_version", "delivered_version", "rows")}
                    for g in manifest["grants"]
                ]
            ),
            "rows_delivered": sum(g["rows"] for g in manifest["grants"]),
            "rows_left_out_for_gdpr": sum(
                g.get("rows_left_out_for_gdpr", 0) for g in manifest["grants"]
            ),
            "subjects": ledger["subject_pseudonym"].n_unique(),
            "storage_area": str(project_root / "grants"),
        },
    )
    yield dg.AssetCheckResult(
        check_name=GRANTS_PROOF,
        passed=not remaining,
        metadata={"files_holding_excluded_people": len(remaining)},
    )


@dg.asset(
    key=MANIFESTS_KEY,
    group_name="workspaces",
    owners=OWNERS,
    kinds={"kubernetes", "yaml"},
    partitions_def=PROJECTS,
    deps=[SPECS_KEY, GRANTS_KEY],
    description=(
        "The project's Kubernetes objects: namespace with restricted pod security, quota and "
        "limits, default-deny network policies with explicit allows, service account without "
        "token, RBAC for members, work and read-only grants volumes, and JupyterHub signing "
        "members in at the platform's provider and starting each member's JupyterLab (Python "
        "and R, RStudio inside when asked). Every object is validated strictly "
        "against the configured Kubernetes version; an expired project renders nothing."
    ),
    metadata={
        "partition_column": "project",
        "dagster/column_schema": documented_columns(
            {
                "kind": ("string", "Kubernetes kind"),
                "api_version": ("string", "apiVersion"),
                "namespace": ("string", "namespace (empty for the Namespace itself)"),
                "name": ("string", "object name"),
                "manifest": ("string", "the object as YAML"),
            }
        ),
    },
    check_specs=[
        dg.AssetCheckSpec(
            MANIFESTS_VALID,
            asset=MANIFESTS_KEY,
            description="Every object passes kubernetes-validate's strict schema validation.",
        )
    ],
)
def workspace_manifests(context: dg.AssetExecutionContext):
    spec = _spec(context)
    settings = render_settings()
    objects = [] if _retired(spec) else render_project(spec, settings)
    errors = validate_objects(objects, settings.kubernetes_version)
    if errors:
        raise dg.Failure(
            description=f"{len(errors)} invalid objects for project {context.partition_key}",
            metadata={"errors": dg.MetadataValue.json(errors[:50])},
        )
    frame = pl.DataFrame(
        [
            {
                "kind": o["kind"],
                "api_version": o["apiVersion"],
                "namespace": o["metadata"].get("namespace", ""),
                "name": o["metadata"]["name"],
                "manifest": to_yaml([o]),
            }
            for o in objects
        ],
        schema={
            "kind": pl.String,
            "api_version": pl.String,
            "namespace": pl.String,
            "name": pl.String,
            "manifest": pl.String,
        },
    )
    by_kind = frame.group_by("kind").len().sort("kind")
    yield dg.Output(
        frame,
        metadata={
            "objects": frame.height,
            "objects_by_kind": dg.MetadataValue.json(dict(by_kind.iter_rows())),
            "manifest_digest": manifest_digest(objects),
            "kubernetes_version": settings.kubernetes_version,
            "jupyter_image": workspace_image(spec).reference(settings.registry) if spec else "-",
            "preview": dg.MetadataValue.md(
                "```yaml\n" + to_yaml(objects[:3])[:3000] + "\n```" if objects else "(expired)"
            ),
        },
    )
    yield dg.AssetCheckResult(
        check_name=MANIFESTS_VALID,
        passed=True,
        metadata={"objects_validated": len(objects), "version": settings.kubernetes_version},
    )


def desired_state(home_lake, live: set[str]) -> dict[str, list[dict]]:
    """Each live project's objects as last materialised in the lake."""
    table = Lake(home_lake).table(list(MANIFESTS_KEY.path))
    desired: dict[str, list[dict]] = {}
    for file in table.parquet_files():
        project = next(
            (part.split("=", 1)[1] for part in file.parts if part.startswith("project=")), None
        )
        if project in live:
            frame = pl.read_parquet(str(file), columns=["manifest"])
            desired.setdefault(project, []).extend(
                yaml.safe_load(text) for text in frame["manifest"]
            )
    return desired


def known_projects(instance: dg.DagsterInstance, home, target) -> set[str]:
    """Projects the platform has provisioned at some point: partitions, storage areas and what
    the delivery target holds."""
    known = set(instance.get_dynamic_partitions(PROJECTS.name)) | target.projects()
    if home.workspaces.exists():
        known |= {
            p.name for p in home.workspaces.iterdir() if p.is_dir() and not p.name.startswith(".")
        }
    return known


def decommission(
    home, instance: dg.DagsterInstance, projects: set[str], reason: str, run_id: str | None
) -> list[dict]:
    """Everything of a retired project goes: its grants and storage area, its lake partitions
    (the grants ledger among them, so no erasure plans a rebuild of it) and its partition. The
    report is recorded once, at the first decommissioning."""
    reports = []
    folder = home.workspaces / ".decommissioned"
    for project in sorted(projects):
        project_root = home.workspaces / project
        grants_removed = remove_grants(project_root)
        remove_tree(project_root)
        lake_partitions = _drop_lake_partitions(home.lake, project)
        if project in instance.get_dynamic_partitions(PROJECTS.name):
            instance.delete_dynamic_partition(PROJECTS.name, project)
        target = folder / f"{project}.json"
        if target.exists() and not (grants_removed or lake_partitions):
            continue  # retired already; its first report stands
        report = {
            "project": project,
            "reason": reason,
            "grants_removed": grants_removed,
            "lake_partitions_removed": lake_partitions,
            "run_id": run_id,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        folder.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(report, indent=1) + "\n")
        reports.append(report)
    return reports


def _drop_lake_partitions(lake_root, project: str) -> list[str]:
    removed = []
    for key in (SPECS_KEY, GRANTS_KEY, MANIFESTS_KEY):
        table = Lake(lake_root).table(list(key.path))
        partition = table.partition_path(PartitionSpec(("project",)), [project])
        if partition.exists():
            shutil.rmtree(str(partition))
            removed.append(key.to_user_string())
    return removed


def deliver_workspaces(
    instance: dg.DagsterInstance, home, run_id: str | None, repair: bool = False
) -> dict:
    """What ``workspace_deployments`` does: deliver live projects, retire removed or expired
    ones. A project whose spec is refused is left as it is (a typo never tears a workspace
    down); one whose manifests were never materialised is not touched either."""
    folder = specs_dir()
    with_file = set(spec_ids())
    target = target_for(home.root, repair)
    known = known_projects(instance, home, target)
    if not folder.is_dir() or (known and not with_file):
        # fail closed: a missing mount or an emptied folder must not retire every workspace
        raise dg.Failure(
            description=f"the specs folder {folder} is missing or empty while {len(known)} "
            "projects exist; retire projects one by one with hdh workspaces decommission"
        )
    home.workspaces.mkdir(parents=True, exist_ok=True)
    # one delivery at a time: two runs each reading the lake then delivering could otherwise
    # put back another project's older manifests. Runs queue on the workspace_delivery pool
    # (visible in the UI); the lock also covers a call outside any run.
    with exclusive_lock(home.workspaces / ".delivery.lock"):
        live, expired, refused = current_specs()
        retired = (known - with_file) | set(expired)
        desired = desired_state(home.lake, set(live))
        updates: dict = {project: desired[project] for project in sorted(desired)}
        updates |= {project: None for project in sorted(retired)}
        report = target.deliver_partial(updates, run_id=run_id)
        retired_reports = decommission(
            home,
            instance,
            {p for p, d in report.projects.items() if d.status == "decommissioned"} | retired,
            "spec removed or expired",
            run_id,
        )
    return {
        **report.as_dict(),
        "refused_specs": [str(e) for e in refused],
        "decommissioned": retired_reports,
    }


class DeliveryConfig(dg.Config):
    repair_drift: bool = False  # re-apply unchanged objects too (the daily drift run)


@dg.asset(
    key=DEPLOYMENTS_KEY,
    group_name="workspaces",
    pool=DELIVERY_POOL,
    owners=OWNERS,
    kinds={"kubernetes", "git"},
    deps=[dg.AssetDep(MANIFESTS_KEY, partition_mapping=dg.AllPartitionMapping())],
    description=(
        "Every live project's manifests delivered to the configured target: the GitOps "
        "repository HDH_HOME/gitops (one folder per project, one commit per run that changed "
        "something) or, with HDH_KUBECONFIG, a cluster by server-side apply (field manager "
        "hdh-platform, pruning by label). Removed or expired projects are decommissioned: "
        "manifests pruned, grants deleted, a report recorded."
    ),
    metadata={
        "dagster/column_schema": documented_columns(
            {
                "project": ("string", "project id"),
                "status": ("string", "added, updated, unchanged or decommissioned"),
                "added": ("int", "objects added"),
                "changed": ("int", "objects changed"),
                "removed": ("int", "objects removed"),
            }
        )
    },
)
def workspace_deployments(
    context: dg.AssetExecutionContext, config: DeliveryConfig, hdh_home: HomeResource
):
    report = deliver_workspaces(
        context.instance, hdh_home.home, context.run_id, config.repair_drift
    )
    rows = [
        {
            "project": project,
            "status": p["status"],
            "added": len(p["added"]),
            "changed": len(p["changed"]),
            "removed": len(p["removed"]),
        }
        for project, p in report["projects"].items()
    ]
    frame = pl.DataFrame(
        rows,
        schema={
            "project": pl.String,
            "status": pl.String,
            "added": pl.Int64,
            "changed": pl.Int64,
            "removed": pl.Int64,
        },
    )
    context.log.info(f"workspaces delivered to {report['target']}: {report['summary']}")
    return dg.Output(
        frame,
        metadata={
            "target": report["target"],
            "summary": report["summary"],
            "commit": report.get("commit") or "none (no change)",
            "projects": dg.MetadataValue.json(report["projects"]),
            "refused_specs": dg.MetadataValue.json(report["refused_specs"]),
            "decommissioned": dg.MetadataValue.json(report["decommissioned"]),
            "specs_folder": str(specs_dir()),
        },
    )


assets = [workspace_specs, workspace_data_grants, workspace_manifests, workspace_deployments]
