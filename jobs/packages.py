"""The package manager's runs: vet one request, vet it again, rebuild one project's index."""

import dagster as dg

from hdh_assets.packages.assets import (
    CLOSURES_KEY,
    INDEX_KEY,
    REQUESTS,
    REQUESTS_KEY,
    VETTING_KEY,
)
from hdh_assets.workspaces.assets import PROJECTS
from jobs.run_kinds import run_kind_tags

vet_package_requests_job = dg.define_asset_job(
    name="vet_package_requests",
    selection=dg.AssetSelection.assets(REQUESTS_KEY, CLOSURES_KEY, VETTING_KEY),
    partitions_def=REQUESTS,
    description="Record one package request, resolve its dependency closure and vet every "
    "member of it.",
    tags=run_kind_tags("packages"),
)

revet_package_requests_job = dg.define_asset_job(
    name="revet_package_requests",
    selection=dg.AssetSelection.assets(VETTING_KEY),
    partitions_def=REQUESTS,
    description="Vet one request's closure again: after a referent's decision, or when the "
    "vulnerability database changed (run tag hdh/revet=true re-runs every check).",
    tags=run_kind_tags("packages"),
)

publish_package_index_job = dg.define_asset_job(
    name="publish_package_index",
    selection=dg.AssetSelection.assets(INDEX_KEY),
    partitions_def=PROJECTS,
    description="Rebuild one project's Python index and R repository from its approved "
    "closures (incremental: only what changed is uploaded or copied).",
    tags=run_kind_tags("packages"),
)
