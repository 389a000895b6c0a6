"""``hdh packages``: the runs package_requests_sensor would launch, executed in this process.

Filing a request, deciding on a package or asking for a re-vetting changes files under
``HDH_HOME/packages``; when no daemon runs, the command then executes the same runs the sensor
would (vet the requests, rebuild the projects' indexes) so its answer is final.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import dagster as dg

from hdh_assets.packages.assets import REQUESTS
from hdh_assets.workspaces.assets import PROJECTS
from hdh_cli.runs import RunOutcome, daemon_running, execute
from jobs.packages import (
    publish_package_index_job,
    revet_package_requests_job,
    vet_package_requests_job,
)
from package_manager import service
from package_manager.settings import PackageSettings
from resources.home import HdhHome


@dataclass
class Processed:
    runs: list[RunOutcome]
    left_to_daemon: bool = False


def _run(defs: dg.Definitions, instance: dg.DagsterInstance, job, partition: str, tags=None):
    selection = job.selection.resolve(defs.resolve_asset_graph())
    request = dg.RunRequest(
        partition_key=partition, asset_selection=list(selection), tags=tags or {}
    )
    return execute(defs, instance, request)


def process_here(
    home: HdhHome,
    instance: dg.DagsterInstance,
    request_ids: list[str],
    *,
    revet: bool = False,
    recheck: bool = False,
    defs: dg.Definitions | None = None,
    on_run=lambda outcome: None,
) -> Processed:
    """Vet the requests (resolve them first unless ``revet``; ``recheck`` re-runs every check),
    then rebuild the index of every project whose approved set changed."""
    if daemon_running(instance):
        return Processed([], left_to_daemon=True)
    from hdh_assets.definitions import build_definitions

    defs = defs or build_definitions(home)
    known = set(instance.get_dynamic_partitions(REQUESTS.name))
    missing = [r for r in request_ids if r not in known]
    if missing:
        instance.add_dynamic_partitions(REQUESTS.name, missing)
    runs = []
    job = revet_package_requests_job if revet else vet_package_requests_job
    tags = {service.REVET_TAG: "true"} if recheck else None
    for request_id in request_ids:
        runs.append(_run(defs, instance, job, request_id, tags))
        on_run(runs[-1])
    runs += publish_stale(home, instance, defs, on_run)
    return Processed(runs)


def publish_stale(home: HdhHome, instance: dg.DagsterInstance, defs, on_run=lambda o: None):
    loaded = service.all_requests(home)
    projects = set(instance.get_dynamic_partitions(PROJECTS.name))
    runs = []
    for project in service.stale_indexes(home, loaded.requests.values()):
        if project not in projects:
            instance.add_dynamic_partitions(PROJECTS.name, [project])
        runs.append(_run(defs, instance, publish_package_index_job, project))
        on_run(runs[-1])
    return runs


@contextlib.contextmanager
def serving(home: HdhHome, settings: PackageSettings | None = None) -> Iterator[dict]:
    """The project indexes, started and published: devpi-server for Python (its data under
    HDH_HOME/packages/devpi) and the R repositories' HTTP server. Yields each project's URLs."""
    from package_manager.python_index import DevpiServer
    from package_manager.r_repository import serve_repositories

    settings = settings or PackageSettings.from_env()
    store = service.package_store(home)
    address = urlsplit(settings.devpi_url)
    devpi = DevpiServer(store.devpi_dir, address.port or 80, host=address.hostname or "127.0.0.1")
    devpi.start()
    try:
        with serve_repositories(store.r_repos, url=settings.r_repos_url):
            loaded = service.all_requests(home)
            projects = sorted({r.project for r in loaded.requests.values()})
            urls = {}
            for project in projects:
                state = service.publish_project(project, home, settings)
                urls[project] = {
                    "python_index": state.python_url,
                    "r_repository": state.r_url,
                    "approved": sum(len(p) for p in state.approved.values()),
                }
            yield urls
    finally:
        devpi.stop()


def wait_for_interrupt() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
