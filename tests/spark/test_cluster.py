"""Spark beyond one process: the test run's session drives a standalone cluster (a master and two
workers started from the installed pyspark), and a Spark product materialises through a Spark
Connect server on the same cluster, with the same rows as the classic session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from hdh_cli.spark_cluster import ClusterStartError, LocalSparkCluster
from resources.spark import SparkSettings, SparkSettingsError, session_placement
from tests.products.conftest import write_lake

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = "products/care_consumption_per_subject_month"
MONTHS = ["2023-02-01", "2023-03-01", "2023-04-01"]


def test_the_session_of_the_test_run_executes_on_the_workers(spark, spark_cluster):
    assert spark.sparkContext.master == spark_cluster.master_url
    assert len(spark_cluster.alive_workers()) == 2
    assert session_placement(spark) == {
        "spark_mode": "classic",
        "spark_master": spark_cluster.master_url,
    }
    running = [app for app in spark_cluster.applications() if app["name"] == "hdh-platform"]
    assert len(running) == 1 and running[0]["cores"] >= 1

    def ancestry(_rows):  # runs in the Python worker of an executor
        import os

        import psutil

        yield os.getpid(), tuple(parent.pid for parent in psutil.Process().parents())

    tasks = spark.range(0, 400, numPartitions=8).rdd.mapPartitions(ancestry).collect()
    daemons = {spark_cluster.pids()["worker-0"], spark_cluster.pids()["worker-1"]}
    # Every task ran in a Python worker under an executor under one of the worker daemons.
    assert len(tasks) == 8 and all(set(parents) & daemons for _, parents in tasks)
    assert os.getpid() not in {pid for pid, _ in tasks}


def test_settings_choose_a_master_or_a_connect_server_never_both():
    classic = SparkSettings.from_env(
        {"HDH_SPARK_MASTER": "spark://10.0.0.5:7077", "HDH_SPARK_EXECUTOR_CORES": "4"}
    )
    assert classic.mode == "spark"
    config = classic.config()
    assert config["spark.master"] == "spark://10.0.0.5:7077"
    assert config["spark.executor.cores"] == "4" and "spark.remote" not in config
    assert "spark.driver.host" not in config  # unset settings stay Spark's defaults

    remote = SparkSettings.from_env({"HDH_SPARK_REMOTE": "sc://spark-connect:15002"})
    assert remote.mode == "connect"
    assert remote.config()["spark.remote"] == "sc://spark-connect:15002"
    assert "spark.master" not in remote.config() and "spark.driver.memory" not in remote.config()
    assert SparkSettings.from_env({}).config()["spark.master"] == "local[*]"

    with pytest.raises(SparkSettingsError, match=r"HDH_SPARK_MASTER .* and HDH_SPARK_REMOTE"):
        SparkSettings.from_env({"HDH_SPARK_MASTER": "local[2]", "HDH_SPARK_REMOTE": "sc://x:1"})
    with pytest.raises(SparkSettingsError, match="Spark Connect URL"):
        SparkSettings.from_env({"HDH_SPARK_REMOTE": "spark://x:7077"})
    with pytest.raises(SparkSettingsError, match="HDH_SPARK_EXECUTOR_CORES must be a whole"):
        SparkSettings.from_env({"HDH_SPARK_EXECUTOR_CORES": "two"})


def test_a_worker_that_cannot_start_is_reported_with_its_log(tmp_path):
    cluster = LocalSparkCluster(tmp_path, workers=1, memory_per_worker="lots", start_timeout=60)
    with pytest.raises(ClusterStartError) as raised:
        cluster.start()
    assert "worker-0" in str(raised.value) or "workers" in str(raised.value)
    assert cluster.pids() == {}  # what had started was stopped


def _materialise(env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "hdh_cli.main",
        "materialize",
        f'key:"{PRODUCT}"',
        *("--from", MONTHS[0], "--to", MONTHS[-1]),
        "--json",
    ]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def _metadata_by_partition(home) -> dict[str, dict]:
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey(PRODUCT.split("/")), limit=10)
        return {
            record.asset_materialization.partition: {
                key: value.value for key, value in record.asset_materialization.metadata.items()
            }
            for record in records.records
        }


@pytest.mark.slow
def test_a_spark_product_materialises_through_spark_connect_on_the_cluster(
    hdh_home, spark, spark_cluster, spark_connect_url
):
    write_lake(hdh_home.lake)
    product_lake = hdh_home.lake
    env = {
        **os.environ,
        "HDH_SPARK_REMOTE": spark_connect_url,
        "PYSPARK_PYTHON": sys.executable,
    }
    env.pop("HDH_SPARK_MASTER", None)
    done = _materialise(env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outcome = json.loads(done.stdout[done.stdout.index("{") :])
    assert outcome["success"] and outcome["materializations"] == 3

    metadata = _metadata_by_partition(hdh_home)
    assert sorted(metadata) == MONTHS
    for month in MONTHS:
        assert metadata[month]["engine"] == "spark"
        assert metadata[month]["spark_mode"] == "connect"
        assert metadata[month]["spark_master"] == spark_cluster.master_url
    connect_apps = [a for a in spark_cluster.applications() if a["name"] == "hdh-spark-connect"]
    assert len(connect_apps) == 1

    written = pl.read_parquet(
        hdh_home.lake / "products" / PRODUCT.split("/")[-1] / "**" / "*.parquet",
        hive_partitioning=True,
    ).with_columns(pl.col("month").cast(pl.String))
    assert sorted(written["month"].unique()) == MONTHS

    # The classic session over the same lake files gives the same rows.
    events = spark.read.option("basePath", str(product_lake / "claims" / "events")).parquet(
        *[str(product_lake / "claims" / "events" / f"month={m}") for m in MONTHS]
    )
    events.createOrReplaceTempView("events_for_connect_test")
    expected = pl.from_arrow(
        spark.sql(
            "SELECT CAST(month AS STRING) AS month, subject_pseudonym, COUNT(*) AS events "
            "FROM events_for_connect_test GROUP BY 1, 2"
        ).toArrow()
    )
    spark.catalog.dropTempView("events_for_connect_test")
    assert_frame_equal(
        written.select("month", "subject_pseudonym", pl.col("events").cast(pl.Int64)).sort(
            "month", "subject_pseudonym"
        ),
        expected.with_columns(pl.col("events").cast(pl.Int64)).sort("month", "subject_pseudonym"),
    )


@pytest.mark.slow
def test_hdh_spark_cluster_serves_until_interrupted_and_leaves_nothing_running(tmp_path):
    import psutil

    from tests.processes import stop_group

    work = tmp_path / "cluster"
    command = [sys.executable, "-m", "hdh_cli.main", "spark", "cluster", "--workers", "1"]
    process = subprocess.Popen(
        [*command, "--work-dir", str(work)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        lines = []
        for line in process.stderr:
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        master = next(line.split("=", 1)[1].strip() for line in lines if "HDH_SPARK_MASTER" in line)
        assert master.startswith("spark://127.0.0.1:")
        assert "1 workers alive" in "".join(lines)
        daemons = [p for p in psutil.Process(process.pid).children(recursive=True)]
        assert len(daemons) >= 2  # the master and the worker, Java processes of its own
    finally:
        stop_group(process)
    assert process.returncode is not None
    assert not [p for p in daemons if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_claims_events_materialise_through_spark_connect_as_on_the_classic_session(
    hdh_home, spark, spark_cluster, spark_connect_url
):
    from hdh_assets.claims.events import pseudonymise_claims
    from resources.pseudonymisation import PseudonymisationKeyResource
    from synthetic.claims import write_claims
    from synthetic.people import make_population

    batch = hdh_home.landing / "claims" / "connect-batch"
    write_claims(make_population(20, 5), 20_000, batch, seed=5, months=3)
    (batch / "_READY").touch()
    months = ["2023-01-01", "2023-02-01", "2023-03-01"]
    env = {**os.environ, "HDH_SPARK_REMOTE": spark_connect_url, "PYSPARK_PYTHON": sys.executable}
    env.pop("HDH_SPARK_MASTER", None)
    command = [sys.executable, "-m", "hdh_cli.main", "materialize", 'key:"claims/events"']
    done = subprocess.run(
        [*command, "--from", months[0], "--to", months[-1], "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    with dg.DagsterInstance.from_config(str(hdh_home.dagster_home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey(["claims", "events"]), limit=10)
        metadata = {
            r.asset_materialization.partition: r.asset_materialization.metadata
            for r in records.records
        }
    assert sorted(metadata) == months
    assert {m["spark_mode"].value for m in metadata.values()} == {"connect"}
    assert {m["spark_master"].value for m in metadata.values()} == {spark_cluster.master_url}

    written = pl.read_parquet(
        hdh_home.lake / "claims" / "events" / "**" / "*.parquet", hive_partitioning=True
    )
    # The classic session, from the same landed files and key, keeps the same events.
    key = PseudonymisationKeyResource().pseudonymiser()
    raw = spark.read.parquet(*[str(f) for f in sorted(batch.glob("*.parquet"))])
    events, _ = pseudonymise_claims(raw, key, "connect-batch")
    expected = pl.from_arrow(
        events.where(events["month"].isin(months)).select("source_event_id").toArrow()
    )
    assert written.height == expected.height > 0
    assert sorted(written["source_event_id"]) == sorted(expected["source_event_id"])
