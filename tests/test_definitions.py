"""The code location: loads, and every asset tells a data referent what it is and who owns it."""

import subprocess
import sys
from pathlib import Path

import pytest

from hdh_assets.definitions import build_definitions

ROOT = Path(__file__).resolve().parents[1]


def test_every_asset_has_description_group_owner_and_kinds(hdh_home):
    graph = build_definitions(hdh_home).resolve_asset_graph()
    keys = list(graph.get_all_asset_keys())
    assert len(keys) >= 4
    for key in keys:
        node = graph.get(key)
        spec = node.assets_def.specs_by_key[key]
        assert spec.description and len(spec.description) > 40, key
        assert node.group_name not in (None, "default"), key
        assert spec.owners, key
        assert spec.kinds, key
        columns = spec.metadata["dagster/column_schema"].columns
        assert columns and all(c.description for c in columns), key
    assert {graph.get(k).group_name for k in keys} >= {"imaging", "clinical", "claims"}


def test_each_landing_source_has_a_sensor_and_a_job(hdh_home):
    defs = build_definitions(hdh_home)
    for source in ("dicom", "json", "claims"):
        sensor = defs.resolve_sensor_def(f"{source}_landing_sensor")
        assert sensor.job_name == f"ingest_{source}_batch"


@pytest.mark.slow
def test_dagster_definitions_validate_passes(hdh_home):
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful for code location hdh" in result.stderr + result.stdout


@pytest.mark.slow
def test_dg_finds_the_code_location(hdh_home):
    dg_cli = Path(sys.executable).with_name("dg")
    result = subprocess.run(
        [str(dg_cli), "list", "defs", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "claims/events" in result.stdout
