"""``hdh demo``, the main job: sample into the landing zone, materialise everything, summarise.

It runs, in this process, what the daemon would launch for the sample: the landing sensors'
runs, the claims months, then whatever the assets' automation conditions request; then a
release, the example workspaces, one project's package requests vetted and served, and one
erasure through the rights sensor's steps. It must
always run end to end on a fresh HDH_HOME.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import dagster as dg

from hdh_assets.definitions import build_definitions
from hdh_assets.gdpr.service import file_sample_erasure
from hdh_assets.landing.batches import landing_batch, ready_batches
from hdh_assets.landing.partitions import BATCH_PARTITIONS, LANDING_SOURCES
from hdh_assets.products.publishing import release_product
from hdh_assets.products.releases import ReleaseStore
from hdh_cli.ingest import ingest_batches
from hdh_cli.package_demo import run_package_demo
from hdh_cli.rights import process_here
from hdh_cli.runs import RunOutcome, daemon_running
from hdh_cli.status import PlatformStatus, collect_status
from hdh_cli.workspaces import apply as apply_workspaces
from resources.home import HdhHome
from resources.pseudonymisation import PseudonymisationKeyResource
from resources.rights_registry import RightsRegistry
from synthetic.sample import Progress, SampleConfig, SampleSummary, generate_sample
from synthetic.synthea_style import synthea_style_export


class DemoRefused(RuntimeError):
    """The demo cannot run now; the message says why."""


@dataclass
class DemoReport:
    sample: SampleSummary
    runs: list[RunOutcome] = field(default_factory=list)
    status: PlatformStatus | None = None
    erasure: dict | None = None
    workspaces: dict | None = None
    viewer: dict | None = None
    packages: dict | None = None
    automation: list = field(default_factory=list)  # what each evaluation of the conditions asked

    @property
    def success(self) -> bool:
        erased = self.erasure is None or self.erasure["status"] == "completed"
        provisioned = self.workspaces is None or not self.workspaces["failed"]
        vetted = self.packages is None or not self.packages["failed"]
        return all(r.success for r in self.runs) and erased and provisioned and vetted

    def to_json(self) -> dict:
        return {
            "success": self.success,
            "sample": self.sample.to_json(),
            "runs": [r.to_json() for r in self.runs],
            "status": self.status.to_json() if self.status else None,
            "erasure": self.erasure,
            "workspaces": self.workspaces,
            "viewer": self.viewer,
            "packages": self.packages,
            "automation": self.automation,
        }


def register_batches(instance: dg.DagsterInstance, home: HdhHome, source: str) -> list[str]:
    """What the landing sensor does, done synchronously: ready batches become partitions."""
    partitions = BATCH_PARTITIONS[source]
    names = [b.name for b in ready_batches(home.landing_for(source), quiet_seconds=0)]
    known = set(instance.get_dynamic_partitions(partitions.name))
    new = [n for n in names if n not in known]
    if new:
        instance.add_dynamic_partitions(partitions.name, new)
    return names


def run_demo(
    home: HdhHome,
    instance: dg.DagsterInstance,
    config: SampleConfig,
    progress: Progress,
    on_run=lambda outcome: None,
) -> DemoReport:
    if daemon_running(instance):
        raise DemoRefused(
            "a Dagster daemon is running against this HDH_HOME (make ui): it would launch the "
            "same runs as the demo; stop it first, or let it ingest what you land"
        )
    home.ensure()
    report = DemoReport(sample=generate_sample(home.landing, home.sample, config, progress))
    # A second JSON provider, shaped like a US Synthea export: other resource types, no NIR.
    with landing_batch(home.landing_for("json"), "synthea-style-us") as folder:
        synthea_style_export(folder, patients=5, seed=config.seed)

    def ran(outcome: RunOutcome) -> None:
        report.runs.append(outcome)
        progress("materialisation runs", 1, None)
        on_run(outcome)

    definitions = build_definitions(home)
    graph = definitions.resolve_asset_graph()
    # What the landing sensors, the claims months sensor and the automation sensor would
    # launch, in this process: every batch, the months of claims they touch, then whatever the
    # assets' automation conditions request (series, studies, products, subject index, ...).
    batches = [
        (source, batch)
        for source in LANDING_SOURCES
        for batch in register_batches(instance, home, source)
    ]
    _, followed = ingest_batches(definitions, instance, home, batches, on_run=ran)
    report.automation = followed.requested
    # A data referent releases a product that holds people, so the erasure must re-issue it,
    # and the releases the example projects are granted.
    store = ReleaseStore(home.releases)
    wanted = {("chronic_medication_cohort", None), *granted_releases()}
    for product, version in sorted(wanted, key=str):
        if not store.releases(product):  # a rerun has them
            release_product(home, graph, instance, product, version)
    # Two research projects get their workspaces: grants extracted, manifests in HDH_HOME/gitops.
    provisioning = apply_workspaces(home, instance, definitions, on_run=ran)
    report.automation += provisioning["automation"]
    report.workspaces = {
        "provisioned": provisioning["provisioned"],
        "failed": provisioning["failed"],
        "delivery": provisioning["delivery"].get("summary"),
        "commit": provisioning["delivery"].get("commit"),
    }
    # One project's packages: requested, vetted, one referent decision, served by its indexes.
    report.packages = run_package_demo(home, instance, definitions, ran)
    # One erasure end to end: a person of the sample files it, the DPO verifies, and the runs
    # the rights sensor would launch are executed here.
    people = json.loads((home.sample / "identities.json").read_text())["people"]
    served_before = served_studies(home)
    registry = RightsRegistry.from_env(home)
    request_id = file_sample_erasure(
        home, registry, people[1 % len(people)], PseudonymisationKeyResource()
    )
    erasure = process_here(definitions, instance, registry, request_id)
    report.erasure = {
        "id": erasure.request_id,
        "status": erasure.status,
        "assets": erasure.report.get("assets", []),
        "files_removed": len(erasure.report.get("files_removed", [])),
        "runs": len(erasure.report.get("runs", [])),
        "releases_reissued": erasure.report.get("releases_reissued", []),
        "raw_copies_removed": erasure.report.get("raw_copies_removed", []),
        "raw_copies_clean": erasure.report.get("raw_copies_clean"),
        # what the DICOMweb service (and so every viewer) stopped serving
        "studies_no_longer_served": len(served_before - served_studies(home)),
    }
    progress("materialisation runs", len(erasure.runs), None)
    report.status = collect_status(definitions, instance, home)
    report.viewer = project_viewer(home)
    return report


def served_studies(home: HdhHome) -> set[str]:
    """The studies the DICOMweb service serves an operator now."""
    from dicomweb.index import IndexSource

    return IndexSource(home).current().study_uids()


def project_viewer(home: HdhHome, host: str = "127.0.0.1") -> dict | None:
    """A project that sees a study (the development provider's demo member's project first),
    the viewer ``make ui`` serves (signed in), whom to sign in as, and the link that opens one
    of its studies; None when no project sees any."""
    from auth.dev_provider import EXAMPLE_PROJECT, demo_accounts
    from auth.settings import OidcSettings
    from dicomweb.access import Access
    from dicomweb.index import IndexSource
    from dicomweb.tokens import Claims
    from hdh_assets.imaging.viewer import study_link, viewer_url
    from viewer.projects import provisioned_projects

    view = IndexSource(home).current()
    access = Access(home)
    projects = sorted(provisioned_projects(home.workspaces), key=lambda p: p != EXAMPLE_PROJECT)
    settings = OidcSettings.from_env()
    for project in projects:
        studies = sorted(access.visible(Claims(project=project, all=False, expires=0), view))
        if not studies:
            continue
        group = settings.project_group_for(project)
        members = [a.username for a in demo_accounts(home.secrets, settings) if group in a.groups]
        url = viewer_url()
        return {
            "project": project,
            "url": url,
            "studies": len(studies),
            "study": study_link(studies[0], url),
            "sign_in_as": members[0] if members and settings.development else None,
        }
    return None


def granted_releases() -> set[tuple[str, str]]:
    """(product, version) of every grant in the live workspace specs."""
    from hdh_assets.workspaces.config import current_specs

    live, _, _ = current_specs()
    return {(g.product, g.version) for spec in live.values() for g in spec.grants}
