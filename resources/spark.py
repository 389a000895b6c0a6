"""Spark through dagster-pyspark: ``local[*]`` by default, a standalone or Kubernetes cluster
(``HDH_SPARK_MASTER=spark://...``) or a Spark Connect server (``HDH_SPARK_REMOTE=sc://...``) when
the settings say so. The assets never know which: they ask the resource for a session.

The lake path must be storage the executors reach: a local path on one machine or in the tests
(where every executor runs on the same host), an object store URL in production.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from dagster_pyspark import PySparkResource

DEFAULT_MASTER = "local[*]"

# Settings that hold for a whole session, whichever way it is reached (Connect forwards them).
_SESSION_SQL = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}


class SparkSettingsError(ValueError):
    """Settings that cannot describe one session."""


@dataclass(frozen=True)
class SparkSettings:
    """Where Spark runs and with what, from ``HDH_SPARK_*`` variables.

    ``master`` and ``remote`` are exclusive: a classic session drives its executors itself
    (driver settings apply); a Connect session is a client of a server that owns the driver.
    """

    master: str = DEFAULT_MASTER
    remote: str | None = None
    shuffle_partitions: int = 8
    driver_memory: str = "2g"
    executor_memory: str = "2g"
    executor_cores: int | None = None  # standalone: one executor per worker takes all its cores
    cores_max: int | None = None  # standalone: the most cores one application takes
    driver_host: str | None = None  # the address executors call back (cluster modes)
    driver_bind_address: str | None = None  # what the driver listens on (0.0.0.0 in a pod)
    driver_port: int | None = None  # fixed ports, so a headless Service can name them
    block_manager_port: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SparkSettings:
        env = os.environ if env is None else env
        master, remote = env.get("HDH_SPARK_MASTER", ""), env.get("HDH_SPARK_REMOTE", "")
        if master and remote:
            raise SparkSettingsError(
                f"HDH_SPARK_MASTER ({master}) and HDH_SPARK_REMOTE ({remote}) are both set: "
                "a session runs on a master or through a Spark Connect server, not both"
            )
        return cls(
            master=master or DEFAULT_MASTER,
            remote=remote or None,
            shuffle_partitions=_int(env, "HDH_SPARK_SHUFFLE_PARTITIONS") or 8,
            driver_memory=env.get("HDH_SPARK_DRIVER_MEMORY", "2g"),
            executor_memory=env.get("HDH_SPARK_EXECUTOR_MEMORY", "2g"),
            executor_cores=_int(env, "HDH_SPARK_EXECUTOR_CORES"),
            cores_max=_int(env, "HDH_SPARK_CORES_MAX"),
            driver_host=env.get("HDH_SPARK_DRIVER_HOST") or None,
            driver_bind_address=env.get("HDH_SPARK_DRIVER_BIND_ADDRESS") or None,
            driver_port=_int(env, "HDH_SPARK_DRIVER_PORT"),
            block_manager_port=_int(env, "HDH_SPARK_BLOCK_MANAGER_PORT"),
        )

    def __post_init__(self) -> None:
        if self.remote is not None and not self.remote.startswith("sc://"):
            raise SparkSettingsError(
                f"HDH_SPARK_REMOTE must be a Spark Connect URL (sc://host:port), not {self.remote}"
            )

    @property
    def mode(self) -> str:
        """``connect``, ``local`` or the master's scheme (``spark``, ``k8s``, ``yarn``)."""
        if self.remote:
            return "connect"
        return "local" if self.master.startswith("local") else self.master.split(":", 1)[0]

    def config(self) -> dict[str, str]:
        """The ``spark_config`` of the session: classic (``spark.master``) or Connect."""
        shared = {**_SESSION_SQL, "spark.sql.shuffle.partitions": str(self.shuffle_partitions)}
        if self.remote:
            return {"spark.remote": self.remote, **shared}
        optional = {
            "spark.executor.cores": self.executor_cores,
            "spark.cores.max": self.cores_max,
            "spark.driver.host": self.driver_host,
            "spark.driver.bindAddress": self.driver_bind_address,
            "spark.driver.port": self.driver_port,
            "spark.blockManager.port": self.block_manager_port,
        }
        return {
            "spark.master": self.master,
            "spark.app.name": "hdh-platform",
            "spark.ui.enabled": "false",
            "spark.driver.memory": self.driver_memory,
            "spark.executor.memory": self.executor_memory,
            **{key: str(value) for key, value in optional.items() if value is not None},
            **shared,
        }


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise SparkSettingsError(f"{name} must be a whole number, not {value!r}") from None


def spark_config(master: str | None = None) -> dict[str, str]:
    """The platform's session settings; ``master`` overrides the configured one (tests)."""
    settings = SparkSettings.from_env()
    if master is not None:
        settings = replace(settings, master=master, remote=None)
    return settings.config()


def spark_resource() -> PySparkResource:
    return PySparkResource(spark_config=spark_config())


def active_session() -> Any:
    """The session the running asset uses, classic or Connect (never a new local one)."""
    from pyspark.sql import SparkSession

    return SparkSession.active()


def session_placement(session: Any) -> dict[str, str]:
    """Where a session's work runs, for the metadata of what it wrote: ``classic`` or
    ``connect`` and the master that ran the executors (the Connect server's, when remote)."""
    if type(session).__module__.startswith("pyspark.sql.connect"):
        return {"spark_mode": "connect", "spark_master": session.conf.get("spark.master")}
    # A later builder's options overwrite the session's runtime conf, never its context's master.
    return {"spark_mode": "classic", "spark_master": session.sparkContext.master}
