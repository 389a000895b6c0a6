"""YAML tests as SQL: each passes on good rows and fails, counting rows, on bad ones."""

from __future__ import annotations

import polars as pl
import pytest

from hdh_assets.products.checks import MIN_CELL_SIZE, model_checks
from hdh_assets.products.compiler import compile_models, table_name
from hdh_assets.products.engines import PolarsEngine
from hdh_assets.products.models import ModelError, discover
from tests.products.helpers import EVENT_COLUMNS, EVENTS, entry, write_models

SQL = "SELECT subject_pseudonym, care_type, amount_eur FROM {{ source('claims', 'events') }}"
TESTS = [
    {"name": "subject_pseudonym", "tests": ["not_null", "unique"]},
    {
        "name": "care_type",
        "tests": [{"accepted_values": {"values": ["pharmacy", "biology"], "severity": "warn"}}],
    },
    {
        "name": "amount_eur",
        "tests": [
            {"expression": {"expression": "amount_eur >= 0", "blocking": True}},
            {"expression": {"expression": "amount_eur < 1000"}},
        ],
    },
]
GOOD = pl.DataFrame(
    {
        "subject_pseudonym": ["a", "b", "c"],
        "care_type": ["pharmacy", "biology", "pharmacy"],
        "amount_eur": [1.0, 0.0, 5.5],
    }
)


def _failures(
    tmp_path, frame: pl.DataFrame, model_entry: dict, sql: str = SQL, extra=None
) -> dict[str, int]:
    write_models(tmp_path, {"m": (sql, model_entry)})
    (model,) = compile_models(discover(tmp_path), {EVENTS: EVENT_COLUMNS})
    checks = model_checks(model, {"m"})
    engine = PolarsEngine()
    engine.register_result(table_name(EVENTS), frame)
    for name, other in (extra or {}).items():
        engine.register_result(name, other)
    engine.register_result(table_name(model.key), engine.run(model.sql_for("polars")))
    return {c.name: engine.count(c.sql) for c in checks}, {c.name: c for c in checks}


def test_good_rows_pass_every_test(tmp_path):
    failures, checks = _failures(tmp_path, GOOD, entry("m", columns=TESTS))
    assert failures == {
        "not_null_subject_pseudonym": 0,
        "unique_subject_pseudonym": 0,
        "accepted_values_care_type": 0,
        "expression_amount_eur": 0,
        "expression_amount_eur_2": 0,
    }
    assert (
        checks["expression_amount_eur"].blocking and not checks["expression_amount_eur_2"].blocking
    )
    assert checks["accepted_values_care_type"].severity == "warn"


def test_each_test_counts_the_rows_that_break_it(tmp_path):
    bad = pl.DataFrame(
        {
            "subject_pseudonym": ["a", "a", None, "d"],
            "care_type": ["pharmacy", "nursing", "imaging", None],
            "amount_eur": [-1.0, 2000.0, 3.0, None],
        }
    )
    failures, _ = _failures(tmp_path, bad, entry("m", columns=TESTS))
    assert failures == {
        "not_null_subject_pseudonym": 1,
        "unique_subject_pseudonym": 1,  # one duplicated value
        "accepted_values_care_type": 2,  # null is not a value
        "expression_amount_eur": 1,
        "expression_amount_eur_2": 1,
    }


def test_relationships_find_orphans(tmp_path):
    columns = [
        {
            "name": "subject_pseudonym",
            "tests": [
                {
                    "relationships": {
                        "to": "source('clinical', 'patients')",
                        "field": "subject_pseudonym",
                    }
                }
            ],
        }
    ]
    patients = pl.DataFrame({"subject_pseudonym": ["a", "b"]})
    failures, checks = _failures(
        tmp_path, GOOD, entry("m", columns=columns), extra={"clinical__patients": patients}
    )
    assert failures == {"relationships_subject_pseudonym": 1}  # "c" has no patient
    assert [r.table for r in checks["relationships_subject_pseudonym"].references] == [
        "clinical__patients"
    ]


def test_an_aggregate_with_a_small_cell_fails_disclosure_control(tmp_path):
    sql = (
        "SELECT care_type, COUNT(DISTINCT subject_pseudonym) AS subjects "
        "FROM {{ source('claims', 'events') }} GROUP BY care_type"
    )
    aggregate = entry(
        "m", config={"aggregate_only": {"min_cell_size": 3, "count_columns": ["subjects"]}}
    )
    many = pl.DataFrame(
        {
            "subject_pseudonym": list("abcdef"),
            "care_type": ["pharmacy"] * 3 + ["biology"] * 3,
            "amount_eur": [1.0] * 6,
        }
    )
    failures, checks = _failures(tmp_path, many, aggregate, sql)
    assert failures == {MIN_CELL_SIZE: 0} and checks[MIN_CELL_SIZE].blocking
    few = many.with_columns(
        pl.when(pl.int_range(6) == 5)
        .then(pl.lit("nursing"))
        .otherwise("care_type")
        .alias("care_type")
    )
    failures, _ = _failures(tmp_path, few, aggregate, sql)
    assert failures == {MIN_CELL_SIZE: 2}  # biology has 2 people, nursing 1


def test_an_unknown_test_is_a_load_error(tmp_path):
    write_models(
        tmp_path, {"m": (SQL, entry("m", columns=[{"name": "care_type", "tests": ["is_pretty"]}]))}
    )
    (model,) = compile_models(discover(tmp_path), {EVENTS: EVENT_COLUMNS})
    with pytest.raises(ModelError, match="unknown test 'is_pretty'"):
        model_checks(model, {"m"})
