"""The demo's package step: one example project's requests vetted, decided and served.

The requests are the specs folder's ``package-requests/`` files. They resolve against a local
upstream built from the synthetic generator (pypiserver for Python, an HTTP CRAN-like repository
for R) and are vetted against a small bundled OSV database, through the same runs the sensor
launches. A referent's decision on the one package whose licence cannot be determined shows the
audited path. Settings the environment already gives (``HDH_PYPI_UPSTREAM``, ...) are kept.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from hdh_cli.packages import process_here, serving
from package_manager import service
from package_manager.processes import free_loopback_port
from package_manager.r_repository import serve_repositories
from package_manager.settings import record_osv_export
from package_manager.upstream import start_pypiserver
from resources.home import HdhHome
from synthetic.advisories import write_advisories
from synthetic.python_packages import build_python_upstream
from synthetic.r_packages import build_r_upstream

DEMO_DECISION = {
    "name": "hdh-unknown-licence",
    "version": "1.0.0",
    "reason": "the authors confirmed the MIT licence in writing (demo)",
    "decided_by": "referent:demo",
}


@contextlib.contextmanager
def demo_upstreams(home: HdhHome) -> Iterator[dict[str, str]]:
    """The synthetic upstreams and advisories, served for the duration; the settings to use."""
    root = home.packages / "demo-upstream"
    if not (root / "pypi").is_dir():
        build_python_upstream(root / "pypi")
    if not (root / "cran" / "src" / "contrib" / "PACKAGES").exists():
        build_r_upstream(root / "cran")
    write_advisories(root / "osv")
    if not os.environ.get("HDH_OSV_EXPORT") and not os.environ.get("HDH_OSV_URL"):
        # the daemon (make ui) vets against the same database as the demo
        record_osv_export(home.root, root / "osv")
    with (
        start_pypiserver(root / "pypi", free_loopback_port()) as pypi,
        serve_repositories(root, port=free_loopback_port()) as cran,
    ):
        yield {
            "HDH_PYPI_UPSTREAM": pypi.url,
            "HDH_CRAN_UPSTREAM": f"{cran.url}/cran",
            "HDH_OSV_EXPORT": str(root / "osv"),
        }


@contextlib.contextmanager
def _defaults(values: dict[str, str]) -> Iterator[None]:
    """Environment defaults for this process only; what the environment sets wins."""
    added = {k: v for k, v in values.items() if not os.environ.get(k)}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def run_package_demo(
    home: HdhHome, instance: dg.DagsterInstance, defs: dg.Definitions, on_run
) -> dict:
    """Vet the example requests, take the demo decision, publish; what the summary prints."""
    loaded = service.all_requests(home)
    request_ids = sorted(loaded.requests)
    with demo_upstreams(home) as upstreams, _defaults(upstreams), serving(home) as served:
        processed = process_here(home, instance, request_ids, defs=defs, on_run=on_run)
        store = service.package_store(home)
        decided = any(d.name == DEMO_DECISION["name"] for d in store.decisions.entries())
        waiting = store.vetting(_request_for(loaded.requests, DEMO_DECISION["name"]) or "")
        runs = list(processed.runs)
        if not decided and waiting is not None and waiting.status == "needs_review":
            decisions = service.decide(home, ecosystem="pypi", decision="approve", **DEMO_DECISION)
            touched = sorted(service.requests_touched_by(home, decisions))
            runs += process_here(home, instance, touched, revet=True, defs=defs, on_run=on_run).runs
        statuses = {
            request_id: (
                store.vetting(request_id).status if store.vetting(request_id) else "pending"
            )
            for request_id in request_ids
        }
        projects = {}
        for project in sorted({r.project for r in loaded.requests.values()}):
            state = service.project_state(project, home)
            projects[project] = {
                "python_index": served.get(project, {}).get("python_index", state.python_url),
                "r_repository": state.r_url,
                "approved": {eco: [p.name for p in ps] for eco, ps in state.approved.items()},
            }
    return {
        "requests": statuses,
        "projects": projects,
        "refused_files": loaded.errors,
        "runs": len(runs),
        "failed": [r.run_id for r in runs if not r.success],
        "decisions": len(service.package_store(home).decisions.entries()),
        "folder": str(Path(home.packages)),
    }


def _request_for(requests: dict, name: str) -> str | None:
    return next((rid for rid, r in requests.items() if r.name == name), None)
