"""Spark through dagster-pyspark: ``local[*]`` by default, a cluster when ``HDH_SPARK_MASTER`` says so."""

from __future__ import annotations

import os

from dagster_pyspark import PySparkResource

DEFAULT_MASTER = "local[*]"


def spark_config(master: str | None = None) -> dict[str, str]:
    """Settings shared by the platform and the tests; the master is the only thing to change."""
    return {
        "spark.master": master or os.environ.get("HDH_SPARK_MASTER", DEFAULT_MASTER),
        "spark.app.name": "hdh-platform",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": os.environ.get("HDH_SPARK_SHUFFLE_PARTITIONS", "8"),
        "spark.ui.enabled": "false",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.driver.memory": os.environ.get("HDH_SPARK_DRIVER_MEMORY", "2g"),
    }


def spark_resource() -> PySparkResource:
    return PySparkResource(spark_config=spark_config())
