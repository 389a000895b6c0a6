"""The full dependency closure of a Python package request, with the exact file of each member.

``uv pip compile`` resolves (pip's resolver is the benchmark baseline); both give the same
:class:`Closure`. Each chosen archive is then downloaded once into a content-addressed store,
checked against its sha256, and its licence and dependencies are read from its own metadata with
``pkginfo`` (never by running it).

Resolution happens in a scrubbed environment: no ``PIP_*``/``UV_*`` variable, no configuration
file, a throwaway HOME, TMPDIR and working directory, and only the given index. The machine's
find-links folders and extra indexes must never enter a closure.

Source distributions: uv reads an sdist's metadata without running anything when its PKG-INFO is
static (Metadata-Version 2.2 or later, nothing dynamic). Otherwise resolving an sdist-only package
builds its metadata, which runs its build backend and so its setup.py (uv's ``--no-build`` does not
avoid this: it refuses every sdist, static or not). pip always builds an sdist's metadata. That is
why the resolver runs in the scrubbed, throwaway environment above; the archive itself is vetted
(malicious-code rules) before anything is approved.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pkginfo
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, sys_tags
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from package_manager.files import store_path
from package_manager.model import Closure, PackageRequest, ResolvedPackage, UpstreamUnavailable

RESOLVERS = ("uv", "pip")
TIMEOUT_SECONDS = 600
# Variables a resolver may see: enough to run and to trust the machine's certificate authorities.
_KEPT_VARIABLES = ("PATH", "LANG", "LC_ALL", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
# What a resolver prints when the index, not the request, is at fault.
_UNREACHABLE = re.compile(
    r"Connection refused|connect error|client error \(Connect\)|NewConnectionError|"
    r"Max retries exceeded|Failed to establish a new connection|server error|"
    r"Read timed out|operation timed out|ConnectTimeout|"
    # pip skips a page it cannot fetch (logged with -vv only) and resolves without it; any
    # answer but 404 (no such project) means the index, not the request, is at fault.
    r"Could not fetch URL \S+: (?!404)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Pick:
    """One closure member as a resolver chose it, before its archive is read."""

    name: str
    version: str
    url: str
    sha256: str


# (files chosen, the failure output or None, the resolver's log)
_Outcome = tuple[list[_Pick], str | None, str]

# ---------------------------------------------------------------- public entry points


def resolve_python(
    request: PackageRequest,
    index_url: str,
    *,
    work_dir: Path,
    resolver: str = "uv",
    store: Path | None = None,
) -> Closure:
    """The request's closure for this interpreter's Python version and platform tags.

    Raises :class:`UpstreamUnavailable` when the index cannot be reached (never a partial closure);
    every other failure is a ``Closure`` with ``error`` naming the requirement at fault. The
    archives stay in ``store`` (default ``work_dir/archives``), the content-addressed store of
    :func:`fetch_archive`.
    """
    if resolver not in RESOLVERS:
        raise ValueError(f"unknown resolver {resolver!r}; expected one of {RESOLVERS}")
    work_dir.mkdir(parents=True, exist_ok=True)
    closure = _closure_shell(request, index_url, resolver)
    requirement, problem = parse_request(request)
    if requirement is None:
        return _refuse(closure, problem)
    if _index_files(index_url, requirement.name) is None:
        return _refuse(closure, f"not found: {requirement.name} is not on the upstream index")
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="resolve-") as scratch:
        run = _run_uv if resolver == "uv" else _run_pip
        picks, failure, log = run(str(requirement), index_url, Path(scratch))
    if _UNREACHABLE.search(log):  # also when pip resolved without a page it could not fetch
        raise UpstreamUnavailable(f"{index_url}: {_unreachable_lines(log)}")
    if failure is not None:
        return _refuse(closure, explain_failure(failure, requirement, index_url))
    store = store or work_dir / "archives"
    with httpx.Client(timeout=60, follow_redirects=True) as client:  # one for every download
        members = [_member(pick, store, client) for pick in picks]
    return _with_packages(closure, _link(members, requirement))


def fetch_archive(
    package: ResolvedPackage, store: Path, client: httpx.Client | None = None
) -> Path:
    """The archive in the content-addressed store, downloaded once and checked against its sha256.

    A mismatch raises ``ValueError``: the index served other bytes than it announced.
    """
    target = store_path(store, package.sha256, package.filename)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    url = urllib.parse.urldefrag(package.url).url
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as part:
        try:
            get = client.stream if client is not None else httpx.stream
            with get("GET", url, timeout=60, follow_redirects=True) as response:
                if response.status_code >= 400:
                    raise UpstreamUnavailable(f"GET {url}: HTTP {response.status_code}")
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    part.write(chunk)
        except httpx.HTTPError as error:
            Path(part.name).unlink(missing_ok=True)
            raise UpstreamUnavailable(f"GET {url}: {error}") from error
        except BaseException:
            Path(part.name).unlink(missing_ok=True)
            raise
    if digest.hexdigest() != package.sha256:
        Path(part.name).unlink(missing_ok=True)
        raise ValueError(
            f"{package.filename}: sha256 {digest.hexdigest()} does not match the expected "
            f"{package.sha256}"
        )
    os.replace(part.name, target)
    return target


def read_metadata(path: Path, extras: Iterable[str] = ()) -> tuple[str | None, tuple[str, ...]]:
    """(declared licence, direct dependency names) from a wheel's or sdist's own metadata.

    The licence is the raw declared text: License-Expression, else License, else the
    ``License ::`` classifiers joined by "; " (None when nothing is declared; a License of
    "UNKNOWN", which old setuptools wrote for "not given", counts as nothing). Dependencies are the
    Requires-Dist names whose markers hold on this interpreter with the given extras.
    """
    return _read(path, extras)[2:]


def parse_request(request: PackageRequest) -> tuple[Requirement | None, str]:
    """The request as a plain named requirement, or why it is not one (no URLs, no markers)."""
    try:
        requirement = Requirement(request.requirement)
    except InvalidRequirement as error:
        return None, f"invalid requirement: {request.requirement!r} ({error})"
    if requirement.url or requirement.marker:
        return None, f"invalid requirement: {request.requirement!r} (only names and versions)"
    return requirement, ""


def target_description() -> str:
    """What a closure is resolved for: this interpreter's version and its best platform tag."""
    best = next(iter(sys_tags()))
    return f"Python {'.'.join(map(str, sys.version_info[:3]))} ({best})"


# ---------------------------------------------------------------- resolvers


def clean_environment(scratch: Path) -> dict[str, str]:
    """An environment with nothing of the machine's pip/uv settings and a throwaway HOME/TMPDIR."""
    env = {k: os.environ[k] for k in _KEPT_VARIABLES if k in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    for name in ("home", "tmp", "cwd"):
        (scratch / name).mkdir(exist_ok=True)
    env |= {"HOME": str(scratch / "home"), "TMPDIR": str(scratch / "tmp"), "NO_COLOR": "1"}
    env |= {"UV_HTTP_RETRIES": "1"}  # the caller retries a request whose upstream is down
    env |= {"XDG_CONFIG_HOME": str(scratch / "home" / ".config"), "PYTHONNOUSERSITE": "1"}
    return env


def uv_binary() -> str:
    import uv

    return uv.find_uv_bin()


@functools.cache
def tool_version(resolver: str) -> str:
    """e.g. "uv 0.13.9" or "pip 26.3"."""
    if resolver == "uv":
        out = subprocess.run([uv_binary(), "--version"], capture_output=True, text=True).stdout
        return " ".join(out.split()[:2])
    from importlib.metadata import version

    return f"pip {version('pip')}"


def _run(command: list[str], scratch: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=scratch / "cwd",
        env=clean_environment(scratch),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        stdin=subprocess.DEVNULL,
    )


def _run_uv(requirement: str, index_url: str, scratch: Path) -> _Outcome:
    requirements = scratch / "requirements.in"
    requirements.write_text(requirement + "\n")
    output = scratch / "pylock.toml"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    command = [uv_binary(), "pip", "compile", "--no-config", "--no-header", "--quiet"]
    command += ["--index-url", index_url, "--python", sys.executable, "--python-version", version]
    command += ["--format", "pylock.toml", "--no-cache", "--output-file", str(output)]
    done = _run([*command, str(requirements)], scratch)
    if done.returncode != 0:
        return [], done.stderr, done.stderr
    return picks_from_pylock(tomllib.loads(output.read_text())), None, done.stderr


def _run_pip(requirement: str, index_url: str, scratch: Path) -> _Outcome:
    requirements = scratch / "requirements.in"
    requirements.write_text(requirement + "\n")
    report = scratch / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run"]
    # -vv rather than --quiet: pip logs a page it could not fetch only at debug level.
    command += ["--ignore-installed", "-vv", "--disable-pip-version-check", "--retries", "0"]
    command += ["--no-cache-dir", "--report", str(report), "--index-url", index_url]
    done = _run([*command, "-r", str(requirements)], scratch)
    log = done.stdout + done.stderr
    if done.returncode != 0:
        return [], done.stderr, log
    return picks_from_pip_report(json.loads(report.read_text())), None, log


def picks_from_pylock(lock: dict) -> list[_Pick]:
    """One file per package from a pylock.toml: the best wheel for this interpreter, else sdist."""
    ranked = {tag: rank for rank, tag in enumerate(sys_tags())}
    picks = []
    for package in lock.get("packages", []):
        files = [(_wheel_rank(w["url"], ranked), w) for w in package.get("wheels", [])]
        usable = sorted((rank, i, w) for i, (rank, w) in enumerate(files) if rank is not None)
        chosen = usable[0][2] if usable else package.get("sdist")
        if chosen is None:  # uv only locks a package it can install: this is not expected
            raise RuntimeError(f"uv locked {package['name']} without a file for {ranked}")
        url = chosen["url"]
        picks.append(_Pick(package["name"], package["version"], url, chosen["hashes"]["sha256"]))
    return picks


def picks_from_pip_report(report: dict) -> list[_Pick]:
    """One file per package from ``pip install --report``."""
    picks = []
    for item in report.get("install", []):
        info = item["download_info"]
        digest = info["archive_info"]["hashes"]["sha256"]
        meta = item["metadata"]
        picks.append(_Pick(meta["name"], meta["version"], info["url"], digest))
    return picks


def _wheel_rank(url: str, ranked: dict[Tag, int]) -> int | None:
    try:
        tags = parse_wheel_filename(_filename(url))[3]
    except InvalidWheelFilename:
        return None
    ranks = [ranked[tag] for tag in tags if tag in ranked]
    return min(ranks) if ranks else None


# ---------------------------------------------------------------- failures


def explain_failure(output: str, requirement: Requirement, index_url: str) -> str:
    """A refusal reason naming the requirement, from a resolver's error output.

    Raises :class:`UpstreamUnavailable` when the output says the index could not be reached.
    Reasons start with a kind: "not found:", "no matching version:", "no installable file:",
    "unsatisfiable:", "build failed:" or "resolver failed:".
    """
    if _UNREACHABLE.search(output):
        raise UpstreamUnavailable(f"{index_url}: {_unreachable_lines(output)}")
    name = canonicalize_name(requirement.name)
    if build := re.search(r"Failed to build '?([\w.\-]+)'?|Failed to build `([^`]+)`", output):
        built = build.group(1) or build.group(2)
        detail = _last_lines(output)
        return f"build failed: {built} (an sdist) could not be prepared ({requirement}): {detail}"
    if missing := re.search(r"Because ([\w.\-]+) was not found in the package registry", output):
        return f"not found: {missing.group(1)} is not on the upstream index ({requirement})"
    if no_version := re.search(r"there is no version of ([^\s]+?) and you require", output):
        wanted = no_version.group(1)
        return f"no matching version: {wanted} ({_available(index_url, wanted)})"
    if nothing := re.search(r"Because ([\w.\-]+)==[^\s]+ has no (usable )?wheels", output):
        return _no_file(nothing.group(1), index_url)
    if re.search(r"No solution found|ResolutionImpossible|conflicting dependencies", output):
        return f"unsatisfiable: {requirement}: {_explanation(output)}"
    if pip := re.search(
        r"satisfies the requirement (\S+)(?: \(from ([^)]+)\))? \(from versions: ([^)]*)\)", output
    ):
        wanted, parent, versions = pip.groups()
        wanted_name = canonicalize_name(Requirement(wanted).name)
        if versions.strip() == "none":
            if _index_files(index_url, wanted_name) is None:
                return f"not found: {wanted_name} is not on the upstream index ({requirement})"
            return _no_file(wanted_name, index_url)
        if parent is None and wanted_name == name:
            return f"no matching version: {wanted} (available: {versions})"
        return f"unsatisfiable: {requirement}: {parent} requires {wanted} (available: {versions})"
    return f"resolver failed: {requirement}: {_last_lines(output)}"


def _no_file(name: str, index_url: str) -> str:
    files = _index_files(index_url, name) or []
    return (
        f"no installable file: {name} has no wheel for {target_description()} and no sdist "
        f"(files: {', '.join(files) or 'none'})"
    )


def _available(index_url: str, requirement: str) -> str:
    try:
        name = Requirement(requirement).name
    except InvalidRequirement:
        return "available: unknown"
    files = _index_files(index_url, name) or []
    versions = sorted({_file_version(f) for f in files} - {None}, key=Version)
    return f"available: {', '.join(versions) or 'none'}"


def _explanation(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    causes = [re.sub(r"^(cause:|╰─▶)\s*", "", line) for line in lines if "error:" not in line]
    return " ".join(causes)[:2000] or _last_lines(output)


def _unreachable_lines(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if _UNREACHABLE.search(line)]
    return " | ".join(lines[:3]) or _last_lines(output)


def _last_lines(output: str, count: int = 6) -> str:
    return " | ".join(line.strip() for line in output.strip().splitlines()[-count:])


# ---------------------------------------------------------------- the index, directly


def _index_files(index_url: str, name: str) -> list[str] | None:
    """File names the simple index lists for a project, or None when it has no such project."""
    url = f"{index_url.rstrip('/')}/{canonicalize_name(name)}/"
    for attempt in range(2):
        try:
            response = httpx.get(
                url, timeout=30, headers={"Accept": "text/html"}, follow_redirects=True
            )
        except httpx.HTTPError as error:
            if attempt:
                raise UpstreamUnavailable(f"GET {url}: {error!r}") from error
            time.sleep(0.5)
            continue
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            if attempt:
                raise UpstreamUnavailable(f"GET {url}: HTTP {response.status_code}")
            time.sleep(0.5)
            continue
        anchors = re.findall(r"<a\b[^>]*>([^<]+)</a>", response.text, flags=re.IGNORECASE)
        return [html.unescape(a).strip() for a in anchors]
    raise AssertionError("unreachable")


def _file_version(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


# ---------------------------------------------------------------- archives and metadata


def _filename(url: str) -> str:
    path = urllib.parse.urlsplit(urllib.parse.urldefrag(url).url).path
    return urllib.parse.unquote(path.rsplit("/", 1)[-1])


def _member(pick: _Pick, store: Path, client: httpx.Client) -> tuple[ResolvedPackage, Path]:
    url = urllib.parse.urldefrag(pick.url).url
    package = ResolvedPackage("pypi", pick.name, pick.version, _filename(url), url, pick.sha256)
    return package, fetch_archive(package, store, client)


def _read(path: Path, extras: Iterable[str] = ()) -> tuple[str, str, str | None, tuple[str, ...]]:
    """(name, version, licence, requires) from the archive's metadata, read as data."""
    info = pkginfo.get_metadata(str(path))
    if info is None or not info.name:
        raise ValueError(f"{path.name}: no readable metadata")
    return info.name, info.version, _licence(info), _requires(info.requires_dist, extras)


def _licence(info: pkginfo.Distribution) -> str | None:
    expression = (getattr(info, "license_expression", None) or "").strip()
    if expression:
        return expression
    declared = (info.license or "").strip()
    if declared and declared.upper() != "UNKNOWN":
        return declared
    classifiers = [c for c in info.classifiers or () if c.startswith("License ::")]
    return "; ".join(classifiers) or None


def _active(requires_dist: Iterable[str], extras: Iterable[str]) -> list[Requirement]:
    """The Requires-Dist entries whose markers hold here, with these extras asked for."""
    environments = [default_environment() | {"extra": e} for e in ["", *sorted(extras)]]
    active = []
    for line in requires_dist or ():
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or any(marker.evaluate(env) for env in environments):
            active.append(requirement)
    return active


def _requires(requires_dist: Iterable[str], extras: Iterable[str]) -> tuple[str, ...]:
    names = [canonicalize_name(r.name) for r in _active(requires_dist, extras)]
    return tuple(dict.fromkeys(names))


def _extras_wanted(
    requires: dict[str, list[str]], requested: str, extras: Iterable[str]
) -> dict[str, set[str]]:
    """Which extras each member is asked for: the request's, then those its parents name."""
    wanted: dict[str, set[str]] = {name: set() for name in requires} | {requested: set(extras)}
    changed = True
    while changed:
        changed = False
        for parent, lines in requires.items():
            for child in _active(lines, wanted[parent]):
                have = wanted.setdefault(canonicalize_name(child.name), set())
                if not set(child.extras) <= have:
                    have.update(child.extras)
                    changed = True
    return wanted


def _link(
    members: list[tuple[ResolvedPackage, Path]], request: Requirement
) -> list[ResolvedPackage]:
    """Each member with its name, licence and requires as its own archive declares them."""
    requested = canonicalize_name(request.name)
    infos = {canonicalize_name(p.name): (p, pkginfo.get_metadata(str(path))) for p, path in members}
    requires_dist = {key: list(info.requires_dist or ()) for key, (_p, info) in infos.items()}
    wanted = _extras_wanted(requires_dist, requested, request.extras)
    packages = []
    for key, (package, info) in sorted(infos.items()):
        packages.append(
            ResolvedPackage(
                "pypi",
                info.name or package.name,
                package.version,
                package.filename,
                package.url,
                package.sha256,
                license=_licence(info),
                requires=_requires(requires_dist[key], wanted[key]),
                requested=key == requested,
            )
        )
    return packages


# ---------------------------------------------------------------- closures


def _closure_shell(request: PackageRequest, index_url: str, resolver: str) -> Closure:
    return Closure(
        request_id=request.request_id,
        ecosystem="pypi",
        packages=(),
        resolver=tool_version(resolver),
        target=target_description(),
        upstream=index_url,
    )


def _refuse(closure: Closure, reason: str) -> Closure:
    return Closure(**{**_fields(closure), "error": reason})


def _with_packages(closure: Closure, packages: list[ResolvedPackage]) -> Closure:
    return Closure(**{**_fields(closure), "packages": tuple(packages)})


def _fields(closure: Closure) -> dict:
    return {name: getattr(closure, name) for name in closure.__dataclass_fields__}
