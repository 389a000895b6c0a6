"""Each SQL model becomes an asset ``products/<model>``: thin Dagster wrapping of the compiler,
the checks and the engines."""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from upath import UPath

from hdh_assets.automation import follows_upstream
from hdh_assets.products.checks import SqlCheck, model_checks
from hdh_assets.products.compiler import CompiledModel, compile_models, table_name
from hdh_assets.products.engines import Engine, PolarsEngine, SparkEngine
from hdh_assets.products.models import ModelSource, Partitioning, discover
from resources.lake.io_manager import COLUMN_SCHEMA_METADATA, partition_spec
from resources.lake.tables import Lake, PartitionSpec
from resources.spark import session_placement

GROUP = "products"
SQL_METADATA = "sql"


@dataclass(frozen=True)
class TableLayout:
    """How an upstream lies in the lake: its partitioning, and its columns where declared."""

    partitions_def: dg.PartitionsDefinition | None
    spec: PartitionSpec | None
    columns: tuple[str, ...] | None


def _value(metadata: dict, name: str):
    value = metadata.get(name)
    return getattr(value, "value", value)


def platform_layouts(assets: list[dg.AssetsDefinition]) -> dict[dg.AssetKey, TableLayout]:
    layouts = {}
    for asset in assets:
        for key, spec in asset.specs_by_key.items():
            metadata = dict(spec.metadata or {})
            schema = metadata.get(COLUMN_SCHEMA_METADATA)
            schema = getattr(schema, "schema", schema)
            partitions = asset.partitions_def
            hive = partition_spec(partitions, metadata) if partitions else None
            columns = None
            if schema is not None:
                columns = tuple(c.name for c in schema.columns) + (hive.columns if hive else ())
            layouts[key] = TableLayout(partitions, hive, columns)
    return layouts


def partitions_definition(partitioning: Partitioning | None) -> dg.PartitionsDefinition | None:
    if partitioning is None:
        return None
    if partitioning.by == "daily":
        return dg.DailyPartitionsDefinition(start_date=partitioning.start, end_offset=1)
    return dg.MonthlyPartitionsDefinition(start_date=partitioning.start, end_offset=1)


def _model_layout(model: CompiledModel) -> TableLayout:
    partitioning = model.source.spec.config.partitioning
    partitions = partitions_definition(partitioning)
    spec = PartitionSpec((partitioning.column,)) if partitioning else None
    return TableLayout(partitions, spec, model.output_columns)


def _same_partitioning(a: dg.PartitionsDefinition | None, b: dg.PartitionsDefinition | None):
    return a is not None and b is not None and a == b


def _dependency(
    upstream: TableLayout, partitions: dg.PartitionsDefinition | None, key: dg.AssetKey
) -> dg.AssetDep:
    if upstream.partitions_def is None or _same_partitioning(upstream.partitions_def, partitions):
        return dg.AssetDep(key)
    return dg.AssetDep(key, partition_mapping=dg.AllPartitionMapping())


def upstream_folders(
    lake: Lake, key: dg.AssetKey, layout: TableLayout, keys: list[str] | None
) -> list[tuple[UPath, dict[str, str]]]:
    """Folders to scan: the run's partitions for same-partitioned upstreams, else all of them."""
    table = lake.table(key.path)
    if layout.spec is None:
        return [(table.path, {})]
    present = table.partitions(layout.spec)
    parts = [(k,) for k in keys] if keys is not None else present
    return [
        (table.partition_path(layout.spec, p), dict(zip(layout.spec.columns, p, strict=True)))
        for p in parts
    ]


def _column_schema(model: CompiledModel) -> dg.TableSchema:
    documented = {c.name: c for c in model.source.spec.columns}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=name,
                type=(documented[name].data_type or "-") if name in documented else "-",
                description=documented[name].description if name in documented else None,
            )
            for name in model.output_columns
        ]
    )


def _column_lineage(model: CompiledModel) -> dg.TableColumnLineage:
    return dg.TableColumnLineage(
        deps_by_column={
            column: [dg.TableColumnDep(asset_key=key, column_name=name) for key, name in deps]
            for column, deps in model.column_lineage.items()
            if deps
        }
    )


def _definition_metadata(model: CompiledModel, root: Path) -> dict:
    config = model.source.spec.config
    metadata = {
        SQL_METADATA: dg.MetadataValue.md(f"```sql\n{model.sql_for()}\n```"),
        "engine": config.engine,
        "release": model.source.spec.release,
        "model_file": str(_relative(model.source.sql_path, root)),
        COLUMN_SCHEMA_METADATA: _column_schema(model),
        "dagster/column_lineage": _column_lineage(model),
        "upstream": dg.MetadataValue.json([k.to_user_string() for k in model.upstream_keys]),
    }
    if config.subject_column:
        metadata["subject_column"] = config.subject_column
    if config.aggregate_only:
        metadata["aggregate_only"] = True
        metadata["min_cell_size"] = config.aggregate_only.min_cell_size
    if config.partitioning:
        metadata["partition_column"] = config.partitioning.column
    return metadata


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root.parent)
    except ValueError:
        return path


def _engine(model: CompiledModel, context: dg.AssetExecutionContext) -> Engine:
    if model.engine == "spark":
        return SparkEngine(context.resources.pyspark.spark_session)
    return PolarsEngine()


def _run_check(engine: Engine, check: SqlCheck, key: dg.AssetKey) -> dg.AssetCheckResult:
    failures = engine.count(check.sql)
    return dg.AssetCheckResult(
        check_name=check.name,
        asset_key=key,
        passed=failures == 0,
        severity=dg.AssetCheckSeverity.WARN
        if check.severity == "warn"
        else dg.AssetCheckSeverity.ERROR,
        metadata={"failing_rows": dg.MetadataValue.int(failures), "test": check.description},
    )


@dataclass(frozen=True)
class ModelSet:
    """Models sharing an engine and a partitioning: one subsettable multi-asset, as dagster-dbt
    does for a dbt project. One op per set keeps loading fast with hundreds of models; any
    selection of models runs in dependency order inside it."""

    engine: str
    partitioning: Partitioning | None

    @property
    def op_name(self) -> str:
        if self.partitioning is None:
            return f"sql_models_{self.engine}"
        p = self.partitioning
        return f"sql_models_{self.engine}_{p.by}_{p.column}_{p.start.replace('-', '_')}"


def automation_condition(partitioning: Partitioning | None) -> dg.AutomationCondition:
    """Eager: a product follows its upstreams. For a partitioned product, any month whose
    upstream month changed, not only the latest one, so a corrected month of claims is
    re-computed downstream alone. An unpartitioned product reading every partition of an
    upstream is not held back by partitions never built."""
    if partitioning is None:
        return follows_upstream()
    eager = dg.AutomationCondition.eager()
    return eager.without(dg.AutomationCondition.in_latest_time_window())


def _out(model: CompiledModel, root: Path) -> dg.AssetOut:
    spec = model.source.spec
    return dg.AssetOut(
        key=model.key,
        group_name=GROUP,
        description=spec.description,
        owners=[spec.owner],
        tags={tag: "" for tag in spec.tags},
        kinds={model.engine, "sql", "parquet"},
        code_version=model.code_version,
        metadata=_definition_metadata(model, root),
        automation_condition=automation_condition(model.source.spec.config.partitioning),
        is_required=False,  # any subset of the models can run
    )


def register_upstreams(engine: Engine, lake: Lake, references, layouts, partitions, keys):
    for reference in {r.key: r for r in references}.values():
        layout = layouts[reference.key]
        restrict = keys if _same_partitioning(layout.partitions_def, partitions) else None
        engine.register_lake(
            reference.table,
            lake.table(reference.key.path),
            upstream_folders(lake, reference.key, layout, restrict),
        )


def model_set_asset(
    model_set: ModelSet,
    models: list[CompiledModel],
    checks: dict[str, list[SqlCheck]],
    layouts: dict[dg.AssetKey, TableLayout],
    root: Path,
) -> dg.AssetsDefinition:
    """``models`` in dependency order."""
    partitions = partitions_definition(model_set.partitioning)
    resources = {"hdh_home"} | ({"pyspark"} if model_set.engine == "spark" else set())

    @dg.multi_asset(
        name=model_set.op_name,
        outs={m.key.to_python_identifier(): _out(m, root) for m in models},
        deps=[
            _dependency(layouts[k], partitions, k)
            for k in sorted(
                {k for m in models for k in m.upstream_keys} - {m.key for m in models},
                key=lambda k: k.to_user_string(),
            )
        ],
        internal_asset_deps={m.key.to_python_identifier(): set(m.upstream_keys) for m in models},
        check_specs=[c.spec(m.key) for m in models for c in checks[m.name]],
        can_subset=True,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run() if partitions else None,
        required_resource_keys=resources,
    )
    def _models(context: dg.AssetExecutionContext):
        lake = Lake(UPath(context.resources.hdh_home.home.lake))
        lake.recover()
        keys = list(context.partition_keys) if partitions else None
        selected = context.selected_asset_keys
        blocked: dict[dg.AssetKey, str] = {}
        for model in models:
            if model.key not in selected:
                continue
            stop = next((k for k in model.upstream_keys if k in blocked), None)
            if stop is not None:
                blocked[model.key] = blocked[stop]
                context.log.error(
                    f"{model.key.to_user_string()} not run: upstream {blocked[stop]} failed"
                )
                continue
            failure = yield from _materialise(
                context, model, checks[model.name], layouts, partitions, lake, keys
            )
            if failure:
                blocked[model.key] = f"{model.key.to_user_string()} ({failure})"
        if blocked:
            raise dg.Failure(
                description="SQL models failed or were blocked: "
                + "; ".join(f"{k.to_user_string()} <- {why}" for k, why in blocked.items()),
            )

    return _models


def _materialise(context, model, checks, layouts, partitions, lake, keys):
    """Run one model and its checks; return why it blocks its downstream models, if it does."""
    engine = _engine(model, context)
    try:
        register_upstreams(engine, lake, model.references, layouts, partitions, keys)
        result = engine.run(model.sql_for(engine.name))
        engine.register_result(table_name(model.key), result)
        for check in checks:
            register_upstreams(engine, lake, check.references, layouts, None, None)
        results = [(check, _run_check(engine, check, model.key)) for check in checks]
        rows = engine.rows(result)
        context.log.info(
            f"{model.key.to_user_string()}: {rows} rows on {engine.name}"
            + (f" for {keys[0]}..{keys[-1]}" if keys else "")
        )
        yield dg.Output(
            result,
            output_name=model.key.to_python_identifier(),
            metadata={
                "engine": engine.name,
                "rows_computed": rows,
                **(session_placement(engine.spark) if isinstance(engine, SparkEngine) else {}),
            },
        )
        for _, check_result in results:
            yield check_result
    except Exception as error:  # one model's failure must not hide the others' results
        context.log.error(f"{model.key.to_user_string()} failed: {type(error).__name__}: {error}")
        return f"{type(error).__name__}"
    finally:
        if isinstance(engine, SparkEngine):
            engine.close()
    failed_blocking = [c.name for c, r in results if c.blocking and not r.passed]
    return f"blocking checks failed: {', '.join(failed_blocking)}" if failed_blocking else None


def load_products(
    sql_dir: Path, platform_assets: list[dg.AssetsDefinition]
) -> list[dg.AssetsDefinition]:
    """Every model of ``sql_dir`` as an asset; any error names the file and line."""
    sources: list[ModelSource] = discover(sql_dir)
    if not sources:
        return []
    layouts = platform_layouts(platform_assets)
    compiled = compile_models(sources, {k: v.columns for k, v in layouts.items()})
    names = {m.name for m in compiled}
    for model in compiled:
        layouts[model.key] = _model_layout(model)
    checks = {m.name: model_checks(m, names) for m in compiled}
    sets: dict[ModelSet, list[CompiledModel]] = {}
    for model in compiled:  # dependency order is kept within each set
        config = model.source.spec.config
        sets.setdefault(ModelSet(model.engine, config.partitioning), []).append(model)
    return [model_set_asset(s, models, checks, layouts, sql_dir) for s, models in sets.items()]
