"""What a data referent writes: ``<domain>/<model>.sql`` and a dbt-style YAML entry beside it.

Any ``*.yml``/``*.yaml`` file in a domain folder may describe models (``models:`` list, as in
dbt); each ``.sql`` file needs exactly one entry. Errors name the file and the line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_SQL_DIR = "dbt_like_sql"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
VERSION_PATTERN = re.compile(r"^\d+\.\d+\.\d+$")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster


class ModelError(ValueError):
    """A model that cannot load; the message starts with ``file:line``."""

    def __init__(self, path: Path | str, line: int | None, reason: str):
        self.path, self.line, self.reason = Path(path), line, reason
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {reason}")


def sql_dir_from_env() -> Path:
    """``HDH_SQL_DIR``, or ``dbt_like_sql/`` of this checkout."""
    configured = os.environ.get("HDH_SQL_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / DEFAULT_SQL_DIR


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TestConfig(_Strict):
    """Options every YAML test accepts."""

    severity: Literal["error", "warn"] = "error"
    blocking: bool = False


class AcceptedValues(TestConfig):
    values: list[str | int | float | bool] = Field(min_length=1)


class Relationships(TestConfig):
    to: str  # "ref('model')" or "source('group', 'asset')"
    field: str


class ExpressionTest(TestConfig):
    expression: str = Field(min_length=1)
    name: str | None = None


ColumnTest = str | dict[str, Any]
SIMPLE_TESTS = {"not_null", "unique"}


class Column(_Strict):
    name: str
    description: str = ""
    data_type: str | None = None
    tests: list[ColumnTest] = []

    @model_validator(mode="before")
    @classmethod
    def _dbt_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "data_tests" in data:  # dbt >= 1.8 spelling
            data = {**data, "tests": data.get("tests", []) + data.pop("data_tests")}
        return data


class AggregateOnly(_Strict):
    """An aggregate product: no row is a person, and no count below ``min_cell_size`` is shown."""

    min_cell_size: int = Field(ge=2)
    count_columns: list[str] = Field(min_length=1)


class Partitioning(_Strict):
    by: Literal["monthly", "daily"] = "monthly"
    start: str = "2021-01-01"
    column: str = "month"


class ModelConfig(_Strict):
    engine: Literal["polars", "spark"] = "polars"
    materialized: Literal["table", "partitioned"] = "table"
    partitioning: Partitioning | None = None
    subject_column: str | None = None
    aggregate_only: AggregateOnly | None = None
    blocking_tests: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if (self.subject_column is None) == (self.aggregate_only is None):
            raise ValueError(
                "declare exactly one of subject_column (rows are people) or aggregate_only"
            )
        if self.materialized == "partitioned" and self.partitioning is None:
            object.__setattr__(self, "partitioning", Partitioning())
        if self.materialized == "table" and self.partitioning is not None:
            raise ValueError("partitioning needs materialized: partitioned")
        return self


class ModelSpec(_Strict):
    name: str
    description: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    tags: list[str] = []
    release: str = "0.1.0"
    config: ModelConfig
    columns: list[Column] = []
    tests: list[dict[str, Any]] = []

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                "use lower-case letters, digits and underscores, starting with a letter"
            )
        return value

    @field_validator("release")
    @classmethod
    def _release(cls, value: str) -> str:
        if not VERSION_PATTERN.match(str(value)):
            raise ValueError("a release version is MAJOR.MINOR.PATCH, e.g. 1.0.0")
        return str(value)

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str) -> str:
        if not (value.startswith("team:") or re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", value)):
            raise ValueError("an owner is an e-mail address or 'team:<name>'")
        return value


@dataclass(frozen=True)
class ModelSource:
    """One model as found on disk."""

    domain: str
    sql_path: Path
    yaml_path: Path
    yaml_line: int
    sql: str
    spec: ModelSpec

    @property
    def name(self) -> str:
        return self.spec.name


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The YAML line of a pydantic error location, as deep as the document goes."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _yaml_entries(path: Path) -> list[tuple[dict, yaml.Node]]:
    """Entries with their YAML node; nodes carry the lines that error messages quote."""
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise ModelError(path, mark.line + 1 if mark else None, f"invalid YAML: {error}") from None
    if root is None:
        return []
    document = _LOADER(text).construct_document(root)
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise ModelError(path, 1, "expected a 'models:' list, as in dbt")
    models_node = next(v for k, v in root.value if k.value == "models")
    return list(zip(document["models"], models_node.value, strict=True))


def _spec(path: Path, entry: Any, node: yaml.Node) -> ModelSpec:
    if not isinstance(entry, dict):
        raise ModelError(path, node.start_mark.line + 1, "a model entry is a mapping")
    try:
        return ModelSpec.model_validate(entry)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "model"
        name = entry.get("name", "?")
        raise ModelError(
            path, _line_of(node, first["loc"]), f"model '{name}', field '{field}': {first['msg']}"
        ) from None


def discover(sql_dir: Path) -> list[ModelSource]:
    """Every model under ``sql_dir/<domain>/``, sorted by name; a missing folder holds none."""
    if not sql_dir.is_dir():
        return []
    found: dict[str, ModelSource] = {}
    for domain_dir in sorted(p for p in sql_dir.iterdir() if p.is_dir() and p.name[0] not in "._"):
        sql_files = {p.stem: p for p in sorted(domain_dir.glob("*.sql"))}
        described: dict[str, tuple[Path, int, ModelSpec]] = {}
        yaml_files = sorted([*domain_dir.glob("*.yml"), *domain_dir.glob("*.yaml")])
        for yaml_path in yaml_files:
            for entry, node in _yaml_entries(yaml_path):
                spec = _spec(yaml_path, entry, node)
                line = node.start_mark.line + 1
                if spec.name in described:
                    raise ModelError(yaml_path, line, f"model '{spec.name}' is described twice")
                if spec.name not in sql_files:
                    raise ModelError(
                        yaml_path, line, f"model '{spec.name}' has no {spec.name}.sql beside it"
                    )
                described[spec.name] = (yaml_path, line, spec)
        for stem, sql_path in sql_files.items():
            if stem not in described:
                raise ModelError(
                    sql_path,
                    None,
                    f"no YAML entry describes model '{stem}' (models: - name: {stem})",
                )
            if stem in found:
                raise ModelError(
                    sql_path, None, f"model name '{stem}' is already used in {found[stem].sql_path}"
                )
            yaml_path, line, spec = described[stem]
            found[stem] = ModelSource(
                domain=domain_dir.name,
                sql_path=sql_path,
                yaml_path=yaml_path,
                yaml_line=line,
                sql=sql_path.read_text(encoding="utf-8"),
                spec=spec,
            )
    return [found[name] for name in sorted(found)]
