"""The package manager under the platform's stated load: N requests (Python and R, one request per
package) resolved and vetted through the platform's own path, then one project's indexes rebuilt.

The Python upstream is shaped like real deliveries: real wheels and sdists nobody here wrote
(``pip download`` of a fixed list of ~30 packages with their dependencies and the build backends
their sdists need, through the machine's configured indexes, into a cache under the work
directory), the demo catalogue's problem cases (no licence, a setup.py that fetches code, a
typosquat, a known vulnerability, a copyleft licence, no installable file, a conflict), and the
synthetic bulk set up to the requested count. If the download fails the run says so and goes on
with the synthetic set alone. It is served by pypiserver; the R upstream (the demo packages and the
bulk set, indexed by R) by a static HTTP server; the OSV export holds the demo advisories.

Every request goes through ``service.resolve`` (uv) and ``service.vet`` (one pip-audit and one
guarddog process per request with new files; files already vetted by an earlier request are read
from the platform's per-file results) with a real ``HdhHome`` in the work directory. The baseline,
measured in the same run on the first ``--baseline-requests`` requests in a home of its own:
closures with pip's resolver, and vetting one package at a time (``vet_package``: one pip-audit and
one guarddog process per package, each file still vetted once). Its full-load figure is
extrapolated from its per-request and per-package costs, and labelled so.

Then devpi-server (with the constrained index) and the R repositories start, the busiest project
is published once, one more request is approved, and ``service.publish_project`` is timed again
(goal: incremental, under 2 s; printed, not asserted).

    .venv/bin/python benchmarks/packages.py [--requests 700] [--baseline-requests 30]
        [--r-share 0.3] [--work-dir DIR] [--no-download] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from package_manager import service
from package_manager.model import PackageRequest, ResolvedPackage, canonical_name
from package_manager.python_closure import resolve_python
from package_manager.python_index import DevpiServer
from package_manager.r_repository import serve_repositories
from package_manager.requests import file_request, make_request
from package_manager.settings import PackageSettings
from package_manager.upstream import start_pypiserver
from package_manager.vetting import (
    ProvenanceLedger,
    VettingContext,
    load_policy,
    vet_package,
)
from resources.home import HdhHome
from synthetic.advisories import write_advisories
from synthetic.python_packages import (
    SyntheticPackage,
    build_python_upstream,
    build_python_upstream_bulk,
    bulk_name,
    catalogue,
    wheel,
)
from synthetic.r_packages import (
    build_r_upstream,
    build_r_upstream_bulk,
    bulk_r_name,
    upstream_specs,
)
from tests.packages.r_upstream import serve_folder

PUBLISH_GOAL_SECONDS = 2.0
PROJECTS = ("diabetes-outcomes", "cardio-imaging")  # the example specs' projects
# Real packages a research project asks for, fetched with their dependencies as wheels.
REAL_WHEELS = (
    "requests",
    "click",
    "jinja2",
    "attrs",
    "python-dateutil",
    "pytz",
    "packaging",
    "tqdm",
    "tabulate",
    "toolz",
    "more-itertools",
    "pyyaml",
    "joblib",
    "threadpoolctl",
    "rich",
    "typing-extensions",
    "wrapt",
    "decorator",
    "platformdirs",
    "filelock",
    "cachetools",
    "jsonschema",
    "pluggy",
    "iniconfig",
    "sortedcontainers",
    "humanize",
    "simplejson",
    "openpyxl",
    "networkx",
)
# What the sdists below need to be built (pip always builds an sdist's metadata; uv when it is
# not static): without them on the upstream those requests could not be resolved.
BUILD_BACKENDS = ("setuptools", "wheel", "flit-core<4", "hatchling", "hatch-vcs")
# Source-only in this upstream: legacy setup.py (docopt, six), flit (itsdangerous, blinker),
# hatchling with hatch-vcs (termcolor); static and dynamic metadata both.
REAL_SDISTS = ("docopt", "six", "termcolor", "itsdangerous", "blinker")
# Held out of the batch: the one more approval whose publication is timed (a real package with
# no dependencies); with the synthetic set only, a synthetic package of a name unlike the others.
HOLDOUT = "tabulate"
SYNTHETIC_EXTRA = SyntheticPackage(
    "hdh-benchmark-extra", "1.0.0", (f"{bulk_name(0)}>=1",), license="MIT"
)
REASON = "needed for the project's analysis (benchmark)"
REQUESTER = "benchmark@hdh.example"


# --- the upstreams -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pip_download(target: Path, args: list[str]) -> tuple[bool, str]:
    """``pip download`` with the machine's configured indexes (not --isolated)."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(target), *args]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return done.returncode == 0, " | ".join(tail)


def real_archives(cache: Path, download: bool) -> tuple[list[Path], str]:
    """The real wheels and sdists (downloaded once into ``cache``) and what happened."""
    wheels, sdists = cache / "wheels", cache / "sdists"
    if not download:
        return [], "real packages: not downloaded (--no-download): synthetic set only"
    notes = []
    if not any(wheels.glob("*.whl")):
        wheels.mkdir(parents=True, exist_ok=True)
        ok, tail = _pip_download(wheels, ["--only-binary", ":all:", *REAL_WHEELS, *BUILD_BACKENDS])
        if not ok:
            shutil.rmtree(wheels)
            return [], (
                f"REAL PACKAGES UNAVAILABLE: pip download of the wheels failed ({tail}); "
                "falling back to the synthetic set only"
            )
        notes.append("downloaded")
    else:
        notes.append(f"reused from {cache}")
    if not any(sdists.glob("*.tar.gz")):
        sdists.mkdir(parents=True, exist_ok=True)
        ok, tail = _pip_download(sdists, ["--no-binary", ":all:", "--no-deps", *REAL_SDISTS])
        if not ok:
            shutil.rmtree(sdists)
            notes.append(f"SDISTS UNAVAILABLE (pip download failed: {tail}): wheels only")
    files = sorted(wheels.glob("*.whl")) + sorted(sdists.glob("*.tar.gz"))
    # an sdist of a name also present as a wheel would never be picked: keep the wheel only
    wheel_names = {_dist_name(p.name) for p in files if p.suffix == ".whl"}
    files = [p for p in files if p.suffix == ".whl" or _dist_name(p.name) not in wheel_names]
    return files, "real packages: " + ", ".join(notes)


def _dist_name(filename: str) -> str:
    try:
        if filename.endswith(".whl"):
            return canonicalize_name(parse_wheel_filename(filename)[0])
        return canonicalize_name(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return filename


@dataclass
class Planned:
    ecosystem: str
    name: str
    kind: str  # "real", "demo" or "bulk"
    project: str = ""


def plan(args: argparse.Namespace, real: list[Path]) -> tuple[list[Planned], int, int, Planned]:
    """The N requests (shuffled, seeded), the bulk counts, and one reserved extra request."""
    n_r = round(args.requests * args.r_share)
    n_py = args.requests - n_r
    present = {_dist_name(p.name) for p in real}
    asked = [canonicalize_name(n) for n in (*REAL_WHEELS, *REAL_SDISTS)]
    # the packages asked for by name first, then their dependencies and the build backends
    real_names = [n for n in asked if n in present] + sorted(present - set(asked))
    if HOLDOUT in real_names:
        real_names.remove(HOLDOUT)
        extra = Planned("pypi", HOLDOUT, "real", PROJECTS[0])
    else:
        extra = Planned("pypi", SYNTHETIC_EXTRA.name, "synthetic", PROJECTS[0])
    demo_py = list(dict.fromkeys(canonicalize_name(p.name) for p in catalogue()))
    demo_r = [s.name for s in upstream_specs()]
    cap = int(n_py * 0.6)  # small runs keep some of the bulk set too
    if len(real_names) + len(demo_py) > cap:
        keep = round(cap * len(real_names) / (len(real_names) + len(demo_py)))
        real_names, demo_py = real_names[:keep], demo_py[: cap - keep]
    python = [Planned("pypi", n, "real") for n in real_names]
    python += [Planned("pypi", n, "demo") for n in demo_py]
    bulk_py = n_py - len(python)
    python += [Planned("pypi", bulk_name(i), "bulk") for i in range(bulk_py)]
    r = [Planned("cran", n, "demo") for n in demo_r][:n_r]
    bulk_r = n_r - len(r)
    r += [Planned("cran", bulk_r_name(i), "bulk") for i in range(bulk_r)]
    planned = python + r
    rng = random.Random(args.seed)
    rng.shuffle(planned)
    for i, p in enumerate(planned):
        p.project = PROJECTS[i % 2]
    return planned, bulk_py, bulk_r, extra


# --- measurements ----------------------------------------------------------------------------------


@dataclass
class Row:
    request_id: str
    ecosystem: str
    kind: str
    closure_s: float
    vet_s: float
    members: int
    new: int
    status: str
    error: str | None = None
    members_keys: list = field(default_factory=list)


def file_key(p: ResolvedPackage) -> tuple[str, str, str, str]:
    return (p.ecosystem, canonical_name(p.ecosystem, p.name), p.version, p.sha256)


def run_requests(
    requests: list[PackageRequest], planned: list[Planned], home: HdhHome, progress: bool = True
) -> list[Row]:
    store = service.package_store(home)
    seen: set[tuple] = set()
    rows = []
    started = time.perf_counter()
    for number, (request, p) in enumerate(zip(requests, planned, strict=True), 1):
        file_request(request, store.filed_requests)
        t0 = time.perf_counter()
        closure = service.resolve(request, home)
        t1 = time.perf_counter()
        vetting, _ = service.vet(request, home)
        t2 = time.perf_counter()
        keys = [file_key(m) for m in closure.packages]
        new = sum(1 for k in set(keys) if k not in seen)
        seen.update(keys)
        rows.append(
            Row(
                request.request_id,
                request.ecosystem,
                p.kind,
                t1 - t0,
                t2 - t1,
                len(keys),
                new,
                vetting.status,
                closure.error,
                keys,
            )
        )
        if progress and (number % 25 == 0 or number == len(requests)):
            elapsed = time.perf_counter() - started
            print(
                f"  {number}/{len(requests)} requests, {len(seen)} distinct files vetted, "
                f"{elapsed:.0f} s",
                flush=True,
            )
    return rows


def run_baseline(
    requests: list[PackageRequest], rows: list[Row], home: HdhHome, baseline_home: HdhHome
) -> dict:
    """pip's resolver for the Python closures; one vet_package per file for the vetting."""
    settings = PackageSettings.from_env()
    ours_store = service.package_store(home)
    store = service.package_store(baseline_home)
    closures: list[dict] = []
    for request in requests:
        if request.ecosystem != "pypi":
            continue
        t0 = time.perf_counter()
        closure = resolve_python(
            request,
            settings.pypi_upstream or "",
            work_dir=store.work,
            resolver="pip",
            store=store.files,
        )
        seconds = time.perf_counter() - t0
        ours = ours_store.closure(request.request_id)
        same = ours is not None and {file_key(m) for m in closure.packages} == {
            file_key(m) for m in ours.packages
        }
        closures.append(
            {
                "request_id": request.request_id,
                "seconds": seconds,
                "same_closure_as_uv": same,
                "error": closure.error,
            }
        )
    vetted: set[tuple] = set()
    vet_rows: list[dict] = []
    policy = load_policy(settings.policy_path)
    ledger = ProvenanceLedger(store.provenance_path)
    for request in requests:
        closure = ours_store.closure(request.request_id)
        packages = [p for p in (closure.packages if closure else ()) if file_key(p) not in vetted]
        t0 = time.perf_counter()
        if packages:
            with service.vulnerability_service(settings) as (osv_url, _fingerprint):
                ctx = VettingContext(policy=policy, osv_source=osv_url, ledger=ledger)
                for package in packages:
                    vet_package(package, service.archive_path(package, ours_store), ctx)
        vet_rows.append(
            {
                "request_id": request.request_id,
                "ecosystem": request.ecosystem,
                "seconds": time.perf_counter() - t0,
                "new": len(packages),
                "new_pypi": sum(1 for p in packages if p.ecosystem == "pypi"),
            }
        )
        vetted.update(file_key(p) for p in packages)
    return {"closures": closures, "vetting": vet_rows}


def publish_timings(
    home: HdhHome, extra: PackageRequest, work: Path, args: argparse.Namespace
) -> dict:
    """Publish the project once, approve one more request, publish again (timed)."""
    settings = PackageSettings.from_env()
    store = service.package_store(home)
    devpi_port = int(settings.devpi_url.rsplit(":", 1)[1])
    r_port = int(settings.r_repos_url.rsplit(":", 1)[1])
    out: dict = {"project": extra.project}
    with ExitStack() as stack:
        t0 = time.perf_counter()
        devpi = DevpiServer(store.devpi_dir, devpi_port, log=work / "devpi.log")
        stack.enter_context(devpi)
        stack.enter_context(serve_repositories(store.r_repos, port=r_port))
        out["servers_start_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        state = service.publish_project(extra.project, home)
        out["first_publish_s"] = time.perf_counter() - t0
        out["approved_before"] = {eco: len(ps) for eco, ps in state.approved.items()}
        out["served"] = state.served
        t0 = time.perf_counter()
        service.publish_project(extra.project, home)
        out["unchanged_publish_s"] = time.perf_counter() - t0
        file_request(extra, store.filed_requests)
        t0 = time.perf_counter()
        service.resolve(extra, home)
        vetting, _ = service.vet(extra, home)
        out["extra_request"] = extra.request_id
        out["extra_status"] = vetting.status
        out["extra_vet_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        state = service.publish_project(extra.project, home)
        out["incremental_publish_s"] = time.perf_counter() - t0
        out["approved_after"] = {eco: len(ps) for eco, ps in state.approved.items()}
        mismatches = service.served_mismatches(state)
        out["served_mismatches"] = mismatches[:5]
        out["extra_served"] = canonicalize_name(extra.name) in {
            canonicalize_name(n) for n in state.served_python or ()
        }
    # what every publication (twice, in project_state) and every vetting with new files (once,
    # for the approved names) reads: every request's stored vetting
    t0 = time.perf_counter()
    vettings = store.vettings()
    out["read_all_vettings_s"] = time.perf_counter() - t0
    out["vettings"] = len(vettings)
    out["vettings_mb"] = (
        sum(p.stat().st_size for p in (store.root / "vetting").glob("*.json")) / 1e6
    )
    return out


# --- reporting ------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def _pct(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(sorted(values), n=100, method="inclusive")[q - 1]


def vetting_split(rows: list[dict]) -> dict:
    """Per-package costs: requests whose files were all vetted before give the cost of a cached
    member; requests with new files give (their time - cached members x that cost) / new files."""
    cached_only = [r for r in rows if r["new"] == 0 and r["members"]]
    with_new = [r for r in rows if r["new"]]
    cached_s = sum(r["vet_s"] for r in cached_only)
    cached_members = sum(r["members"] for r in cached_only)
    per_cached = cached_s / cached_members if cached_members else 0.0
    new_files = sum(r["new"] for r in with_new)
    new_s = sum(r["vet_s"] for r in with_new) - per_cached * sum(
        r["members"] - r["new"] for r in with_new
    )
    return {
        "requests_all_cached": len(cached_only),
        "requests_with_new_files": len(with_new),
        "cached_members": cached_members + sum(r["members"] - r["new"] for r in with_new),
        "cached_member_s": per_cached,
        "first_time_files": new_files,
        "first_time_file_s": new_s / new_files if new_files else 0.0,
        "first_time_total_s": new_s,
        "per_request_with_new_s": _mean([r["vet_s"] for r in with_new]),
    }


def summarise(
    rows: list[Row], baseline: dict, publish: dict, k: int, meta: dict, wall: float
) -> dict:
    table = [r.__dict__ | {"members_keys": None} for r in rows]
    closure_all = [r.closure_s for r in rows]
    vet_all = [r.vet_s for r in rows]
    by_eco = {
        eco: {
            "requests": sum(1 for r in rows if r.ecosystem == eco),
            "closure_total_s": sum(r.closure_s for r in rows if r.ecosystem == eco),
            "closure_mean_s": _mean([r.closure_s for r in rows if r.ecosystem == eco]),
            "closure_p95_s": _pct([r.closure_s for r in rows if r.ecosystem == eco], 95),
            "vet_total_s": sum(r.vet_s for r in rows if r.ecosystem == eco),
            "vetting": vetting_split([t for t in table if t["ecosystem"] == eco]),
        }
        for eco in ("pypi", "cran")
    }
    first = rows[:k]
    py_first = [r for r in first if r.ecosystem == "pypi"]
    ours_py_closure = sum(r.closure_s for r in py_first)
    pip_closure = sum(c["seconds"] for c in baseline["closures"])
    ours_vet_first = sum(r.vet_s for r in first)
    base_vet = sum(v["seconds"] for v in baseline["vetting"])
    base_new = sum(v["new"] for v in baseline["vetting"])
    base_per_file = {}
    for eco in ("pypi", "cran"):
        files = sum(v["new"] for v in baseline["vetting"] if v["ecosystem"] == eco)
        seconds = sum(v["seconds"] for v in baseline["vetting"] if v["ecosystem"] == eco)
        base_per_file[eco] = seconds / files if files else None
    ours_new_first = sum(r.new for r in first)
    # extrapolation of the baseline to the whole load, from its own per-unit costs
    n_py = by_eco["pypi"]["requests"]
    pip_per_request = pip_closure / len(baseline["closures"]) if baseline["closures"] else 0.0
    base_per_new_file = base_vet / base_new if base_new else 0.0
    total_new = sum(r.new for r in rows)
    base_closure_total = pip_per_request * n_py + by_eco["cran"]["closure_total_s"]
    # ours, with each ecosystem's first-time vetting at the baseline's cost per file (the same
    # per-file results reused for files already vetted)
    base_vet_total = sum(vet_all)
    for eco in ("pypi", "cran"):
        split = by_eco[eco]["vetting"]
        if base_per_file[eco] is not None:
            base_vet_total += (
                base_per_file[eco] * split["first_time_files"] - split["first_time_total_s"]
            )
    statuses = Counter((r.ecosystem, r.kind, r.status) for r in rows)
    fifth = max(len(rows) // 5, 1)
    trend = {
        part: _mean([r.vet_s for r in chunk if r.ecosystem == "pypi" and r.new])
        for part, chunk in (("first_fifth", rows[:fifth]), ("last_fifth", rows[-fifth:]))
    }
    return {
        "meta": meta,
        "requests": len(rows),
        "closure_total_s": sum(closure_all),
        "closure_mean_s": _mean(closure_all),
        "vet_total_s": sum(vet_all),
        "vet_mean_s": _mean(vet_all),
        "distinct_files_vetted": total_new,
        "by_ecosystem": by_eco,
        "statuses": {"/".join(k): v for k, v in sorted(statuses.items())},
        "python_vet_with_new_files_s": trend,
        "baseline": {
            "requests": k,
            "python_requests": len(py_first),
            "ours_python_closure_s": ours_py_closure,
            "pip_python_closure_s": pip_closure,
            "closure_ratio_pip_over_uv": pip_closure / ours_py_closure if ours_py_closure else None,
            "pip_closures_differing_from_uv": sum(
                1 for c in baseline["closures"] if not c["same_closure_as_uv"]
            ),
            "ours_vet_s": ours_vet_first,
            "one_at_a_time_vet_s": base_vet,
            "files_vetted": base_new,
            "ours_files_vetted": ours_new_first,
            "vet_ratio_one_at_a_time_over_batch": base_vet / ours_vet_first
            if ours_vet_first
            else None,
            "one_at_a_time_per_file_s": base_per_new_file,
            "one_at_a_time_per_file_s_by_ecosystem": base_per_file,
            "extrapolated_closure_total_s": base_closure_total,
            "extrapolated_vet_total_s": base_vet_total,
            "closures": baseline["closures"],
            "vetting": baseline["vetting"],
        },
        "publish": publish,
        "wall_s": wall,
        "rows": table,
    }


def report(s: dict) -> None:
    b, p, m = s["baseline"], s["publish"], s["meta"]
    print()
    print("=" * 96)
    print(
        f"package manager benchmark: {s['requests']} requests ({m['python_requests']} Python, "
        f"{m['r_requests']} R), {s['distinct_files_vetted']} distinct files vetted"
    )
    print(f"upstream: {m['upstream']}")
    print(f"{m['real_note']}")
    print("-" * 96)
    print(f"{'':34} {'total s':>9} {'per request s':>14} {'p95 s':>8} {'requests':>9}")
    for eco, label in (("pypi", "Python"), ("cran", "R")):
        e = s["by_ecosystem"][eco]
        print(
            f"{'closure ' + label:34} {e['closure_total_s']:9.1f} {e['closure_mean_s']:14.2f} "
            f"{e['closure_p95_s']:8.2f} {e['requests']:9d}"
        )
    print(f"{'closure, all':34} {s['closure_total_s']:9.1f} {s['closure_mean_s']:14.2f}")
    for eco, label in (("pypi", "Python"), ("cran", "R")):
        e = s["by_ecosystem"][eco]
        print(
            f"{'vetting ' + label:34} {e['vet_total_s']:9.1f} {e['vet_total_s'] / max(e['requests'], 1):14.2f}"
        )
    print(f"{'vetting, all':34} {s['vet_total_s']:9.1f} {s['vet_mean_s']:14.2f}")
    print("-" * 96)
    print(f"{'vetting per package':34} {'files':>9} {'s/file':>14} {'total s':>8}")
    for eco, label in (("pypi", "Python"), ("cran", "R")):
        v = s["by_ecosystem"][eco]["vetting"]
        print(
            f"{'  first time, ' + label:34} {v['first_time_files']:9d} "
            f"{v['first_time_file_s']:14.3f} {v['first_time_total_s']:8.1f}"
        )
        if v["requests_all_cached"]:
            print(
                f"{'  already vetted, ' + label:34} {v['cached_members']:9d} "
                f"{v['cached_member_s']:14.3f} {v['cached_members'] * v['cached_member_s']:8.1f}"
            )
        else:
            print(f"{'  already vetted, ' + label:34} {v['cached_members']:9d}   n/a (no request")
            print(f"{'':34} {'':9}   whose files were all vetted before)")
    print(
        "  (already vetted: cost per member from requests whose files were all vetted before; "
        "first time:\n   the other requests' time less their vetted members at that cost, per "
        "new file)"
    )
    trend = s["python_vet_with_new_files_s"]
    print(
        f"  Python request with new files: {trend['first_fifth']:.2f} s in the first fifth of the "
        f"run, {trend['last_fifth']:.2f} s in the last"
    )
    print("-" * 96)
    print(
        f"baseline, same run, first {b['requests']} requests ({b['python_requests']} Python), "
        "in a home of its own:"
    )
    ratio = b["closure_ratio_pip_over_uv"]
    if ratio is not None:
        print(
            f"  Python closures   uv {b['ours_python_closure_s']:7.1f} s   "
            f"pip {b['pip_python_closure_s']:7.1f} s   pip/uv {ratio:.1f}x"
        )
    else:
        print("  Python closures: no Python request among them")
    print("  R closures        the same path in both (R's tools::package_dependencies)")
    for c in b["closures"]:
        if not c["same_closure_as_uv"]:
            why = (c["error"] or "other files")[:70]
            print(f"    pip's closure differs from uv's: {c['request_id']}: {why}")
    vr = b["vet_ratio_one_at_a_time_over_batch"]
    if vr:
        per = b["one_at_a_time_per_file_s_by_ecosystem"]
        per_text = ", ".join(
            f"{label} {per[eco]:.2f} s/file"
            for eco, label in (("pypi", "Python"), ("cran", "R"))
            if per[eco] is not None
        )
        print(
            f"  vetting           batch {b['ours_vet_s']:7.1f} s   one at a time "
            f"{b['one_at_a_time_vet_s']:7.1f} s   ratio {vr:.1f}x"
        )
        print(f"                    ({b['files_vetted']} files; one at a time: {per_text})")
    else:
        print("  vetting: nothing to compare")
    ours_total = s["closure_total_s"] + s["vet_total_s"]
    base_total = b["extrapolated_closure_total_s"] + b["extrapolated_vet_total_s"]
    print(
        f"  whole load        ours {ours_total:7.1f} s MEASURED   baseline {base_total:7.1f} s "
        f"EXTRAPOLATED   ratio {base_total / ours_total:.1f}x"
    )
    print(
        f"                    (baseline: pip's mean closure time x {s['by_ecosystem']['pypi']['requests']}"
        f" Python requests = {b['extrapolated_closure_total_s'] - s['by_ecosystem']['cran']['closure_total_s']:.0f} s"
        f" + R closures as measured;\n                    vetting as measured with each first-time "
        f"file at the one-at-a-time cost = {b['extrapolated_vet_total_s']:.0f} s)"
    )
    print("-" * 96)
    before = ", ".join(f"{k} {v}" for k, v in p["approved_before"].items()) or "nothing"
    print(
        f"index rebuild of {p['project']} (approved files: {before}; devpi and R repositories "
        f"started in {p['servers_start_s']:.1f} s)"
    )
    print(f"  first publish                    {p['first_publish_s']:7.2f} s")
    print(f"  publish again, nothing changed   {p['unchanged_publish_s']:7.2f} s")
    print(
        f"  one more approval ({p['extra_request']}: {p['extra_status']}, "
        f"resolved + vetted in {p['extra_vet_s']:.1f} s)"
    )
    verdict = "met" if p["incremental_publish_s"] < PUBLISH_GOAL_SECONDS else "NOT MET"
    print(
        f"  publish after it                 {p['incremental_publish_s']:7.2f} s   "
        f"goal < {PUBLISH_GOAL_SECONDS:.0f} s: {verdict}; new package served: "
        f"{'yes' if p['extra_served'] else 'NO'}"
    )
    print(
        f"  reading every stored vetting once: {p['read_all_vettings_s']:.2f} s "
        f"({p['vettings']} files, {p['vettings_mb']:.0f} MB); publish_project does it twice"
    )
    if p["served_mismatches"]:
        print(f"  served mismatches: {p['served_mismatches']}")
    print("-" * 96)
    print("statuses: " + ", ".join(f"{k} {v}" for k, v in s["statuses"].items()))
    print(f"wall time: {s['wall_s']:.0f} s ({m['machine']})")


# --- the run -------------------------------------------------------------------------------------


def machine() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load}"


def run(args: argparse.Namespace, work: Path) -> dict:
    started = time.perf_counter()
    print(f"machine: {machine()}; work directory {work}")
    real, real_note = real_archives(work / "cache" / "real", not args.no_download)
    print(real_note, flush=True)
    planned, bulk_py, bulk_r, extra_plan = plan(args, real)

    pypi_folder = work / "upstream-pypi"
    if pypi_folder.exists():
        shutil.rmtree(pypi_folder)
    pypi_folder.mkdir(parents=True)
    for path in real:
        shutil.copyfile(path, pypi_folder / path.name)
    build_python_upstream(pypi_folder)
    build_python_upstream_bulk(pypi_folder, max(bulk_py, 1))
    if extra_plan.name == SYNTHETIC_EXTRA.name:
        name, data = wheel(SYNTHETIC_EXTRA)
        (pypi_folder / name).write_bytes(data)
    cran_folder = work / "upstream-cran"
    if cran_folder.exists():
        shutil.rmtree(cran_folder)
    build_r_upstream(cran_folder)
    if bulk_r:
        build_r_upstream_bulk(cran_folder, bulk_r)
    files = sorted(p for p in pypi_folder.iterdir() if p.is_file())
    real_names = {p.name for p in real}
    n_real = sum(1 for p in files if p.name in real_names)
    kinds = Counter(p.kind for p in planned if p.ecosystem == "pypi")
    upstream_note = (
        f"Python {len(files)} files = {n_real} real "
        f"({sum(1 for p in real if p.suffix == '.whl')} wheels, "
        f"{sum(1 for p in real if p.suffix != '.whl')} sdists, "
        f"{sum(p.stat().st_size for p in real) / 1e6:.1f} MB) + "
        f"{len(files) - n_real} synthetic (demo catalogue + {bulk_py} bulk); "
        f"R {len(list((cran_folder / 'src' / 'contrib').glob('*.tar.gz')))} synthetic archives "
        f"(demo + {bulk_r} bulk); Python requests: {kinds['real']} real, {kinds['demo']} demo, "
        f"{kinds['bulk']} bulk"
    )
    print("upstream: " + upstream_note, flush=True)
    osv = work / "osv"
    write_advisories(osv)

    home = HdhHome(work / "hdh").ensure()
    baseline_home = HdhHome(work / "hdh-baseline").ensure()
    os.environ["HDH_HOME"] = str(home.root)
    os.environ["DAGSTER_HOME"] = str(home.dagster_home)
    os.environ["HDH_OSV_EXPORT"] = str(osv)
    os.environ["HDH_DEVPI_URL"] = f"http://127.0.0.1:{free_port()}"
    os.environ["HDH_R_REPOS_URL"] = f"http://127.0.0.1:{free_port()}"
    for name in ("HDH_OSV_URL", "HDH_PACKAGE_POLICY"):
        os.environ.pop(name, None)

    def request_of(p: Planned) -> PackageRequest:
        return make_request(
            p.project, p.name, ecosystem=p.ecosystem, reason=REASON, requested_by=REQUESTER
        )

    requests = [request_of(p) for p in planned]
    extra = request_of(extra_plan)
    k = min(args.baseline_requests, len(requests))
    with ExitStack() as stack:
        pypi = start_pypiserver(pypi_folder, free_port())
        stack.callback(pypi.stop)
        cran = stack.enter_context(serve_folder(cran_folder))
        os.environ["HDH_PYPI_UPSTREAM"] = pypi.url
        os.environ["HDH_CRAN_UPSTREAM"] = cran.url
        print(
            f"upstreams: pypiserver pid {pypi.process.pid} at {pypi.url}; R at {cran.url}",
            flush=True,
        )
        print(f"ours: {len(requests)} requests through service.resolve (uv) + service.vet")
        rows = run_requests(requests, planned, home)
        print(f"baseline: first {k} requests (pip resolver; vet_package one at a time)")
        t0 = time.perf_counter()
        baseline = run_baseline(requests[:k], rows, home, baseline_home)
        print(f"  baseline done in {time.perf_counter() - t0:.0f} s", flush=True)
        print("index rebuild: devpi-server + R repositories", flush=True)
        publish = publish_timings(home, extra, work, args)
    meta = {
        "python_requests": sum(1 for p in planned if p.ecosystem == "pypi"),
        "r_requests": sum(1 for p in planned if p.ecosystem == "cran"),
        "real_note": real_note,
        "upstream": upstream_note,
        "real_files": [p.name for p in real],
        "python_upstream_files": len(files),
        "python_upstream_real_files": n_real,
        "machine": machine(),
        "args": vars(args),
    }
    return summarise(rows, baseline, publish, k, meta, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=700, help="requests, one per package")
    parser.add_argument(
        "--baseline-requests", type=int, default=30, help="first requests re-run the old way"
    )
    parser.add_argument("--r-share", type=float, default=0.3, help="share of R requests")
    parser.add_argument("--seed", type=int, default=7, help="order of the requests")
    parser.add_argument(
        "--work-dir", type=Path, help="keep everything here (and reuse its download cache)"
    )
    parser.add_argument(
        "--no-download", action="store_true", help="synthetic packages only (no pip download)"
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    # A SIGTERM ends the run through the finally blocks, so every server started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with ExitStack() as stack:
        if args.work_dir is not None:
            work = args.work_dir.resolve()
            work.mkdir(parents=True, exist_ok=True)
            for stale in ("hdh", "hdh-baseline"):
                shutil.rmtree(work / stale, ignore_errors=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hdh-pkg-bench-")))
        summary = run(args, work)
    report(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
