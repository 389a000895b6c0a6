"""YAML tests as SQL: each test is a query counting the rows that break it (dbt's convention).

Pure: the queries are written in the authoring dialect, against the model's own table name, and
run by whichever engine built the model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import dagster as dg
from sqlglot import exp

from hdh_assets.products.compiler import (
    AUTHOR_DIALECT,
    CompiledModel,
    Reference,
    parse_reference,
    table_name,
)
from hdh_assets.products.models import (
    SIMPLE_TESTS,
    AcceptedValues,
    ExpressionTest,
    ModelError,
    Relationships,
    TestConfig,
)

MIN_CELL_SIZE = "min_cell_size"


@dataclass(frozen=True)
class SqlCheck:
    name: str
    description: str
    sql: str  # SELECT COUNT(*) of failing rows, in AUTHOR_DIALECT
    blocking: bool
    severity: str
    references: tuple[Reference, ...] = ()

    def spec(self, key: dg.AssetKey) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            self.name, asset=key, description=self.description, blocking=self.blocking
        )


def _q(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(AUTHOR_DIALECT)


def _literal(value) -> str:
    return exp.Literal.string(str(value)).sql(AUTHOR_DIALECT)


def _count(where: str, table: str) -> str:
    return f"SELECT COUNT(*) AS failures FROM {table} WHERE {where}"


def _column_check(
    model: CompiledModel, column: str, test, known_models: set[str], index: int
) -> SqlCheck:
    table, col = table_name(model.key), _q(column)
    default_blocking = model.source.spec.config.blocking_tests
    if isinstance(test, str):
        kind, options = test, {}
    elif isinstance(test, dict) and len(test) == 1:
        kind, options = next(iter(test.items()))
        options = options or {}
    else:
        raise ModelError(
            model.source.yaml_path,
            model.source.yaml_line,
            f"column '{column}': a test is a name or a one-key mapping, got {test!r}",
        )
    where = model.source.yaml_path, model.source.yaml_line
    try:
        if kind in SIMPLE_TESTS:
            config = TestConfig.model_validate(options)
            if kind == "not_null":
                sql, what = _count(f"{col} IS NULL", table), f"{column} is never null"
            else:
                sql = (
                    f"SELECT COUNT(*) AS failures FROM (SELECT {col} FROM {table} WHERE {col} IS "
                    f"NOT NULL GROUP BY {col} HAVING COUNT(*) > 1) AS duplicated"
                )
                what = f"{column} is unique"
            return _make(f"{kind}_{column}", what, sql, config, default_blocking)
        if kind == "accepted_values":
            config = AcceptedValues.model_validate(options)
            values = ", ".join(_literal(v) for v in config.values)
            sql = _count(f"{col} IS NOT NULL AND CAST({col} AS TEXT) NOT IN ({values})", table)
            return _make(
                f"accepted_values_{column}",
                f"{column} is one of {[str(v) for v in config.values]}",
                sql,
                config,
                default_blocking,
            )
        if kind == "relationships":
            config = Relationships.model_validate(options)
            target = parse_reference(config.to.strip("{} "), where[0], where[1], known_models)
            parent, field = target.table, _q(config.field)
            sql = (
                f"SELECT COUNT(*) AS failures FROM {table} AS child LEFT JOIN "
                f"(SELECT DISTINCT {field} AS parent_key FROM {parent}) AS parent "
                f"ON child.{col} = parent.parent_key "
                f"WHERE child.{col} IS NOT NULL AND parent.parent_key IS NULL"
            )
            return _make(
                f"relationships_{column}",
                f"every {column} is a {config.field} of {target.key.to_user_string()}",
                sql,
                config,
                default_blocking,
                (target,),
            )
        if kind == "expression":
            config = ExpressionTest.model_validate(options)
            return _expression(model, config, default_blocking, column)
    except ModelError:
        raise
    except Exception as error:  # pydantic errors: name the test, not a stack
        raise ModelError(*where, f"column '{column}', test {kind}: {error}") from None
    raise ModelError(
        *where,
        f"column '{column}': unknown test '{kind}' (known: not_null, "
        "unique, accepted_values, relationships, expression)",
    )


def _expression(model: CompiledModel, config: ExpressionTest, default_blocking: bool, suffix: str):
    table = table_name(model.key)
    name = f"expression_{config.name or suffix}"
    return _make(
        name,
        f"every row satisfies: {config.expression}",
        _count(f"NOT ({config.expression})", table),
        config,
        default_blocking,
    )


def _make(name, description, sql, config: TestConfig, default_blocking: bool, references=()):
    return SqlCheck(
        name=name,
        description=description,
        sql=sql,
        blocking=config.blocking or default_blocking,
        severity=config.severity,
        references=tuple(references),
    )


def model_checks(model: CompiledModel, known_models: set[str]) -> list[SqlCheck]:
    """The model's YAML tests, plus disclosure control for aggregate-only products."""
    spec = model.source.spec
    checks = [
        _column_check(model, column.name, test, known_models, index)
        for column in spec.columns
        for index, test in enumerate(column.tests)
    ]
    for index, test in enumerate(spec.tests):
        options = test.get("expression") if isinstance(test, dict) else None
        if not isinstance(options, dict):
            raise ModelError(
                spec and model.source.yaml_path,
                model.source.yaml_line,
                "model-level tests are expressions: - expression: {expression: ...}",
            )
        checks.append(
            _expression(
                model,
                ExpressionTest.model_validate(options),
                spec.config.blocking_tests,
                str(index),
            )
        )
    aggregate = spec.config.aggregate_only
    if aggregate:
        k = aggregate.min_cell_size
        small = " OR ".join(f"({_q(c)} > 0 AND {_q(c)} < {k})" for c in aggregate.count_columns)
        checks.append(
            SqlCheck(
                name=MIN_CELL_SIZE,
                description=(
                    f"disclosure control: no cell of {', '.join(aggregate.count_columns)} between "
                    f"1 and {k - 1}; a failing product cannot be released"
                ),
                sql=_count(small, table_name(model.key)),
                blocking=True,
                severity="error",
            )
        )
    seen: dict[str, int] = {}
    for position, check in enumerate(checks):  # a second expression on a column: _2, _3, ...
        seen[check.name] = seen.get(check.name, 0) + 1
        if seen[check.name] > 1 and check.name.startswith("expression_"):
            checks[position] = replace(check, name=f"{check.name}_{seen[check.name]}")
    names = [c.name for c in checks]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ModelError(
            model.source.yaml_path,
            model.source.yaml_line,
            f"tests with the same name: {duplicated}; give expressions a name",
        )
    return checks
