"""The production instance profile: run and event storage in the real PostgreSQL server."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def scratch_database():
    """A database of its own, dropped afterwards, so parallel or repeated runs never collide."""
    name = f"hdh_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(f"{SERVER}/test")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{SERVER}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_demo_runs_with_run_and_event_storage_in_postgres(tmp_path, scratch_database):
    home = tmp_path / "hdh"
    env = {
        "PATH": "/usr/bin:/bin",
        "HDH_HOME": str(home),
        "HDH_DAGSTER_PROFILE": "postgres",
        "HDH_DAGSTER_PG_URL": scratch_database,
        "HDH_PSEUDONYM_KEY": "ab" * 32,
    }
    hdh = Path(sys.executable).with_name("hdh")
    result = subprocess.run(
        [str(hdh), "demo", "--json", "--people", "5", "--claims-rows", "500"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    run_ids = {r["run_id"] for r in report["runs"]}

    config = (home / "dagster" / "dagster.yaml").read_text()
    assert "postgres_url" in config
    assert not (home / "dagster" / "history").exists()  # no SQLite run storage was created

    with psycopg2.connect(scratch_database) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT run_id, status FROM runs")
        runs = dict(cursor.fetchall())
        cursor.execute(
            "SELECT DISTINCT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        )
        materialised = {json.loads(row[0])[-1] for row in cursor.fetchall()}  # ["claims", "events"]
        cursor.execute("SELECT count(*) FROM asset_check_executions")
        (check_rows,) = cursor.fetchone()
    assert run_ids <= set(runs)
    assert {runs[r] for r in run_ids} == {"SUCCESS"}
    assert {"landed_files", "events", "dicom_instances", "dicom_series"} <= materialised
    assert check_rows >= 4

    # `hdh status` reads the same PostgreSQL instance back.
    status = subprocess.run(
        [str(hdh), "status", "--json"], capture_output=True, text=True, timeout=300, env=env
    )
    assert status.returncode == 0, status.stderr[-2000:]
    assets = {a["asset"]: a for a in json.loads(status.stdout)["assets"]}
    assert assets["claims/events"]["last_materialization"]
