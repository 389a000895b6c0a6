"""Shared fixtures: an isolated HDH_HOME per test, one Spark cluster and session per test run, one
sample."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from package_manager.processes import make_stoppable
from resources.home import HdhHome
from synthetic.sample import SampleConfig, generate_sample

pytest_plugins = ["tests.no_silent_skip", "pytester"]

# A suite started in the background ignores SIGINT, and the first in-process Dagster run would
# make it ignore SIGTERM too, and every server it starts after that (stops would wait for SIGKILL).
make_stoppable()

TEST_KEY = "5ad1c0ffee" * 7  # 35 bytes of hex; tests never use the demo key


@pytest.fixture
def hdh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HdhHome:
    """A fresh platform home with its own Dagster instance folder and a test key."""
    home = HdhHome(tmp_path / "hdh").ensure()
    monkeypatch.setenv("HDH_HOME", str(home.root))
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))
    monkeypatch.setenv("HDH_PSEUDONYM_KEY", TEST_KEY)
    return home


@pytest.fixture(scope="session")
def sample_config() -> SampleConfig:
    return SampleConfig(seed=7, people=24, claims_rows=20_000, claims_chunk_rows=8_000)


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory, sample_config: SampleConfig) -> Path:
    """One generated sample for the whole run (read-only for tests)."""
    root = tmp_path_factory.mktemp("sample")
    generate_sample(root / "landing", root / "sample", sample_config)
    return root


@pytest.fixture(scope="session")
def identities(sample_root: Path) -> list[dict]:
    return json.loads((sample_root / "sample" / "identities.json").read_text())["people"]


def identity_needles(people: list[dict]) -> set[str]:
    """Strings that must never appear outside the landing zone: the raw identifiers."""
    needles: set[str] = set()
    for person in people:
        needles.add(person["nir"])
        needles.add(person["nir"][:13])
        needles.add(person["hospital_patient_id"])
        needles.add(person["email"])
        needles.add(person["birth_date"].replace("-", ""))
        needles.add(person["birth_date"])  # exact birth date, ISO (FHIR)
        needles.add(person["address_line"])
        needles.add(person["phone"])
        needles.add(f"{person['family_name'].upper()}^")
        if len(person["family_name"]) >= 6:  # short names collide with ordinary words
            needles.add(person["family_name"])
    return needles


# Both applications of the test run (the classic session and the Connect server) fit at once.
CLUSTER_WORKERS, CORES_PER_WORKER, CORES_PER_APPLICATION = 2, 2, "2"
APPLICATION = {
    "spark.executor.cores": "1",
    "spark.cores.max": CORES_PER_APPLICATION,
    "spark.executor.memory": "1g",
}


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A Spark standalone master and two workers from the installed pyspark, on loopback, for the
    whole run; stopped by their process ids."""
    from hdh_cli.spark_cluster import LocalSparkCluster

    with LocalSparkCluster(
        tmp_path_factory.mktemp("spark-cluster"),
        workers=CLUSTER_WORKERS,
        cores_per_worker=CORES_PER_WORKER,
        memory_per_worker="3g",
    ) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def spark(spark_cluster):
    """The one Spark session of the test run, a driver of the standalone cluster (startup takes
    ~15 s here): executors on the workers read and write the same lake paths."""
    from pyspark.sql import SparkSession

    from resources.spark import spark_config

    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
    builder = SparkSession.builder
    settings = {**spark_config(spark_cluster.master_url), **APPLICATION}
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_connect_url(spark_cluster) -> str:
    """A Spark Connect server whose driver runs on the same cluster."""
    return spark_cluster.start_connect_server(**APPLICATION)
