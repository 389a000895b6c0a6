"""Where package requests come from, and how one is parsed and validated.

Two sources, one shape: files in the workspace specs folder (``package-requests/<any>.yaml``,
reviewed like the specs themselves) and the requests ``hdh packages request`` files under
``HDH_HOME/packages/requests/``. A bad file never stops the others: it is reported with its
path and the reason, and stays where it is.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from package_manager.model import ECOSYSTEMS, PackageRequest

REQUESTS_FOLDER = "package-requests"  # inside the workspace specs folder
_PYPI_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_CRAN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9.]*[A-Za-z0-9]$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$")
_PROJECT = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


class RequestError(ValueError):
    """A request that cannot be filed; the message names the input and the reason."""


@dataclass(frozen=True)
class LoadedRequests:
    requests: dict[str, PackageRequest]  # by request id
    errors: list[str]  # one line per refused file or entry


def parse_requirement(text: str, ecosystem: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME==VERSION`` (both ecosystems): one package, at most one exact version."""
    name, _, version = (part.strip() for part in text.partition("=="))
    pattern = _PYPI_NAME if ecosystem == "pypi" else _CRAN_NAME
    if not pattern.fullmatch(name):
        raise RequestError(f"{text!r} is not a {ecosystem} package name (optionally ==VERSION)")
    if version and not _VERSION.fullmatch(version):
        raise RequestError(f"{text!r}: {version!r} is not an exact version")
    return name, version or None


def make_request(
    project: str,
    requirement: str,
    *,
    ecosystem: str,
    reason: str,
    requested_by: str,
    requested_at: str | None = None,
) -> PackageRequest:
    """A validated request; every refusal names the field and what was wrong."""
    if ecosystem not in ECOSYSTEMS:
        raise RequestError(f"ecosystem {ecosystem!r} is not one of {', '.join(ECOSYSTEMS)}")
    if not _PROJECT.fullmatch(project or ""):
        raise RequestError(f"project {project!r} is not a project id")
    if not (reason or "").strip():
        raise RequestError(f"a request for {requirement!r} needs a reason (what it is for)")
    if not (requested_by or "").strip():
        raise RequestError(f"a request for {requirement!r} needs the member who asks")
    name, version = parse_requirement(requirement, ecosystem)
    when = requested_at or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return PackageRequest(
        project=project,
        ecosystem=ecosystem,  # type: ignore[arg-type]
        name=name,
        version=version,
        reason=reason.strip(),
        requested_by=requested_by.strip(),
        requested_at=str(when),
    )


def load_request_file(path: Path) -> list[PackageRequest]:
    """One spec-folder request file: ``project:`` and a list of ``requests:`` entries."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise RequestError(f"{path}: not readable YAML ({error.__class__.__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("requests"), list):
        raise RequestError(f"{path}: expected 'project:' and a list under 'requests:'")
    project = str(data.get("project") or "")
    loaded = []
    for number, entry in enumerate(data["requests"], start=1):
        if not isinstance(entry, dict) or "package" not in entry:
            raise RequestError(f"{path}: request {number} needs 'package: NAME[==VERSION]'")
        try:
            loaded.append(
                make_request(
                    project,
                    str(entry["package"]),
                    ecosystem=str(entry.get("ecosystem", "pypi")),
                    reason=str(entry.get("reason") or ""),
                    requested_by=str(entry.get("requested_by") or ""),
                    requested_at=str(entry["requested_at"]) if entry.get("requested_at") else None,
                )
            )
        except RequestError as refused:
            raise RequestError(f"{path}: request {number}: {refused}") from None
    return loaded


def load_requests(specs_folder: Path | None, filed_folder: Path) -> LoadedRequests:
    """Every request of both sources; a file refused is reported, the others still load."""
    requests: dict[str, PackageRequest] = {}
    errors: list[str] = []
    files = sorted((specs_folder / REQUESTS_FOLDER).glob("*.y*ml")) if specs_folder else []
    for path in files:
        try:
            for request in load_request_file(path):
                requests.setdefault(request.request_id, request)
        except RequestError as refused:
            errors.append(str(refused))
    for path in sorted(filed_folder.glob("*.json")) if filed_folder.is_dir() else []:
        try:
            request = PackageRequest.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            errors.append(f"{path}: not a filed request ({error.__class__.__name__})")
            continue
        requests.setdefault(request.request_id, request)
    return LoadedRequests(requests, errors)


def file_request(request: PackageRequest, filed_folder: Path) -> Path:
    """Write a request where the request sensor finds it; filing it again changes nothing."""
    filed_folder.mkdir(parents=True, exist_ok=True)
    path = filed_folder / f"{request.request_id}.json"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(request.to_json(), indent=2, sort_keys=True))
        tmp.replace(path)
    return path
