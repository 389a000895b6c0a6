"""Provisioning research-project workspaces: one run per project, and delivery alone."""

import dagster as dg

from hdh_assets.workspaces.assets import (
    DEPLOYMENTS_KEY,
    GRANTS_KEY,
    MANIFESTS_KEY,
    PROJECTS,
    SPECS_KEY,
)
from jobs.run_kinds import run_kind_tags

provision_workspaces_job = dg.define_asset_job(
    name="provision_workspaces",
    selection=dg.AssetSelection.assets(SPECS_KEY, GRANTS_KEY, MANIFESTS_KEY, DEPLOYMENTS_KEY),
    partitions_def=PROJECTS,
    description="Validate one project's spec, extract its grants, render and validate its "
    "manifests, then deliver every project (one GitOps commit if anything changed).",
    tags=run_kind_tags("workspaces"),
)

deliver_workspaces_job = dg.define_asset_job(
    name="deliver_workspaces",
    selection=dg.AssetSelection.assets(DEPLOYMENTS_KEY),
    description="Deliver the materialised manifests again: repairs drift, retires removed or "
    "expired projects; no commit and no apply when nothing changed.",
    tags=run_kind_tags("workspaces"),
)
