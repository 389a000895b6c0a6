"""The one code location: every domain's assets, with resources chosen by configuration."""

from __future__ import annotations

import os

import dagster as dg

from hdh_assets.claims import assets as claims
from hdh_assets.clinical import assets as clinical
from hdh_assets.gdpr.assets import (
    exclusions,
    proof_checks,
    request_assets,
    subject_index_asset,
)
from hdh_assets.imaging import assets as imaging
from hdh_assets.landing.partitions import LANDING_SOURCES
from hdh_assets.packages import assets as packages
from hdh_assets.products import linkage
from hdh_assets.products.assets import load_products
from hdh_assets.products.models import sql_dir_from_env
from hdh_assets.workspaces import assets as workspaces
from jobs.ingestion import landing_job
from jobs.packages import (
    publish_package_index_job,
    revet_package_requests_job,
    vet_package_requests_job,
)
from jobs.run_kinds import step_executor
from jobs.workspaces import deliver_workspaces_job, provision_workspaces_job
from resources.home import HdhHome
from resources.imaging import DicomIngestionResource
from resources.lake import LakeIOManager
from resources.platform import HomeResource
from resources.pseudonymisation import PseudonymisationKeyResource
from resources.rights_registry import RIGHTS_DB_ENV, RIGHTS_KEY_ENV, RightsRegistryResource
from resources.spark import spark_resource
from sensors.automation import automation_sensor, claims_months_sensor
from sensors.imaging import dicomweb_health_sensor
from sensors.landing import landing_sensor
from sensors.packages import package_requests_sensor, vulnerability_database_sensor
from sensors.rights import rights_sensor
from sensors.workspaces import workspace_drift_schedule, workspace_specs_sensor

SOURCE_ASSETS = [*imaging.assets, *clinical.assets, *claims.assets, *linkage.assets]
PRODUCT_ASSETS = load_products(sql_dir_from_env(), SOURCE_ASSETS)
DOMAIN_ASSETS = [*SOURCE_ASSETS, *PRODUCT_ASSETS, *workspaces.assets]
PLATFORM_ASSETS = [*DOMAIN_ASSETS, subject_index_asset(DOMAIN_ASSETS), exclusions]
ALL_ASSETS = [*PLATFORM_ASSETS, *request_assets(PLATFORM_ASSETS), *packages.assets]
PROOF_CHECKS = proof_checks(DOMAIN_ASSETS)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def _env_secret(name: str):
    """A secret read by Dagster at run time (``dg.EnvVar``), when the environment sets it."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def build_resources(home: HdhHome | None = None) -> dict:
    """Resources for a platform rooted at ``home`` (``HDH_HOME`` by default)."""
    home = home or HdhHome.from_env()
    return {
        "io_manager": LakeIOManager(base_path=str(home.lake)),
        "hdh_home": HomeResource(root=str(home.root)),
        "pseudonymisation": PseudonymisationKeyResource(
            require_configured_key=_env_flag("HDH_REQUIRE_KEY")
        ),
        "pyspark": spark_resource(),
        "dicom_ingestion": DicomIngestionResource.from_env(),
        "rights_registry": RightsRegistryResource(
            url=_env_secret(RIGHTS_DB_ENV), key=_env_secret(RIGHTS_KEY_ENV)
        ),
    }


def build_definitions(home: HdhHome | None = None) -> dg.Definitions:
    landing_jobs = {source: landing_job(source, ALL_ASSETS) for source in LANDING_SOURCES}
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=PROOF_CHECKS,
        jobs=[
            *landing_jobs.values(),
            provision_workspaces_job,
            deliver_workspaces_job,
            vet_package_requests_job,
            revet_package_requests_job,
            publish_package_index_job,
        ],
        sensors=[
            *(landing_sensor(source, job) for source, job in landing_jobs.items()),
            claims_months_sensor,
            automation_sensor,
            rights_sensor,
            workspace_specs_sensor,
            dicomweb_health_sensor,
            package_requests_sensor,
            vulnerability_database_sensor,
        ],
        schedules=[workspace_drift_schedule],
        resources=build_resources(home),
        # One process per run: the run queue spreads the work, and a run does not start one
        # more process (and load the code location again) for each of its steps. On Kubernetes,
        # HDH_STEP_EXECUTOR=k8s makes each step a pod of its own instead.
        executor=step_executor(),
    )


defs = build_definitions()
