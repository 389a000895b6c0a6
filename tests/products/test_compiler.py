"""Loading models: what a data referent gets wrong is reported with the file and the line."""

from __future__ import annotations

import dagster as dg
import pytest

from hdh_assets.products.compiler import compile_models, transpile
from hdh_assets.products.models import ModelError, discover
from tests.products.conftest import SQL_DIR
from tests.products.helpers import EVENT_COLUMNS, EVENTS, entry, write_models

PER_SUBJECT = (
    "SELECT subject_pseudonym, COUNT(*) AS events\n"
    "FROM {{ source('claims', 'events') }}\nGROUP BY subject_pseudonym\n"
)


def compile_dir(root):
    return compile_models(discover(root), {EVENTS: EVENT_COLUMNS})


def test_examples_compile_with_dependencies_and_column_lineage():
    from hdh_assets.definitions import SOURCE_ASSETS
    from hdh_assets.products.assets import platform_layouts

    layouts = platform_layouts(SOURCE_ASSETS)
    models = {
        m.name: m
        for m in compile_models(discover(SQL_DIR), {k: v.columns for k, v in layouts.items()})
    }
    assert {
        "studies_per_modality_month",
        "diabetes_patients",
        "hba1c_trajectory",
        "care_consumption_per_subject_month",
        "chronic_medication_cohort",
        "care_consumption_per_month",
    } <= set(models)
    trajectory = models["hba1c_trajectory"]
    assert [k.to_user_string() for k in trajectory.upstream_keys] == [
        "clinical/observations",
        "products/diabetes_patients",
    ]
    assert trajectory.column_lineage["hba1c_percent"] == (
        (dg.AssetKey(["clinical", "observations"]), "value_quantity"),
    )
    monthly = models["care_consumption_per_month"]
    assert monthly.upstream_keys == [
        dg.AssetKey(["products", "care_consumption_per_subject_month"])
    ]
    assert monthly.sql_for("spark").startswith("/* Care consumption")  # comments are kept


def test_unknown_ref_names_file_and_line(tmp_path):
    sql = "SELECT subject_pseudonym\n\nFROM {{ ref('nowhere') }}\n"
    write_models(tmp_path, {"a": (sql, entry("a"))})
    with pytest.raises(ModelError) as error:
        compile_dir(tmp_path)
    assert error.value.path.name == "a.sql" and error.value.line == 3
    assert "nowhere" in str(error.value) and str(error.value).startswith(
        str(tmp_path / "test" / "a.sql") + ":3"
    )


def test_a_cycle_names_the_ref_that_closes_it(tmp_path):
    write_models(
        tmp_path,
        {
            "a": ("SELECT subject_pseudonym FROM {{ ref('b') }}", entry("a")),
            "b": ("SELECT subject_pseudonym\nFROM {{ ref('c') }}", entry("b")),
            "c": ("SELECT subject_pseudonym\n\nFROM {{ ref('a') }}", entry("c")),
        },
    )
    with pytest.raises(ModelError) as error:
        compile_dir(tmp_path)
    message = str(error.value)
    assert "cycle" in message and error.value.line is not None
    assert error.value.path.suffix == ".sql"
    named = error.value.path.stem
    assert {"a", "b", "c"} <= set(message.replace("'", " ").replace(">", " ").split())
    assert named in {"a", "b", "c"}


def test_unknown_source_and_raw_table_names_are_refused(tmp_path):
    write_models(tmp_path, {"a": ("SELECT x\nFROM {{ source('claims', 'nope') }}", entry("a"))})
    with pytest.raises(ModelError, match=r"a\.sql:2: source\('claims', 'nope'\)"):
        compile_dir(tmp_path)
    write_models(tmp_path, {"a": ("SELECT subject_pseudonym\nFROM claims_events_raw", entry("a"))})
    with pytest.raises(ModelError, match=r"a\.sql:2: table 'claims_events_raw' is not a ref"):
        compile_dir(tmp_path)


def test_syntax_errors_and_unknown_template_calls_name_the_line(tmp_path):
    write_models(
        tmp_path,
        {"a": ("SELECT subject_pseudonym,\nFROM (\n{{ source('claims', 'events') }}", entry("a"))},
    )
    with pytest.raises(ModelError, match=r"a\.sql:\d+: SQL syntax"):
        compile_dir(tmp_path)
    write_models(tmp_path, {"a": ("SELECT 1 AS subject_pseudonym\n{{ config(x=1) }}", entry("a"))})
    with pytest.raises(ModelError, match=r"a\.sql:2: unsupported template expression"):
        compile_dir(tmp_path)


def test_yaml_mistakes_name_the_yaml_line(tmp_path):
    bad = entry("a", config={"engine": "duckdb", "subject_column": "subject_pseudonym"})
    write_models(tmp_path, {"a": (PER_SUBJECT, bad)})
    with pytest.raises(ModelError) as error:
        discover(tmp_path)
    assert error.value.path.name == "_models.yml" and error.value.line > 1
    assert "config.engine" in str(error.value)
    both = entry(
        "a",
        config={
            "subject_column": "s",
            "aggregate_only": {"min_cell_size": 5, "count_columns": ["n"]},
        },
    )
    write_models(tmp_path, {"a": (PER_SUBJECT, both)})
    with pytest.raises(ModelError, match="exactly one of subject_column"):
        discover(tmp_path)
    (tmp_path / "test" / "orphan.sql").write_text(PER_SUBJECT)
    write_models(tmp_path, {"a": (PER_SUBJECT, entry("a"))})
    with pytest.raises(ModelError, match="no YAML entry describes model 'orphan'"):
        discover(tmp_path)


def test_declared_columns_must_exist_and_aggregates_hold_no_person(tmp_path):
    documented = entry("a", columns=[{"name": "evnts", "tests": ["not_null"]}])
    write_models(tmp_path, {"a": (PER_SUBJECT, documented)})
    with pytest.raises(ModelError, match="returns no column 'evnts'"):
        compile_dir(tmp_path)
    aggregate = entry(
        "a", config={"aggregate_only": {"min_cell_size": 5, "count_columns": ["events"]}}
    )
    write_models(tmp_path, {"a": (PER_SUBJECT, aggregate)})
    with pytest.raises(ModelError, match="aggregate_only but returns a person column"):
        compile_dir(tmp_path)


def test_code_version_follows_the_compiled_sql(tmp_path):
    write_models(tmp_path, {"a": (PER_SUBJECT, entry("a"))})
    first = compile_dir(tmp_path)[0].code_version
    write_models(tmp_path, {"a": (PER_SUBJECT.replace("SELECT", "select  "), entry("a"))})
    assert compile_dir(tmp_path)[0].code_version == first  # same query, other spelling
    write_models(tmp_path, {"a": (PER_SUBJECT.replace("COUNT(*)", "COUNT(code)"), entry("a"))})
    assert compile_dir(tmp_path)[0].code_version != first


def test_each_engine_gets_its_dialect():
    sql = "SELECT CAST(a AS TEXT) AS a, b::DOUBLE PRECISION AS b FROM t WHERE c ILIKE 'x%'"
    spark = transpile(sql, "spark")
    assert "CAST(a AS STRING)" in spark and "CAST(b AS DOUBLE)" in spark and "ILIKE" in spark
    assert "CAST(a AS TEXT)" in transpile(sql, "polars")


def test_star_over_a_source_is_expanded_for_lineage(tmp_path):
    write_models(tmp_path, {"a": ("SELECT * FROM {{ source('claims', 'events') }}", entry("a"))})
    (model,) = compile_dir(tmp_path)
    assert list(model.output_columns) == EVENT_COLUMNS
    assert model.column_lineage["amount_eur"] == ((EVENTS, "amount_eur"),)
