"""A small but real HTTP server speaking enough of the Kubernetes REST API for the official client.

No API server can run in the test environment, so the real ``kubernetes`` client code path
(kubeconfig loading, bearer token, ``DynamicClient`` discovery, server-side apply, labelled
lists, deletion) is exercised against this one. What it implements, as a real server does:

* discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>/<version>``
  (legacy documents; the Python client asks for ``application/json`` only, and an Accept
  header offering nothing JSON gets 406);
* ``PATCH`` with ``application/apply-patch+yaml`` and a required ``fieldManager``: creates or
  updates, sets uid/resourceVersion/generation/creationTimestamp/managedFields, and moves
  ``resourceVersion`` only when the content changed; a field manager taking over an object
  last applied by another one needs ``force=true`` (409 otherwise);
* ``GET`` of one object or of a list (all namespaces or one), with ``labelSelector``
  (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``); list items carry no apiVersion/kind;
* ``DELETE`` (deleting a namespace deletes the objects in it, immediately).

Simplification: an apply replaces the object's content instead of merging other managers'
fields. Every request is recorded for assertions.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

APPLY_PATCH = "application/apply-patch+yaml"
SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")


@dataclass(frozen=True)
class ApiResource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    subresources: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
RESOURCES: tuple[ApiResource, ...] = (
    ApiResource("", "v1", "Namespace", "namespaces", False, ("status", "finalize")),
    ApiResource("", "v1", "ConfigMap", "configmaps", True),
    ApiResource("", "v1", "Secret", "secrets", True),
    ApiResource("", "v1", "ServiceAccount", "serviceaccounts", True, ("token",)),
    ApiResource("", "v1", "Service", "services", True, ("status", "proxy")),
    ApiResource("", "v1", "PersistentVolume", "persistentvolumes", False, ("status",)),
    ApiResource("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ("status",)),
    ApiResource("", "v1", "ResourceQuota", "resourcequotas", True, ("status",)),
    ApiResource("", "v1", "LimitRange", "limitranges", True),
    ApiResource("", "v1", "Pod", "pods", True, ("status", "log")),
    ApiResource("apps", "v1", "Deployment", "deployments", True, ("status", "scale")),
    ApiResource("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True),
    ApiResource("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("status",)),
    ApiResource("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    ApiResource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    ApiResource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
)

Key = tuple[str, str, str | None, str]  # group/version, kind, namespace, name


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    accept: str | None
    authorization: str | None


class ApiError(Exception):
    """Answered as a ``Status`` object, like the real server's errors."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


def matches_selector(labels: dict[str, str], selector: str) -> bool:
    """Equality and existence requirements, comma-separated (all must hold)."""
    for requirement in filter(None, (r.strip() for r in selector.split(","))):
        if "!=" in requirement:
            key, value = requirement.split("!=", 1)
            ok = labels.get(key.strip()) != value.strip()
        elif "=" in requirement:
            key, value = requirement.replace("==", "=").split("=", 1)
            ok = labels.get(key.strip()) == value.strip()
        elif requirement.startswith("!"):
            ok = requirement[1:].strip() not in labels
        else:
            ok = requirement in labels
        if not ok:
            return False
    return True


def accepts_plain_json(accept: str) -> bool:
    """Whether legacy JSON may answer: aggregated discovery (``;g=apidiscovery.k8s.io``) is not
    served, so a client asking only for it gets 406 and one offering a fallback gets JSON."""
    for media in accept.split(","):
        kind, *params = (part.strip() for part in media.split(";"))
        plain = not any(p.startswith(("g=", "as=", "v=")) for p in params)
        if plain and kind in ("application/json", "application/*", "*/*"):
            return True
    return False


def parse_bool(value: str) -> bool:
    """Query booleans as the API server reads them (Go's strconv.ParseBool): the client sends
    ``True`` or ``true`` depending on its version."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ApiError(400, "BadRequest", f"invalid boolean {value!r}")


def _content(obj: dict) -> dict:
    """The object without what the server sets, for change detection."""
    out = copy.deepcopy(obj)
    meta = out.get("metadata", {})
    for name in SERVER_FIELDS:
        meta.pop(name, None)
    out.pop("status", None)
    return out


class ClusterState:
    """Objects by key, with a global resourceVersion counter; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[Key, dict] = {}
        self.revision = 0

    def _next_revision(self) -> str:
        self.revision += 1
        return str(self.revision)

    def apply(
        self, res: ApiResource, ns: str | None, name: str, body: dict, q: dict
    ) -> tuple[int, dict]:
        manager = (q.get("fieldManager") or [""])[0]
        if not manager:
            raise ApiError(
                400,
                "BadRequest",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
            )
        self._check_body(res, ns, name, body)
        with self.lock:
            if ns is not None and ("v1", "Namespace", None, ns) not in self.objects:
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found')
            key: Key = (res.group_version, res.kind, ns, name)
            current = self.objects.get(key)
            if current is None:
                stored = self._create(res, ns, body, manager)
                self.objects[key] = stored
                return 201, copy.deepcopy(stored)
            self._check_conflict(current, manager, body, q)
            if _content(current) != _content(body) or self._manager(current) != manager:
                self.objects[key] = self._update(res, current, body, manager)
            return 200, copy.deepcopy(self.objects[key])

    @staticmethod
    def _check_body(res: ApiResource, ns: str | None, name: str, body: dict) -> None:
        meta = body.get("metadata") or {}
        if body.get("apiVersion") != res.group_version or body.get("kind") != res.kind:
            raise ApiError(400, "BadRequest", "the body's apiVersion/kind does not match the path")
        if meta.get("name") != name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        if res.namespaced and meta.get("namespace") not in (None, ns):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the object does not match the namespace on the request",
            )

    @staticmethod
    def _manager(obj: dict) -> str | None:
        """Who last wrote the object's content (status writers aside)."""
        for entry in obj["metadata"].get("managedFields") or ():
            if not entry.get("subresource"):
                return entry.get("manager")
        return None

    def _check_conflict(self, current: dict, manager: str, body: dict, q: dict) -> None:
        force = parse_bool((q.get("force") or ["false"])[0])
        owner = self._manager(current)
        if not force and owner not in (None, manager) and _content(current) != _content(body):
            raise ApiError(
                409, "Conflict", f'Apply failed with 1 conflict: conflict with "{owner}"'
            )

    def _stamp(self, res: ApiResource, obj: dict, manager: str) -> None:
        meta = obj["metadata"]
        meta["resourceVersion"] = self._next_revision()
        meta["managedFields"] = [
            {
                "manager": manager,
                "operation": "Apply",
                "apiVersion": res.group_version,
                "fieldsType": "FieldsV1",
                "time": _now(),
            }
        ]

    def _create(self, res: ApiResource, ns: str | None, body: dict, manager: str) -> dict:
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        if res.namespaced:
            meta["namespace"] = ns
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if res.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        self._stamp(res, obj, manager)
        return obj

    def _update(self, res: ApiResource, current: dict, body: dict, manager: str) -> dict:
        obj = copy.deepcopy(body)
        meta, old = obj["metadata"], current["metadata"]
        if res.namespaced:
            meta["namespace"] = old["namespace"]
        spec_changed = {k: v for k, v in _content(current).items() if k != "metadata"} != {
            k: v for k, v in _content(body).items() if k != "metadata"
        }
        meta.update(
            uid=old["uid"],
            creationTimestamp=old["creationTimestamp"],
            generation=old["generation"] + (1 if spec_changed else 0),
        )
        if "status" in current:
            obj["status"] = current["status"]
        self._stamp(res, obj, manager)
        return obj

    def put(self, obj: dict, manager: str = "kubectl") -> dict:
        """Create or overwrite an object directly, as another client would (for tests)."""
        res = resource_for(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        key: Key = (res.group_version, res.kind, meta.get("namespace"), meta["name"])
        with self.lock:
            current = self.objects.get(key)
            stored = (
                self._update(res, current, obj, manager)
                if current
                else self._create(res, meta.get("namespace"), obj, manager)
            )
            self.objects[key] = stored
            return copy.deepcopy(stored)

    def write_status(self, res: ApiResource, ns: str | None, name: str, status: dict) -> dict:
        """What a controller does through the status subresource: a new resourceVersion and a
        managedFields entry of its own, ours untouched."""
        with self.lock:
            obj = self.objects[(res.group_version, res.kind, ns, name)]
            obj["status"] = copy.deepcopy(status)
            meta = obj["metadata"]
            meta["resourceVersion"] = self._next_revision()
            others = [
                e for e in meta.get("managedFields") or [] if e.get("subresource") != "status"
            ]
            controller = {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "subresource": "status",
                "apiVersion": res.group_version,
                "fieldsType": "FieldsV1",
                "time": _now(),
            }
            meta["managedFields"] = [*others, controller]
            return copy.deepcopy(obj)

    def get(self, res: ApiResource, ns: str | None, name: str) -> dict:
        with self.lock:
            obj = self.objects.get((res.group_version, res.kind, ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{res.plural} "{name}" not found')
        return copy.deepcopy(obj)

    def list(self, res: ApiResource, ns: str | None, selector: str) -> dict:
        with self.lock:
            found = [
                copy.deepcopy(obj)
                for (gv, kind, obj_ns, _), obj in sorted(self.objects.items(), key=_sort_key)
                if gv == res.group_version
                and kind == res.kind
                and (ns is None or obj_ns == ns)
                and matches_selector(obj["metadata"].get("labels") or {}, selector)
            ]
            revision = str(self.revision)
        for item in found:  # as a real server's JSON lists: the kind is the list's
            item.pop("apiVersion", None)
            item.pop("kind", None)
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.group_version,
            "metadata": {"resourceVersion": revision},
            "items": found,
        }

    def delete(self, res: ApiResource, ns: str | None, name: str) -> dict:
        with self.lock:
            obj = self.objects.pop((res.group_version, res.kind, ns, name), None)
            if obj is None:
                raise ApiError(404, "NotFound", f'{res.plural} "{name}" not found')
            if res.kind == "Namespace":
                for key in [k for k in self.objects if k[2] == name]:
                    del self.objects[key]
                obj["status"] = {"phase": "Terminating"}
            self._next_revision()
        return obj


def _sort_key(item: tuple[Key, dict]) -> tuple[str, ...]:
    gv, kind, ns, name = item[0]
    return (gv, kind, ns or "", name)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resource_for(api_version: str, kind: str) -> ApiResource:
    for res in RESOURCES:
        if res.group_version == api_version and res.kind == kind:
            return res
    raise KeyError(f"{api_version} {kind} is not served by the fake API server")


def _group_versions() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for res in RESOURCES:
        if res.group and res.version not in groups.setdefault(res.group, []):
            groups[res.group].append(res.version)
    return groups


def api_resource_list(group: str, version: str) -> dict:
    """The legacy discovery document of one group/version, subresources included."""
    entries = []
    for res in RESOURCES:
        if (res.group, res.version) != (group, version):
            continue
        entries.append(
            {
                "name": res.plural,
                "singularName": res.kind.lower(),
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": VERBS,
            }
        )
        for sub in res.subresources:
            entries.append(
                {
                    "name": f"{res.plural}/{sub}",
                    "singularName": "",
                    "namespaced": res.namespaced,
                    "kind": res.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    if not entries:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries}


def api_group_list() -> dict:
    groups = []
    for group, versions in _group_versions().items():
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        groups.append({"name": group, "versions": listed, "preferredVersion": listed[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def route_resource(path: str) -> tuple[ApiResource, str | None, str | None]:
    """``/api/v1/...`` or ``/apis/<g>/<v>/...`` -> (resource, namespace, name)."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    else:
        group, version, rest = parts[1], parts[2], parts[3:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 2:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    for res in RESOURCES:
        if (res.group, res.version, res.plural) == (group, version, rest[0]):
            if namespace is not None and not res.namespaced:
                break
            return res, namespace, rest[1] if len(rest) == 2 else None
    raise ApiError(404, "NotFound", "the server could not find the requested resource")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive + small writes would wait on delayed ACKs
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet tests
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.fake.record(
            RecordedRequest(
                self.command,
                url.path,
                query,
                self.headers.get("Content-Type"),
                self.headers.get("Accept"),
                self.headers.get("Authorization"),
            )
        )
        try:
            self._check_auth()
            code, payload = self._dispatch(url.path, query, body)
        except ApiError as error:
            code, payload = error.code, error.status()
        self._send(code, payload)

    def _check_auth(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.server.fake.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _check_accept(self) -> None:
        accept = self.headers.get("Accept") or "*/*"
        if not accepts_plain_json(accept):
            raise ApiError(406, "NotAcceptable", f"only application/json is served, not {accept}")

    def _dispatch(self, path: str, query: dict, body: bytes) -> tuple[int, dict]:
        state = self.server.fake.state
        self._check_accept()
        if self.command == "GET" and path in ("/version", "/version/"):
            return 200, VERSION
        if self.command == "GET" and path == "/api":
            return 200, {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [],
            }
        if self.command == "GET" and path == "/apis":
            return 200, api_group_list()
        parts = path.strip("/").split("/")
        if self.command == "GET" and parts[:2] == ["api", "v1"] and len(parts) == 2:
            return 200, api_resource_list("", "v1")
        if self.command == "GET" and parts[0] == "apis" and len(parts) == 3:
            return 200, api_resource_list(parts[1], parts[2])
        if parts[0] not in ("api", "apis") or len(parts) < 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        res, ns, name = route_resource(path)
        selector = (query.get("labelSelector") or [""])[0]
        if self.command == "GET":
            return 200, state.get(res, ns, name) if name else state.list(res, ns, selector)
        if self.command == "DELETE" and name:
            return 200, state.delete(res, ns, name)
        if self.command == "PATCH" and name:
            return self._patch(res, ns, name, query, body)
        raise ApiError(405, "MethodNotAllowed", f"{self.command} is not supported by the fake")

    def _patch(
        self, res: ApiResource, ns: str | None, name: str, query: dict, body: bytes
    ) -> tuple[int, dict]:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != APPLY_PATCH:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the fake only serves {APPLY_PATCH}, not {content_type}",
            )
        try:
            parsed = yaml.safe_load(body)
        except yaml.YAMLError as error:
            raise ApiError(400, "BadRequest", f"invalid apply patch: {error}") from error
        if not isinstance(parsed, dict):
            raise ApiError(400, "BadRequest", "the apply patch is not an object")
        return self.server.fake.state.apply(res, ns, name, parsed, query)

    def _send(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeApiServer


class FakeApiServer:
    """Start with ``with FakeApiServer() as server:``; ``stop()`` ends exactly this server."""

    def __init__(self, token: str = "fake-token") -> None:
        self.token = token
        self.state = ClusterState()
        self._requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeApiServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "the server is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def record(self, request: RecordedRequest) -> None:
        with self._requests_lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._requests_lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig pointing at this server with a bearer-token user."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "hdh", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "hdh", "namespace": "default"},
                }
            ],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- direct access for tests --

    def put(self, obj: dict, manager: str = "kubectl") -> dict:
        return self.state.put(copy.deepcopy(obj), manager)

    def write_status(self, obj: dict, status: dict) -> dict:
        meta = obj["metadata"]
        res = resource_for(obj["apiVersion"], obj["kind"])
        return self.state.write_status(res, meta.get("namespace"), meta["name"], status)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        try:
            return self.state.get(resource_for(api_version, kind), namespace, name)
        except ApiError:
            return None

    def objects(self) -> list[dict]:
        with self.state.lock:
            return [copy.deepcopy(o) for _, o in sorted(self.state.objects.items(), key=_sort_key)]
