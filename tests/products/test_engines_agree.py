"""The same model gives the same rows on polars and on Spark (over the same lake files)."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from upath import UPath

from hdh_assets.products.assets import _model_layout, platform_layouts, register_upstreams
from hdh_assets.products.compiler import compile_models
from hdh_assets.products.engines import PolarsEngine, SparkEngine
from hdh_assets.products.models import discover
from resources.lake.tables import Lake
from tests.products.conftest import SQL_DIR
from tests.products.helpers import entry, write_models

pytestmark = pytest.mark.spark

DIALECT_ZOO = """
-- functions whose spelling differs between PostgreSQL and Spark SQL
SELECT
    subject_pseudonym,
    EXTRACT(YEAR FROM event_date) AS year,
    SUBSTRING(code, 1, 2) || '-' || LOWER(care_type) AS code_kind,
    COUNT(DISTINCT code) AS codes,
    SUM(CASE WHEN amount_eur BETWEEN 10 AND 100 THEN 1 ELSE 0 END) AS mid_amounts,
    AVG(amount_eur) AS mean_amount,
    MAX(event_date) AS last_date
FROM {{ source('claims', 'events') }}
WHERE care_type IN ('pharmacy', 'consultation')
GROUP BY subject_pseudonym, EXTRACT(YEAR FROM event_date), SUBSTRING(code, 1, 2) || '-' || LOWER(care_type)
UNION ALL
SELECT subject_pseudonym, NULL AS year, 'none' AS code_kind, 0 AS codes, 0 AS mid_amounts, 0.0 AS mean_amount, NULL AS last_date
FROM {{ source('clinical', 'patients') }}
WHERE COALESCE(gender, 'unknown') = 'unknown'
"""


def _to_polars(frame) -> pl.DataFrame:
    if isinstance(frame, pl.DataFrame):
        return frame
    return pl.from_arrow(frame.toArrow())


def _comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """Same values, whatever each engine calls their types; rows in a fixed order."""
    frame = (
        frame.with_columns(
            pl.col(c).cast(pl.Int64) for c, t in frame.schema.items() if t.is_integer()
        )
        .with_columns(
            pl.col(c).cast(pl.Float64) for c, t in frame.schema.items() if isinstance(t, pl.Decimal)
        )
        .with_columns(
            pl.col(c).dt.replace_time_zone(None)
            for c, t in frame.schema.items()
            if isinstance(t, pl.Datetime) and t.time_zone
        )
    )
    return frame.sort(frame.columns, nulls_last=True)


def test_every_example_and_a_dialect_zoo_agree_on_both_engines(product_lake, tmp_path, spark):
    from hdh_assets.definitions import SOURCE_ASSETS

    layouts = platform_layouts(SOURCE_ASSETS)
    sources = discover(SQL_DIR) + discover(
        write_models(tmp_path / "sql", {"zoo": (DIALECT_ZOO, entry("zoo"))})
    )
    models = compile_models(sources, {k: v.columns for k, v in layouts.items()})
    lake = Lake(UPath(product_lake))
    compared = []
    for model in models:
        layouts[model.key] = _model_layout(model)
        results = {}
        for engine in (PolarsEngine(), SparkEngine(spark)):
            register_upstreams(engine, lake, model.references, layouts, None, None)
            results[engine.name] = _comparable(_to_polars(engine.run(model.sql_for(engine.name))))
            if isinstance(engine, SparkEngine):
                engine.close()
        assert results["polars"].height > 0, model.name
        assert results["polars"].columns == results["spark"].columns, model.name
        # Floating-point sums run in a different order on each engine, so a value rounded with
        # ROUND(x, 2) may differ by one unit of its last place when it falls on a half.
        assert_frame_equal(
            results["polars"], results["spark"], check_dtypes=False, rel_tol=1e-9, abs_tol=0.0101
        )
        # downstream models read this one from the lake, as in a run
        table = lake.table(model.key.path)
        if model.source.spec.config.partitioning:
            column = model.source.spec.config.partitioning.column
            for (value,), part in results["polars"].partition_by(column, as_dict=True).items():
                folder = table.path / f"{column}={value}"
                folder.mkdir(parents=True)
                part.drop(column).write_parquet(str(folder / "part-00000.parquet"))
        else:
            table.path.mkdir(parents=True)
            results["polars"].write_parquet(str(table.path / "part-00000.parquet"))
        compared.append(model.name)
    assert len(compared) == 7
