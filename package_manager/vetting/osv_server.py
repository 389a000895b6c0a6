"""A small OSV-format vulnerability service over a folder of advisories (one JSON file each).

The platform cannot reach osv.dev, and an audit against an unreachable or empty service would pass
vacuously. This serves an OSV export the operators keep (and update) locally, with the endpoints
pip-audit's OSV service and the CRAN check call: ``POST /v1/query``, ``POST /v1/querybatch`` and
``GET /v1/vulns/{id}``. Run it in a thread (``OsvServer``) or as
``python -m package_manager.vetting.osv_server DIR --port P``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Advisory = dict[str, Any]


def database_fingerprint(folder: Path | str) -> str:
    """sha256 over every advisory file's relative name and content: changes when the DB changes."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.json")):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def r_version_key(version: str) -> tuple[int, ...]:
    """R package versions (``1.2-3``, ``0.9.10``) compare as integers split on ``.`` and ``-``."""
    return tuple(int(part) for part in re.split(r"[.-]", version.strip()) if part != "")


def version_key(ecosystem: str, version: str) -> Any:
    """A sortable key for the ecosystem's versions; raises ValueError when not a valid version."""
    if ecosystem.lower() == "cran":
        return r_version_key(version)
    if ecosystem.lower() == "pypi":
        try:
            return Version(version)
        except InvalidVersion as exc:
            raise ValueError(str(exc)) from exc
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.-]", version))


def package_name_key(ecosystem: str, name: str) -> str:
    return canonicalize_name(name) if ecosystem.lower() == "pypi" else name


def in_range(ecosystem: str, version: str, events: list[dict[str, str]]) -> bool:
    """OSV range semantics: introduced (inclusive), fixed (exclusive), last_affected (inclusive)."""
    try:
        key = version_key(ecosystem, version)
        zero = version_key(ecosystem, "0")
        ordered = sorted(
            events,
            key=lambda ev: (
                zero
                if next(iter(ev.values())) == "0"
                else version_key(ecosystem, next(iter(ev.values())))
            ),
        )
    except ValueError:
        return False  # an unparsable version is compared by the explicit versions list only
    affected = False
    for event in ordered:
        if "introduced" in event:
            intro = event["introduced"]
            if intro == "0" or key >= version_key(ecosystem, intro):
                affected = True
        elif ("fixed" in event and key >= version_key(ecosystem, event["fixed"])) or (
            "last_affected" in event and key > version_key(ecosystem, event["last_affected"])
        ):
            affected = False
    return affected


def affects(advisory: Advisory, ecosystem: str, name: str, version: str | None) -> bool:
    """Whether the advisory names this package (and, if a version is given, that version)."""
    wanted = package_name_key(ecosystem, name)
    for affected in advisory.get("affected") or []:
        package = affected.get("package") or {}
        if str(package.get("ecosystem", "")).lower() != ecosystem.lower():
            continue
        if package_name_key(ecosystem, str(package.get("name", ""))) != wanted:
            continue
        if version is None:
            return True
        if version in (affected.get("versions") or []):
            return True
        for rng in affected.get("ranges") or []:
            if rng.get("type") in ("ECOSYSTEM", "SEMVER") and in_range(
                ecosystem, version, rng.get("events") or []
            ):
                return True
    return False


def fixed_versions(advisory: Advisory, ecosystem: str, name: str) -> list[str]:
    wanted = package_name_key(ecosystem, name)
    fixed: list[str] = []
    for affected in advisory.get("affected") or []:
        package = affected.get("package") or {}
        if str(package.get("ecosystem", "")).lower() != ecosystem.lower():
            continue
        if package_name_key(ecosystem, str(package.get("name", ""))) != wanted:
            continue
        for rng in affected.get("ranges") or []:
            fixed += [ev["fixed"] for ev in rng.get("events") or [] if "fixed" in ev]
    return sorted(set(fixed))


@dataclass
class OsvDatabase:
    """Advisories indexed by (ecosystem, package); reloaded when the folder's content changes."""

    folder: Path
    recheck_seconds: float = 2.0
    advisories: dict[str, Advisory] = field(default_factory=dict)
    by_package: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    fingerprint: str = ""
    _checked_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: no such OSV advisory folder")
        self.reload()

    def reload(self) -> None:
        advisories: dict[str, Advisory] = {}
        by_package: dict[tuple[str, str], list[str]] = {}
        for path in sorted(self.folder.rglob("*.json")):
            try:
                advisory = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"{path}: not a readable OSV advisory: {exc}") from exc
            if not isinstance(advisory, dict) or "id" not in advisory:
                raise ValueError(f"{path}: not an OSV advisory (no id)")
            advisories[advisory["id"]] = advisory
            for affected in advisory.get("affected") or []:
                package = affected.get("package") or {}
                eco = str(package.get("ecosystem", "")).lower()
                key = (eco, package_name_key(eco, str(package.get("name", ""))))
                by_package.setdefault(key, []).append(advisory["id"])
        self.advisories, self.by_package = advisories, by_package
        self.fingerprint = database_fingerprint(self.folder)
        self._checked_at = time.monotonic()

    def refresh(self) -> None:
        """Reload if the folder changed; checked at most every ``recheck_seconds``."""
        with self._lock:
            if time.monotonic() - self._checked_at < self.recheck_seconds:
                return
            if database_fingerprint(self.folder) != self.fingerprint:
                self.reload()
            self._checked_at = time.monotonic()

    def query(self, ecosystem: str, name: str, version: str | None) -> list[Advisory]:
        self.refresh()
        ids = self.by_package.get((ecosystem.lower(), package_name_key(ecosystem, name)), [])
        found = [self.advisories[i] for i in dict.fromkeys(ids)]
        return [a for a in found if not a.get("withdrawn") and affects(a, ecosystem, name, version)]


def _parse_query(body: Any) -> tuple[str, str, str | None]:
    if not isinstance(body, dict) or not isinstance(body.get("package"), dict):
        raise ValueError("a query needs a package object")
    package = body["package"]
    name, ecosystem = package.get("name"), package.get("ecosystem")
    if not name or not ecosystem:
        raise ValueError("package.name and package.ecosystem are required")
    version = body.get("version")
    return str(ecosystem), str(name), str(version) if version is not None else None


def create_app(folder: Path | str) -> Starlette:
    """The ASGI app: OSV's query, querybatch and vulns endpoints over the folder."""
    db = OsvDatabase(Path(folder))

    async def query(request: Request) -> JSONResponse:
        try:
            ecosystem, name, version = _parse_query(await request.json())
        except ValueError as exc:
            return JSONResponse({"code": 3, "message": str(exc)}, status_code=400)
        vulns = db.query(ecosystem, name, version)
        return JSONResponse({"vulns": vulns} if vulns else {})

    async def querybatch(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            queries = [_parse_query(q) for q in body.get("queries") or []]
        except (ValueError, AttributeError) as exc:
            return JSONResponse({"code": 3, "message": str(exc)}, status_code=400)
        results = []
        for ecosystem, name, version in queries:
            vulns = db.query(ecosystem, name, version)
            results.append(
                {"vulns": [{"id": v["id"], "modified": v.get("modified", "")} for v in vulns]}
                if vulns
                else {}
            )
        return JSONResponse({"results": results})

    async def vuln(request: Request) -> JSONResponse:
        db.refresh()
        advisory = db.advisories.get(request.path_params["vuln_id"])
        if advisory is None:
            return JSONResponse({"code": 5, "message": "Bug not found."}, status_code=404)
        return JSONResponse(advisory)

    async def health(request: Request) -> JSONResponse:
        db.refresh()
        return JSONResponse({"advisories": len(db.advisories), "fingerprint": db.fingerprint})

    app = Starlette(
        routes=[
            Route("/v1/query", query, methods=["POST"]),
            Route("/v1/querybatch", querybatch, methods=["POST"]),
            Route("/v1/vulns/{vuln_id:str}", vuln, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    app.state.db = db
    return app


class OsvServer:
    """The service in a background thread: ``with OsvServer(folder) as server: server.query_url``."""

    def __init__(self, folder: Path | str, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.app = create_app(folder)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def query_url(self) -> str:
        """What pip-audit's ``--osv-url`` takes."""
        return f"{self.base_url}/v1/query"

    def start(self, timeout: float = 10.0) -> OsvServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the OSV service did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> OsvServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None, run: Callable[..., None] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an OSV advisory folder (OSV API subset).")
    parser.add_argument("folder", type=Path, help="folder of OSV JSON advisories, one per file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    import uvicorn

    (run or uvicorn.run)(create_app(args.folder), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
