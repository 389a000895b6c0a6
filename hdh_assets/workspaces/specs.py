"""What a project team is granted: one YAML spec per project, checked against the approvals.

A spec lives in ``workspaces/projects/<id>.yaml``; ``workspaces/approvals.yaml`` lists, per
authorisation (a CNIL or CESREES decision), the data products it approves. A spec is refused,
with an error naming the file, the field and the reason, when it is malformed or when it grants
a product its authorisation does not approve. Pure: reading files, no cluster, no Dagster.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from hdh_assets.products.models import NAME_PATTERN as PRODUCT_NAME
from hdh_assets.products.models import VERSION_PATTERN
from hdh_assets.workspaces.image import image_definition

DEFAULT_SPECS_DIR = Path("workspaces/projects")
APPROVALS_FILE = "approvals.yaml"
NAMESPACE_PREFIX = "hdh-ws-"
# The id ends up in the namespace (63 characters) and in host names such as
# ``jupyterlab-<id>.<domain>`` whose first label is also limited to 63.
MAX_ID_LENGTH = 48
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s.]{2,63}$")
USERNAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
AUTHORISATION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/:-]{0,99}$")
ROLES = ("owner", "analyst", "viewer")
Role = Literal["owner", "analyst", "viewer"]
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present

# Kubernetes quantities (apimachinery's grammar): a number then a binary, decimal or exponent suffix.
_QUANTITY = re.compile(
    r"^(?P<number>\+?(?:\d+(?:\.\d*)?|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_SUFFIXES = {
    "": 1,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
# Sane bounds of one application container (cpu in cores, memory and storage in bytes).
CPU_BOUNDS = (Decimal("0.25"), Decimal(64))
MEMORY_BOUNDS = (Decimal(2**30), Decimal(512 * 2**30))
STORAGE_BOUNDS = (Decimal(2**30), Decimal(10 * 2**40))


class SpecError(ValueError):
    """A spec or approvals file that is refused; one line per problem: ``file: field: reason``."""

    def __init__(self, issues: Iterable[SpecIssue]):
        self.issues = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    @property
    def files(self) -> set[str]:
        return {issue.file for issue in self.issues}


@dataclass(frozen=True)
class SpecIssue:
    """One refused field: where it is and why, in words a project team can act on."""

    file: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.reason}"


# --- Kubernetes quantities -------------------------------------------------------------------


def parse_quantity(value: str) -> Decimal:
    """The value of a Kubernetes quantity (``"500m"`` -> 0.5, ``"8Gi"`` -> 8589934592)."""
    match = _QUANTITY.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 2, 500m, 8Gi)")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as error:  # pragma: no cover - the pattern admits only numbers
        raise ValueError(f"{value!r} is not a Kubernetes quantity") from error
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


def format_cpu(cores: Decimal) -> str:
    """Cores as Kubernetes writes them: whole cores plain, otherwise millicores."""
    if cores == cores.to_integral_value():
        return str(int(cores))
    millis = (cores * 1000).to_integral_value(rounding="ROUND_CEILING")
    return f"{int(millis)}m"


def format_bytes(amount: Decimal) -> str:
    """Bytes with the largest binary suffix that divides them exactly (``8Gi``, ``1536Mi``)."""
    whole = int(amount.to_integral_value(rounding="ROUND_CEILING"))
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _SUFFIXES[suffix]
        if whole and whole % unit == 0:
            return f"{whole // unit}{suffix}"
    return str(whole)


def _bounded(value: Any, bounds: tuple[Decimal, Decimal], shown: tuple[str, str]) -> str:
    text = str(value).strip() if isinstance(value, int | float | str) else value
    amount = parse_quantity(text)
    if not bounds[0] <= amount <= bounds[1]:
        raise ValueError(f"{text} is outside the allowed range {shown[0]} to {shown[1]}")
    return text


# --- the spec --------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Member(_Strict):
    """A person of the project team and what they may do in its namespace."""

    user: str
    role: Role

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not (EMAIL.match(value) or USERNAME.match(value)):
            raise ValueError(f"{value!r} is neither an e-mail address nor a username")
        return value

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> Any:
        if value not in ROLES:
            raise ValueError(f"must be one of {', '.join(ROLES)}")
        return value


class Grant(_Strict):
    """One released version of a data product, mounted read-only in the workspace."""

    product: str
    version: str

    @field_validator("product")
    @classmethod
    def _product(cls, value: str) -> str:
        if not PRODUCT_NAME.match(value):
            raise ValueError(f"{value!r} is not a data product name (lower case, digits, _)")
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if not isinstance(value, str) or not VERSION_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a release version MAJOR.MINOR.PATCH (e.g. 1.0.0)")
        return value


class Compute(_Strict):
    """Resources of each application container; the quota adds the sign-in proxies."""

    cpu: str = "2"
    memory: str = "8Gi"
    storage: str = "50Gi"

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> str:
        return _bounded(value, CPU_BOUNDS, ("250m", "64"))

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> str:
        return _bounded(value, MEMORY_BOUNDS, ("1Gi", "512Gi"))

    @field_validator("storage", mode="before")
    @classmethod
    def _storage(cls, value: Any) -> str:
        return _bounded(value, STORAGE_BOUNDS, ("1Gi", "10Ti"))


class Applications(_Strict):
    """Which applications the workspace runs, each behind its own sign-in proxy."""

    jupyterlab: bool = True
    rstudio: bool = False
    gitlab: str | None = None

    @field_validator("gitlab")
    @classmethod
    def _gitlab(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"{value!r} is not an https:// URL")
        return value

    @model_validator(mode="after")
    def _one_application(self) -> Applications:
        if not (self.jupyterlab or self.rstudio):
            raise ValueError("enable at least one of jupyterlab, rstudio")
        return self

    def enabled(self) -> tuple[str, ...]:
        """The interactive applications to deploy, in a fixed order."""
        return tuple(name for name in ("jupyterlab", "rstudio") if getattr(self, name))


class Packages(_Strict):
    """Extra packages baked into the workspace image; they come through the package proxy."""

    python: list[str] = Field(default_factory=list)
    r: list[str] = Field(default_factory=list)

    @field_validator("python")
    @classmethod
    def _python(cls, values: list[str]) -> list[str]:
        seen: set[str] = set()
        for index, value in enumerate(values):
            name = _pip_requirement_name(index, value)
            if name in seen:
                raise ValueError(f"[{index}]: {name!r} is listed twice")
            seen.add(name)
        return values

    @field_validator("r")
    @classmethod
    def _r(cls, values: list[str]) -> list[str]:
        seen: set[str] = set()
        for index, value in enumerate(values):
            _image_accepts(index, [], [value])
            if value in seen:
                raise ValueError(f"[{index}]: {value!r} is listed twice")
            seen.add(value)
        return values


def _pip_requirement_name(index: int, value: str) -> str:
    """The canonical name of a requirement the image builder accepts (no URLs, markers, options)."""
    _image_accepts(index, [value], [])
    try:
        return canonicalize_name(Requirement(value).name)
    except InvalidRequirement as error:  # pragma: no cover - the image builder refused it first
        raise ValueError(f"[{index}]: {value!r} is not a pip requirement ({error})") from None


def _image_accepts(index: int, python: list[str], r: list[str]) -> None:
    """Refuse at load time, with the field, what the image builder would refuse at render time."""
    try:
        image_definition(python, r)
    except (TypeError, ValueError) as error:
        raise ValueError(f"[{index}]: {error}") from None


class ProjectSpec(_Strict):
    """A project's workspace: who, which approved data, which tools, how much, until when."""

    id: str
    title: str = Field(min_length=1, max_length=200)
    authorisation: str
    members: list[Member] = Field(min_length=1)
    grants: list[Grant] = Field(default_factory=list)
    compute: Compute = Field(default_factory=Compute)
    applications: Applications = Field(default_factory=Applications)
    packages: Packages = Field(default_factory=Packages)
    expires: dt.date
    _source: str | None = PrivateAttr(default=None)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if len(value) > MAX_ID_LENGTH or not DNS_LABEL.match(value):
            raise ValueError(
                f"{value!r} is not a DNS label of at most {MAX_ID_LENGTH} characters "
                "(lower case letters, digits and -, starting and ending with a letter or digit)"
            )
        return value

    @field_validator("authorisation")
    @classmethod
    def _authorisation(cls, value: str) -> str:
        if not AUTHORISATION.match(value):
            raise ValueError(f"{value!r} is not an authorisation reference (e.g. CNIL-DR-2024-117)")
        return value

    @field_validator("members")
    @classmethod
    def _members(cls, members: list[Member]) -> list[Member]:
        users = [member.user.lower() for member in members]
        twice = sorted({user for user in users if users.count(user) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed more than once")
        if not any(member.role == "owner" for member in members):
            raise ValueError("at least one member must be an owner")
        return members

    @field_validator("grants")
    @classmethod
    def _grants(cls, grants: list[Grant]) -> list[Grant]:
        keys = [(grant.product, grant.version) for grant in grants]
        twice = sorted({f"{p} {v}" for p, v in keys if keys.count((p, v)) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} granted more than once")
        return grants

    @property
    def source(self) -> str:
        """The file the spec was read from (for error messages)."""
        return self._source or f"{self.id}.yaml"

    @property
    def namespace(self) -> str:
        return f"{NAMESPACE_PREFIX}{self.id}"

    @property
    def digest(self) -> str:
        """A hash of the spec's content, to tell whether a workspace must change."""
        return digest_of(self.model_dump(mode="json"))


def digest_of(data: Any) -> str:
    """SHA-256 of canonical JSON: the same content always gives the same digest."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def is_expired(spec: ProjectSpec, today: dt.date) -> bool:
    """True after the last day of the project (``expires`` is the last day it may run)."""
    return today > spec.expires


# --- reading files ---------------------------------------------------------------------------


def _field_path(loc: Iterable[str | int]) -> str:
    """pydantic's ``("members", 0, "role")`` as ``members[0].role``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "<document>"


def _reason(error: Mapping[str, Any]) -> str:
    kind, message = error["type"], str(error["msg"])
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    return message.removeprefix("Value error, ")


def _issues(file: str, error: ValidationError) -> list[SpecIssue]:
    """One issue per pydantic error; list indexes from our own validators join the path."""
    issues = []
    for item in error.errors(include_url=False):
        field, reason = _field_path(item["loc"]), _reason(item)
        if reason.startswith("[") and "]: " in reason:  # "[2]: ..." from a list validator
            index, reason = reason.split(": ", 1)
            field += index
        issues.append(SpecIssue(file, field, reason))
    return issues


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError([SpecIssue(str(path), "<document>", f"cannot read: {error}")]) from None
    try:
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError(
            [SpecIssue(str(path), "<document>", f"invalid YAML{where}: {problem}")]
        ) from None


def load_spec(path: Path | str) -> ProjectSpec:
    """One spec file, checked against the schema and its file name (not yet its approvals)."""
    path = Path(path)
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError([SpecIssue(str(path), "<document>", "must be a mapping of fields")])
    try:
        spec = ProjectSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_issues(str(path), error)) from None
    if spec.id != path.stem:
        reason = f"must equal the file name {path.stem!r} (found {spec.id!r})"
        raise SpecError([SpecIssue(str(path), "id", reason)])
    spec._source = str(path)
    return spec


def spec_files(folder: Path | str) -> list[Path]:
    """The spec files of a folder, in name order (``*.yaml`` and ``*.yml``)."""
    folder = Path(folder)
    return sorted(
        (p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()),
        key=lambda p: p.name,
    )


def load_specs_report(
    folder: Path | str, approvals: Approvals | None = None
) -> tuple[dict[str, ProjectSpec], list[SpecError]]:
    """Every valid spec of ``folder`` and one error per refused file, so callers keep going.

    Grants are always checked: without ``approvals``, ``<folder>/../approvals.yaml`` is read; if
    it does not exist, every spec that grants data is refused (deny by default).
    """
    folder = Path(folder)
    if approvals is None:
        approvals = load_approvals(folder.parent / APPROVALS_FILE, missing_ok=True)
    specs: dict[str, ProjectSpec] = {}
    errors: list[SpecError] = []
    for path in spec_files(folder):
        try:
            spec = load_spec(path)
            if spec.id in specs:
                reason = f"another file ({specs[spec.id].source}) already declares this id"
                raise SpecError([SpecIssue(str(path), "id", reason)])
            check_grants(spec, approvals)
        except SpecError as error:
            errors.append(error)
            continue
        specs[spec.id] = spec
    return specs, errors


def load_specs(folder: Path | str, approvals: Approvals | None = None) -> dict[str, ProjectSpec]:
    """Every spec of ``folder`` by id; any refused file raises one SpecError listing them all."""
    specs, errors = load_specs_report(folder, approvals)
    if errors:
        raise SpecError(issue for error in errors for issue in error.issues)
    return specs


# --- approvals -------------------------------------------------------------------------------


class ApprovedVersions(BaseModel):
    """Which versions of one product an authorisation approves: all, a range, or a list."""

    model_config = ConfigDict(frozen=True)
    any_version: bool = False
    specifier: str | None = None
    exact: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: Any) -> ApprovedVersions:
        """``null``/``"*"`` (any), ``"1.2.0"`` (exact), ``">=1.0.0,<2"`` (range) or a list."""
        if value is None or value == "*":
            return cls(any_version=True)
        if isinstance(value, list):
            for version in value:
                _check_version(version)
            return cls(exact=tuple(str(v) for v in value))
        if isinstance(value, str) and VERSION_PATTERN.match(value):
            return cls(exact=(value,))
        if isinstance(value, str):
            try:
                SpecifierSet(value)
            except InvalidSpecifier:
                raise ValueError(f"{value!r} is neither a version nor a version range") from None
            return cls(specifier=value)
        raise ValueError(f"{value!r}: expected '*', a version, a range or a list of versions")

    def allows(self, version: str) -> bool:
        if self.any_version:
            return True
        if self.specifier is not None:
            return Version(version) in SpecifierSet(self.specifier)
        return version in self.exact

    def describe(self) -> str:
        if self.any_version:
            return "any version"
        return self.specifier or ", ".join(self.exact)


def _check_version(value: Any) -> None:
    if not isinstance(value, str) or not VERSION_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a release version MAJOR.MINOR.PATCH")


class Authorisation(_Strict):
    """One regulatory decision and the data products it covers."""

    description: str | None = None
    expires: dt.date | None = None
    products: dict[str, ApprovedVersions] = Field(min_length=1)

    @field_validator("products", mode="before")
    @classmethod
    def _products(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("must map product names to approved versions")
        parsed = {}
        for product, versions in value.items():
            if not isinstance(product, str) or not PRODUCT_NAME.match(product):
                raise ValueError(f"{product!r} is not a data product name")
            try:
                parsed[product] = ApprovedVersions.parse(versions)
            except ValueError as error:
                raise ValueError(f"{product}: {error}") from None
        return parsed


@dataclass(frozen=True)
class Approvals:
    """Authorisation reference -> what it approves; read from ``approvals.yaml``."""

    authorisations: Mapping[str, Authorisation]
    source: str = APPROVALS_FILE


def load_approvals(path: Path | str, *, missing_ok: bool = False) -> Approvals:
    """The approvals file; a missing file approves nothing when ``missing_ok``."""
    path = Path(path)
    if missing_ok and not path.exists():
        return Approvals({}, str(path))
    data = _read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        reason = "must map authorisation references to their approved products"
        raise SpecError([SpecIssue(str(path), "<document>", reason)])
    issues: list[SpecIssue] = []
    parsed: dict[str, Authorisation] = {}
    for reference, entry in data.items():
        if not isinstance(reference, str) or not AUTHORISATION.match(reference):
            issues.append(SpecIssue(str(path), str(reference), "not an authorisation reference"))
            continue
        try:
            parsed[reference] = Authorisation.model_validate(entry)
        except ValidationError as error:
            for issue in _issues(str(path), error):
                field = reference if issue.field == "<document>" else f"{reference}.{issue.field}"
                issues.append(SpecIssue(issue.file, field, issue.reason))
    if issues:
        raise SpecError(issues)
    return Approvals(parsed, str(path))


def grant_issues(spec: ProjectSpec, approvals: Approvals) -> list[SpecIssue]:
    """Why the spec's grants are not covered by its authorisation (empty when they are)."""
    if not spec.grants:
        return []
    authorisation = approvals.authorisations.get(spec.authorisation)
    if authorisation is None:
        reason = f"{spec.authorisation!r} is not in {approvals.source}: no data may be granted"
        return [SpecIssue(spec.source, "authorisation", reason)]
    issues = []
    if authorisation.expires and spec.expires > authorisation.expires:
        reason = (
            f"{spec.expires} is after the end of authorisation {spec.authorisation!r} "
            f"({authorisation.expires})"
        )
        issues.append(SpecIssue(spec.source, "expires", reason))
    for index, grant in enumerate(spec.grants):
        approved = authorisation.products.get(grant.product)
        if approved is None:
            reason = f"{grant.product!r} is not approved by authorisation {spec.authorisation!r}"
            issues.append(SpecIssue(spec.source, f"grants[{index}].product", reason))
        elif not approved.allows(grant.version):
            reason = (
                f"{grant.product} {grant.version} is not approved by authorisation "
                f"{spec.authorisation!r} ({approved.describe()})"
            )
            issues.append(SpecIssue(spec.source, f"grants[{index}].version", reason))
    return issues


def check_grants(spec: ProjectSpec, approvals: Approvals) -> None:
    """Refuse (SpecError) a spec that grants data its authorisation does not approve."""
    issues = grant_issues(spec, approvals)
    if issues:
        raise SpecError(issues)
