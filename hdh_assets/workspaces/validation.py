"""Strict validation of rendered objects against the Kubernetes schemas of kubernetes-validate.

``kubernetes_validate.validate`` re-reads and re-parses the 1.8 MB ``_definitions.json`` of the
chosen version for every object (about 20 ms each): 200 workspaces of ~25 objects would take
minutes. This module resolves the same schema files the same way (latest shipped version not
newer than the one asked for, ``-strict`` variant, Draft 2020-12 with the definitions in the
registry) but builds each validator once per (version, kind, apiVersion) and reuses it. A test
checks that both agree on valid and invalid objects.

The schemas do not check names or labels (``ObjectMeta.name`` is any string), so
:func:`metadata_errors` adds the API server's rules for those.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate.utils import all_versions
from packaging.version import Version
from referencing import Registry, Resource

# kubernetes-validate 1.37.0 ships schemas for Kubernetes 1.25 to 1.37. The default is the newest,
# 1.37, the API the pinned Kubernetes client (37.x) speaks; objects here use only GA APIs
# (v1, apps/v1, rbac/v1, networking/v1), and the tests also validate them against 1.33.
DEFAULT_KUBERNETES_VERSION = "1.37"
_SCHEMA_ROOT = "kubernetes-json-schema"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# Kinds whose names are DNS labels (RFC 1123, Services RFC 1035); the others are subdomains.
_LABEL_NAMED = {"Namespace": _DNS_LABEL, "Service": _DNS_1035_LABEL}


class ManifestValidationError(ValueError):
    """Rendered objects the API server would refuse; one line per problem."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@functools.cache
def supported_versions() -> tuple[str, ...]:
    """The ``MAJOR.MINOR`` versions kubernetes-validate ships schemas for, oldest first."""
    found = {".".join(v.split(".")[:2]) for v in all_versions()}
    return tuple(sorted(found, key=Version))


@functools.cache
def schema_version(requested: str) -> str:
    """The schema set used for ``requested``: the newest shipped one that is not newer.

    kubernetes-validate compares versions as strings ("1.4" > "1.37"); this compares numbers.
    """
    wanted = Version(".".join(requested.removeprefix("v").split(".")[:2]))
    candidates = [v for v in supported_versions() if Version(v) <= wanted]
    if not candidates or wanted > Version(supported_versions()[-1]):
        shipped = f"{supported_versions()[0]} to {supported_versions()[-1]}"
        raise ValueError(f"no Kubernetes {requested} schemas in kubernetes-validate ({shipped})")
    return candidates[-1]


def _schema_dir(version: str) -> Any:
    return resources.files("kubernetes_validate") / _SCHEMA_ROOT / f"v{version}.0-local-strict"


@functools.cache
def _registry(version: str) -> Registry:
    """The shared ``_definitions.json`` of one version, parsed once."""
    text = (_schema_dir(version) / "_definitions.json").read_text(encoding="utf-8")
    return Resource.from_contents(json.loads(text)) @ Registry()


def _schema_file(kind: str, api_version: str) -> str:
    """kubernetes-validate's file naming: ``rbac.authorization.k8s.io/v1`` -> ``rbac-v1``."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    return f"{kind.lower()}-{group_version}.json"


@functools.cache
def _validator(version: str, kind: str, api_version: str) -> jsonschema.Validator | None:
    """The strict validator of one kind, built once; ``None`` when no schema is shipped."""
    path = _schema_dir(version) / _schema_file(kind, api_version)
    if not path.is_file():
        return None
    schema = json.loads(path.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, registry=_registry(version))


def describe(obj: Mapping[str, Any]) -> str:
    """``Deployment hdh-ws-x/jupyterlab``: how errors name an object."""
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind', '<no kind>')} {where}{meta.get('name', '<no name>')}"


def _json_path(parts: Iterable[Any]) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "<object>"


def schema_errors(obj: Mapping[str, Any], kubernetes_version: str) -> list[str]:
    """Every strict-schema violation of one object, each naming the object and the field."""
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return [f"{describe(obj)}: apiVersion and kind are required"]
    version = schema_version(kubernetes_version)
    validator = _validator(version, kind, api_version)
    if validator is None:
        return [f"{describe(obj)}: no schema for {api_version} {kind} in Kubernetes {version}"]
    errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{describe(obj)}: {_json_path(e.absolute_path)}: {e.message}" for e in errors]


def metadata_errors(obj: Mapping[str, Any]) -> list[str]:
    """Name and label rules the API server enforces but the JSON schemas do not."""
    meta = obj.get("metadata") or {}
    errors = []
    name, namespace = meta.get("name"), meta.get("namespace")
    pattern = _LABEL_NAMED.get(str(obj.get("kind")), _DNS_SUBDOMAIN)
    limit = 63 if pattern is not _DNS_SUBDOMAIN else 253
    if not isinstance(name, str) or len(name) > limit or not pattern.match(name):
        errors.append(f"{describe(obj)}: metadata.name: {name!r} is not a valid name")
    if namespace is not None and (len(namespace) > 63 or not _DNS_LABEL.match(namespace)):
        errors.append(f"{describe(obj)}: metadata.namespace: {namespace!r} is not a DNS label")
    for key, value in (meta.get("labels") or {}).items():
        if not _label_key_ok(key):
            errors.append(f"{describe(obj)}: metadata.labels: {key!r} is not a valid label key")
        if (
            not isinstance(value, str)
            or len(value) > 63
            or (value and not _LABEL_NAME.match(value))
        ):
            errors.append(f"{describe(obj)}: metadata.labels.{key}: {value!r} is not a label value")
    return errors


def _label_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))


def validate_objects(
    objects: Iterable[Mapping[str, Any]], kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
) -> list[str]:
    """All problems of all objects (strict schema, names, labels); empty when all are valid."""
    errors: list[str] = []
    for obj in objects:
        errors += schema_errors(obj, kubernetes_version)
        errors += metadata_errors(obj)
    return errors


def raise_for_invalid(
    objects: Iterable[Mapping[str, Any]], kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
) -> None:
    """Refuse to deliver what the API server would reject."""
    errors = validate_objects(objects, kubernetes_version)
    if errors:
        raise ManifestValidationError(errors)


def validate_uncached(obj: Mapping[str, Any], kubernetes_version: str) -> str | None:
    """kubernetes-validate's own ``validate(..., strict=True)``: the reference we agree with.

    Returns the error message, or ``None`` when the object is valid. Slow (re-reads the
    schemas); the benchmark's baseline and the agreement test use it.
    """
    try:
        kubernetes_validate.validate(dict(obj), kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{describe(obj)}: {_json_path(error.path)}: {error.message}"
    return None
