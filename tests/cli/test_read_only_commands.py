"""Read-only commands answer from the asset catalog and the instance: they import neither Spark
nor the code location's definitions (nor pydicom, polars), which take seconds to load."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hdh_cli.catalog import (
    AssetCatalog,
    asset_catalog,
    catalog_path,
    code_fingerprint,
    save_catalog,
)
from hdh_cli.main import cli
from tests.cli.test_rights_cli import PERSON

UNLOADED = ("pyspark", "dagster_pyspark", "hdh_assets.definitions", "pydicom", "polars")

# Each command runs in this one process, then the modules it holds are listed.
RUN_THEN_LIST_MODULES = """
import json
import sys

from hdh_cli.main import cli

commands, unloaded, report = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
exit_codes = [cli.main(args, prog_name="hdh", standalone_mode=False) or 0 for args in commands]
loaded = sorted(m for m in unloaded if m in sys.modules)
with open(report, "w") as handle:
    json.dump({"exit_codes": exit_codes, "loaded": loaded}, handle)
"""


@pytest.mark.slow
def test_read_only_commands_load_neither_spark_nor_the_definitions(hdh_home, tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["status", "--json"]).exit_code == 0  # writes the catalog
    submitted = runner.invoke(cli, ["rights", "submit", "--type", "erasure", *PERSON, "--json"])
    request_id = json.loads(submitted.stdout)["id"]
    commands = [
        ["--help"],
        ["status"],
        ["status", "--json"],
        ["products", "list", "--json"],
        ["products", "releases", "--json"],
        ["rights", "list", "--json"],
        ["rights", "show", request_id, "--json"],
        ["rights", "operator", "list", "--json"],
    ]
    result = assert_loads_nothing_heavy(commands, tmp_path)
    assert "Warning" not in result.stderr, result.stderr


def test_the_catalog_is_rebuilt_when_the_code_changed(hdh_home):
    catalog = asset_catalog(hdh_home)
    assert "claims/events" in catalog.names()
    events = next(a for a in catalog.assets if a.name == "claims/events")
    assert events.partitioned and events.partitions_def().get_partition_keys()[0] == "2021-01-01"
    assert any(a.group == catalog.product_group for a in catalog.assets)
    assert AssetCatalog.from_json(json.loads(json.dumps(catalog.to_json()))) == catalog

    stale = AssetCatalog(catalog.assets[:1], catalog.product_group)
    save_catalog(hdh_home, stale, "a fingerprint of other code")
    assert asset_catalog(hdh_home) == catalog
    saved = json.loads(catalog_path(hdh_home).read_text())
    assert saved["fingerprint"] == code_fingerprint()


def test_an_unreadable_catalog_is_rebuilt(hdh_home):
    catalog_path(hdh_home).parent.mkdir(parents=True, exist_ok=True)
    catalog_path(hdh_home).write_text("{half written")
    assert "claims/events" in asset_catalog(hdh_home).names()


def assert_loads_nothing_heavy(commands: list[list[str]], folder) -> subprocess.CompletedProcess:
    """Run ``commands`` in one fresh interpreter and assert each succeeded without importing
    any module of ``UNLOADED`` (Spark, the code location's definitions)."""
    report = folder / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            RUN_THEN_LIST_MODULES,
            json.dumps(commands),
            json.dumps(UNLOADED),
            str(report),
        ],
        cwd=folder,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(report.read_text())
    assert outcome["exit_codes"] == [0] * len(commands), result.stderr[-3000:]
    assert outcome["loaded"] == []
    return result
