"""Compile SQL models: resolve ``ref()``/``source()``, parse with sqlglot, derive dependencies,
output columns and column lineage, and transpile to each engine's dialect.

Pure: no Dagster, no data. A table in compiled SQL is named after its asset key joined by
``__`` (``source('clinical', 'conditions')`` -> ``clinical__conditions``); the engines register
each upstream under that name.
"""

from __future__ import annotations

import ast
import graphlib
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.lineage import lineage
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import build_scope
from sqlglot.schema import MappingSchema

from hdh_assets.products.models import ModelError, ModelSource

# Models are written in PostgreSQL-flavoured SQL (close to what polars' SQLContext reads).
AUTHOR_DIALECT = "postgres"
ENGINE_DIALECTS = {"polars": "postgres", "spark": "spark"}
PRODUCTS_PREFIX = "products"
TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
CALL = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.DOTALL)
PLACEHOLDER_TYPE = "text"  # lineage needs column names only
PERSON_COLUMNS = ("subject_pseudonym",)


def table_name(key: dg.AssetKey) -> str:
    return "__".join(key.path)


def model_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([PRODUCTS_PREFIX, name])


@dataclass(frozen=True)
class Reference:
    """One ``{{ ref() }}`` or ``{{ source() }}`` of a model, with its line."""

    kind: str  # "ref" | "source"
    key: dg.AssetKey
    line: int

    @property
    def table(self) -> str:
        return table_name(self.key)


@dataclass(frozen=True)
class CompiledModel:
    source: ModelSource
    references: tuple[Reference, ...]
    sql: str  # as written, in AUTHOR_DIALECT, with tables named by asset key
    output_columns: tuple[str, ...]
    engine_sql: Mapping[str, str]  # compiled for the model's engine when it loads
    column_lineage: Mapping[str, tuple[tuple[dg.AssetKey, str], ...]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def key(self) -> dg.AssetKey:
        return model_key(self.name)

    @property
    def engine(self) -> str:
        return self.source.spec.config.engine

    @property
    def upstream_keys(self) -> list[dg.AssetKey]:
        return sorted({r.key for r in self.references}, key=lambda k: k.to_user_string())

    def sql_for(self, engine: str | None = None) -> str:
        engine = engine or self.engine
        if engine in self.engine_sql:
            return self.engine_sql[engine]
        return transpile(self.sql, engine)  # the other engine: tests and benchmarks

    @property
    def code_version(self) -> str:
        """Changes exactly when the SQL the engine runs changes."""
        compiled = f"{self.engine}\n{self.sql_for()}"
        return hashlib.sha256(compiled.encode()).hexdigest()[:16]


def transpile(sql: str, engine: str) -> str:
    return sqlglot.transpile(sql, read=AUTHOR_DIALECT, write=ENGINE_DIALECTS[engine])[0]


def parse_reference(text: str, path, line: int, known_models: set[str]) -> Reference:
    """``ref('m')`` or ``source('group', 'asset')`` -> the asset it names."""
    call = CALL.match(text)
    if not call or call.group(1) not in {"ref", "source"}:
        raise ModelError(
            path,
            line,
            f"unsupported template expression '{{{{{text.strip()}}}}}': "
            "only ref('model') and source('group', 'asset') are known",
        )
    kind, raw_args = call.groups()
    try:
        args = ast.literal_eval(f"({raw_args},)") if raw_args.strip() else ()
    except (SyntaxError, ValueError):
        raise ModelError(path, line, f"{kind}() takes quoted names, got ({raw_args})") from None
    if not all(isinstance(a, str) and a for a in args):
        raise ModelError(path, line, f"{kind}() takes quoted names, got ({raw_args})")
    if kind == "ref":
        if len(args) != 1:
            raise ModelError(path, line, "ref() takes one model name")
        if args[0] not in known_models:
            raise ModelError(path, line, f"ref('{args[0]}'): no model is named '{args[0]}'")
        return Reference("ref", model_key(args[0]), line)
    if len(args) != 2:
        raise ModelError(
            path, line, "source() takes a group and an asset: source('claims', 'events')"
        )
    return Reference("source", dg.AssetKey(list(args)), line)


def render(source: ModelSource, known_models: set[str]) -> tuple[str, list[Reference]]:
    """Replace template calls by table names, keeping every line where it was."""
    references: list[Reference] = []

    def replace(match: re.Match) -> str:
        line = source.sql.count("\n", 0, match.start()) + 1
        reference = parse_reference(match.group(1), source.sql_path, line, known_models)
        references.append(reference)
        return reference.table + "\n" * match.group(0).count("\n")

    rendered = TEMPLATE.sub(replace, source.sql)
    leftover = re.search(r"\{\{|\{%|\}\}|%\}", rendered)
    if leftover:
        line = rendered.count("\n", 0, leftover.start()) + 1
        raise ModelError(source.sql_path, line, "unbalanced or unsupported template tag")
    return rendered, references


def _parse(source: ModelSource, rendered: str) -> exp.Query:
    try:
        statements = [s for s in sqlglot.parse(rendered, read=AUTHOR_DIALECT) if s is not None]
    except ParseError as error:
        detail = error.errors[0] if error.errors else {}
        message = detail.get("description") or str(error).splitlines()[0]
        raise ModelError(source.sql_path, detail.get("line"), f"SQL syntax: {message}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise ModelError(source.sql_path, None, "a model is exactly one SELECT statement")
    return statements[0]


def _line_of_name(text: str, name: str) -> int | None:
    match = re.search(rf"\b{re.escape(name)}\b", text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _check_tables(source: ModelSource, query: exp.Query, references: list[Reference]) -> None:
    allowed = {r.table for r in references}
    ctes = {cte.alias_or_name for cte in query.find_all(exp.CTE)}
    for table in query.find_all(exp.Table):
        if table.name and table.name not in allowed and table.name not in ctes:
            raise ModelError(
                source.sql_path,
                _line_of_name(source.sql, table.name),
                f"table '{table.sql()}' is not a ref() or source(); name upstream data through "
                "{{ ref('model') }} or {{ source('group', 'asset') }}",
            )


def _lineage(
    query: exp.Query, schema: MappingSchema, tables: dict[str, dg.AssetKey]
) -> tuple[tuple[str, ...], dict[str, tuple[tuple[dg.AssetKey, str], ...]]]:
    """Output columns (stars expanded where upstream columns are known) and their sources."""
    try:
        qualified = qualify(  # in place: the caller parsed this tree for us alone
            query,
            schema=schema,
            dialect=AUTHOR_DIALECT,
            validate_qualify_columns=False,
            identify=False,
        )
        nodes = lineage(
            None,
            qualified,
            schema=schema,
            dialect=AUTHOR_DIALECT,
            scope=build_scope(qualified),  # qualified once, here
            trim_selects=False,  # trimming copies every select; lineage does not need it
            copy=False,
        )
    except SqlglotError:
        return tuple(query.named_selects), {}
    result: dict[str, tuple[tuple[dg.AssetKey, str], ...]] = {}
    for column, node in nodes.items():
        deps = set()
        for leaf in node.walk():
            if leaf.downstream or not isinstance(leaf.source, exp.Table):
                continue
            key = tables.get(leaf.source.name)
            if key is not None:
                deps.add((key, leaf.name.split(".")[-1]))
        result[column] = tuple(sorted(deps, key=lambda d: (d[0].to_user_string(), d[1])))
    return tuple(qualified.named_selects), result


def _check_declared(source: ModelSource, output: Sequence[str]) -> None:
    """Every column the YAML names must be one the query returns."""
    spec, config = source.spec, source.spec.config
    named = [(c.name, f"columns: {c.name}") for c in spec.columns]
    if config.subject_column:
        named.append((config.subject_column, "config.subject_column"))
    if config.aggregate_only:
        named += [
            (c, "config.aggregate_only.count_columns") for c in config.aggregate_only.count_columns
        ]
        if any(c in output for c in PERSON_COLUMNS):
            raise ModelError(
                source.yaml_path,
                source.yaml_line,
                f"model '{source.name}' is aggregate_only but returns a person column "
                f"({', '.join(c for c in PERSON_COLUMNS if c in output)})",
            )
    if config.partitioning:
        named.append((config.partitioning.column, "config.partitioning.column"))
    for column, where in named:
        if column not in output:
            raise ModelError(
                source.yaml_path,
                source.yaml_line,
                f"model '{source.name}', {where}: the query returns no column '{column}' "
                f"(it returns {', '.join(output)})",
            )


@dataclass(frozen=True)
class Analysis:
    """What parsing one rendered model yields."""

    output_columns: tuple[str, ...]
    engine_sql: str  # in the dialect of the model's own engine
    lineage: Mapping[str, tuple[tuple[str, str], ...]]  # column -> (table, column)


def _analyse(source, text, references, schema, tables) -> Analysis:
    query = _parse(source, text)
    _check_tables(source, query, references)
    typed = MappingSchema(
        {t: dict.fromkeys(cols, PLACEHOLDER_TYPE) for t, cols in schema.items()},
        dialect=AUTHOR_DIALECT,
    )
    output, column_lineage = _lineage(query, typed, tables)
    if "*" in output or not output:
        raise ModelError(
            source.sql_path,
            _line_of_name(source.sql, "*") or None,
            "cannot tell the output columns: name them, or select * only from tables whose "
            "columns are declared",
        )
    # A second parse costs less than a deep copy of the tree the lineage qualified.
    engine_query = sqlglot.parse_one(text, read=AUTHOR_DIALECT)
    dialect = ENGINE_DIALECTS[source.spec.config.engine]
    return Analysis(
        output_columns=tuple(output),
        engine_sql=engine_query.sql(dialect=dialect, copy=False),
        lineage={
            column: tuple((table_name(key), name) for key, name in deps)
            for column, deps in column_lineage.items()
        },
    )


def compile_models(
    sources: Sequence[ModelSource],
    external_columns: Mapping[dg.AssetKey, Sequence[str] | None],
) -> list[CompiledModel]:
    """Compile every model, returned in dependency order; ``external_columns`` lists the platform's assets
    that ``source()`` may name, with their columns where known (for stars and lineage)."""
    by_name = {s.name: s for s in sources}
    rendered: dict[str, tuple[str, list[Reference]]] = {}
    for source in sources:
        text, references = render(source, set(by_name))
        for reference in references:
            if reference.kind == "source" and reference.key not in external_columns:
                raise ModelError(
                    source.sql_path,
                    reference.line,
                    f"source('{reference.key.path[0]}', '{'/'.join(reference.key.path[1:])}'): "
                    f"no platform asset {reference.key.to_user_string()}",
                )
        rendered[source.name] = (text, references)

    graph = {
        name: {r.key.path[-1] for r in refs if r.kind == "ref"}
        for name, (_, refs) in rendered.items()
    }
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        cycle = error.args[1]  # each node is a dependency of the next
        dependency, dependent = cycle[0], cycle[1]
        line = next(
            r.line
            for r in rendered[dependent][1]
            if r.kind == "ref" and r.key == model_key(dependency)
        )
        raise ModelError(
            by_name[dependent].sql_path,
            line,
            f"ref('{dependency}') closes a cycle: {' -> '.join(reversed(cycle))}",
        ) from None

    columns: dict[str, Sequence[str] | None] = {
        table_name(k): v for k, v in external_columns.items()
    }
    compiled: dict[str, CompiledModel] = {}
    for name in order:
        source = by_name[name]
        text, references = rendered[name]
        tables = {r.table: r.key for r in references}
        schema = {t: list(columns[t]) for t in sorted(tables) if columns.get(t)}
        analysis = _analyse(source, text, references, schema, tables)
        _check_declared(source, analysis.output_columns)
        columns[table_name(model_key(name))] = analysis.output_columns
        compiled[name] = CompiledModel(
            source=source,
            references=tuple(references),
            sql=text,
            output_columns=analysis.output_columns,
            engine_sql={source.spec.config.engine: analysis.engine_sql},
            column_lineage={
                column: tuple((tables[t], c) for t, c in deps)
                for column, deps in analysis.lineage.items()
            },
        )
    return [compiled[name] for name in order]
