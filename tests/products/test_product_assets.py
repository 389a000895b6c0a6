"""SQL models as Dagster assets: runs, checks that fail when they should, partitions, automation."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from hdh_assets.definitions import SOURCE_ASSETS, build_resources
from hdh_assets.products.assets import load_products
from tests.products.conftest import SQL_DIR
from tests.products.helpers import entry, write_models

EVENTS = dg.AssetKey(["claims", "events"])
MONTHLY = dg.AssetKey(["products", "care_consumption_per_subject_month"])


def _materialize(home, instance, products, selection, **kwargs):
    return dg.materialize(
        [*SOURCE_ASSETS, *products],
        selection=dg.AssetSelection.from_string(selection),
        resources=build_resources(home),
        instance=instance,
        raise_on_error=False,
        **kwargs,
    )


def test_example_products_run_with_their_checks_and_metadata(hdh_home, product_lake):
    products = load_products(SQL_DIR, SOURCE_ASSETS)
    with dg.instance_for_test() as instance:
        result = _materialize(
            hdh_home,
            instance,
            products,
            'key:"products/diabetes_patients" or key:"products/hba1c_trajectory" '
            'or key:"products/studies_per_modality_month"',
        )
        assert result.success
        materialized = {e.asset_key.path[-1]: e for e in result.get_asset_materialization_events()}
        assert set(materialized) == {
            "diabetes_patients",
            "hba1c_trajectory",
            "studies_per_modality_month",
        }
        evaluations = result.get_asset_check_evaluations()
        assert len(evaluations) == 14 and all(e.passed for e in evaluations)
        patients = pl.read_parquet(product_lake / "products" / "diabetes_patients")
        conditions = pl.read_parquet(product_lake / "clinical" / "conditions" / "*" / "*.parquet")
        diabetic = conditions.filter(pl.col("code").is_in(["44054006", "E11.9"]))
        assert set(patients["subject_pseudonym"]) == set(diabetic["subject_pseudonym"])
        trajectory = pl.read_parquet(product_lake / "products" / "hba1c_trajectory")
        assert trajectory["subject_pseudonym"].is_in(patients["subject_pseudonym"].implode()).all()
        metadata = materialized["hba1c_trajectory"].event_specific_data.materialization.metadata
        assert metadata["dagster/row_count"].value == trajectory.height
        assert metadata["engine"].value == "polars"
    spec = {s.key: s for a in products for s in a.specs}[
        dg.AssetKey(["products", "hba1c_trajectory"])
    ]
    lineage = spec.metadata["dagster/column_lineage"]
    assert [d.asset_key for d in lineage.deps_by_column["hba1c_percent"]] == [
        dg.AssetKey(["clinical", "observations"])
    ]
    assert spec.code_version and spec.owners == ["team:data-referents"]
    assert "products/diabetes_patients" in spec.metadata["upstream"].value


def test_failing_checks_fail_the_run_and_stop_only_what_depends_on_them(
    hdh_home, product_lake, tmp_path
):
    unsafe = (
        "SELECT care_type, COUNT(DISTINCT subject_pseudonym) AS subjects\n"
        "FROM {{ source('claims', 'events') }} WHERE subject_pseudonym < '1' GROUP BY care_type"
    )
    models = {
        "rare_care": (
            unsafe,
            entry(
                "rare_care",
                config={"aggregate_only": {"min_cell_size": 5, "count_columns": ["subjects"]}},
            ),
        ),
        "built_on_rare_care": (
            "SELECT care_type, subjects FROM {{ ref('rare_care') }}",
            entry(
                "built_on_rare_care",
                config={"aggregate_only": {"min_cell_size": 5, "count_columns": ["subjects"]}},
            ),
        ),
        "independent": (
            "SELECT subject_pseudonym, COUNT(*) AS n FROM {{ source('claims', 'events') }} GROUP BY 1",
            entry(
                "independent",
                columns=[
                    {
                        "name": "n",
                        "tests": [{"expression": {"expression": "n > 1000", "severity": "warn"}}],
                    }
                ],
            ),
        ),
    }
    products = load_products(write_models(tmp_path / "sql", models), SOURCE_ASSETS)
    with dg.instance_for_test() as instance:
        result = _materialize(
            hdh_home, instance, products, " or ".join(f'key:"products/{m}"' for m in models)
        )
    assert not result.success
    done = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert done == {"rare_care", "independent"}  # the blocked one never ran
    checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    disclosure = checks[("rare_care", "min_cell_size")]
    assert not disclosure.passed and disclosure.metadata["failing_rows"].value > 0
    warned = checks[("independent", "expression_n")]
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN


@pytest.mark.spark
def test_a_month_range_backfills_in_one_spark_run_and_a_changed_month_alone_follows(
    hdh_home, product_lake, spark, spark_cluster
):
    products = load_products(SQL_DIR, SOURCE_ASSETS)
    months = ["2023-02-01", "2023-03-01", "2023-04-01"]
    with dg.instance_for_test() as instance:
        for month in months:  # the lake holds these months of claims/events already
            instance.report_runless_asset_event(dg.AssetMaterialization(EVENTS, partition=month))
        result = _materialize(
            hdh_home,
            instance,
            products,
            f'key:"{MONTHLY.to_user_string()}"',
            tags={
                ASSET_PARTITION_RANGE_START_TAG: months[0],
                ASSET_PARTITION_RANGE_END_TAG: months[-1],
            },
        )
        assert result.success
        runs = instance.get_runs()
        assert len(runs) == 1
        assert instance.get_materialized_partitions(MONTHLY) == set(months)
        for event in result.get_asset_materialization_events():  # on the cluster's executors
            metadata = event.event_specific_data.materialization.metadata
            assert metadata["spark_mode"].value == "classic"
            assert metadata["spark_master"].value == spark_cluster.master_url
        written = pl.scan_parquet(
            str(product_lake / "products" / MONTHLY.path[-1] / "**" / "*.parquet"),
            hive_partitioning=True,
        ).collect()
        events = (
            pl.scan_parquet(
                str(product_lake / "claims" / "events" / "**" / "*.parquet"), hive_partitioning=True
            )
            .filter(pl.col("month").cast(pl.String).is_in(months))
            .collect()
        )
        assert written["events"].sum() == events.height
        assert (
            written.select(pl.col("month").cast(pl.String).unique().sort()).to_series().to_list()
            == months
        )

        defs = dg.Definitions(
            assets=[*SOURCE_ASSETS, *products], resources=build_resources(hdh_home)
        )
        selection = dg.AssetSelection.assets(MONTHLY)
        first = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=selection
        )
        assert first.total_requested == 0  # nothing changed since the backfill
        instance.report_runless_asset_event(dg.AssetMaterialization(EVENTS, partition=months[1]))
        second = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=selection, cursor=first.cursor
        )
        assert second.get_requested_partitions(MONTHLY) == {months[1]}


def test_partitioned_products_follow_any_changed_month_not_only_the_latest():
    from hdh_assets.products.assets import automation_condition
    from hdh_assets.products.models import Partitioning

    assert "in_latest_time_window" not in str(automation_condition(Partitioning()))
    from hdh_assets.automation import follows_upstream

    # an unpartitioned product reads every month: months never built do not hold it back
    assert automation_condition(None) == follows_upstream()
    assert "every upstream built" in str(automation_condition(None))
    assert dt.date.fromisoformat(Partitioning().start) == dt.date(2021, 1, 1)
