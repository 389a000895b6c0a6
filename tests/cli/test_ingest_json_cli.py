"""`hdh ingest json`: a Synthea-style export through the Dagster assets, with a provider profile."""

import json

import pytest
from click.testing import CliRunner

from hdh_cli.main import cli
from synthetic.synthea_style import synthea_style_export


def _json_batch_selection(home) -> str:
    """What the JSON landing sensor's job runs, as a selection string."""
    from hdh_assets.definitions import build_definitions
    from hdh_cli.ingest import batch_request

    graph = build_definitions(home).resolve_asset_graph()
    keys = batch_request("json", "any", graph).asset_selection
    return " or ".join(f'key:"{k.to_user_string()}"' for k in keys)


@pytest.mark.slow  # whole ingestion jobs, twice
def test_synthea_style_export_through_the_command(hdh_home, tmp_path, monkeypatch):
    export = tmp_path / "us-export"
    synthea_style_export(export, patients=4, seed=9)
    providers = tmp_path / "providers.yaml"
    providers.write_text(
        "providers:\n  kansas:\n    national_identifier_systems: []\n    birth_date: month\n"
    )
    monkeypatch.setenv("HDH_PROVIDERS", str(providers))
    (export / "Broken.ndjson").write_text('{"resourceType": "Observation", "id": \n')
    result = CliRunner().invoke(
        cli, ["ingest", "json", str(export), "--provider", "kansas", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["provider"] == "kansas"
    assert (
        summary["records_in"]
        == summary["ingested"] + summary["duplicates"] + summary["quarantined"]
    )
    assert summary["quarantined_by_reason"] == {"invalid_json": 1}
    assert summary["rows_by_table"]["patients"] == 4
    assert summary["files"] == len([p for p in export.rglob("*") if p.is_file()])
    assert not (hdh_home.store / ".staging" / "json").exists() or not any(
        (hdh_home.store / ".staging" / "json").iterdir()
    )
    # the provider travels with the batch: a rerun without --provider (the sensor, the UI) keeps it
    landed = hdh_home.landing / "json" / summary["batch"]
    assert (landed / "_PROVIDER").read_text().strip() == "kansas"
    rerun = CliRunner().invoke(
        cli,
        [
            "materialize",
            _json_batch_selection(hdh_home),
            "--partition",
            summary["batch"],
            "--json",
        ],
    )
    assert rerun.exit_code == 0, rerun.output
    import dagster as dg

    instance = dg.DagsterInstance.get()
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(["clinical", "patients"]), asset_partitions=[summary["batch"]]
        ),
        limit=1,
    ).records
    assert records[0].asset_materialization.metadata["provider"].value == "kansas"
    assert (
        records[0].asset_materialization.metadata["quarantined"].value == 1
    )  # the marker is not data

    unknown = CliRunner().invoke(
        cli, ["ingest", "json", str(export), "--provider", "nobody", "--batch", "x"]
    )
    assert unknown.exit_code == 2 and "nobody" in unknown.output
    assert not (hdh_home.landing / "json" / "x").exists()


@pytest.mark.slow  # two whole batches through every clinical asset
def test_an_export_landed_twice_is_ingested_once(hdh_home, tmp_path):
    export = tmp_path / "export"
    synthea_style_export(export, patients=3, seed=4)

    def ingest(*args: str) -> dict:
        result = CliRunner().invoke(cli, [*args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    first = ingest("ingest", "json", str(export), "--batch", "monday")
    again = ingest("ingest", "json", str(export), "--batch", "tuesday")
    assert first["ingested"] > 0 and first["records_in"] == again["records_in"]
    assert again["ingested"] == 0 and again["newer_versions"] == 0
    assert again["duplicates"] == again["records_in"] - again["quarantined"]

    # re-running the first batch later does not turn its resources into duplicates of the second
    rerun = CliRunner().invoke(
        cli, ["materialize", _json_batch_selection(hdh_home), "--partition", "monday"]
    )
    assert rerun.exit_code == 0, rerun.output
    import polars as pl

    from resources.lake.tables import Lake

    patients = Lake(hdh_home.lake).table(["clinical", "patients"])
    rows = pl.scan_parquet([str(f) for f in patients.parquet_files()]).collect()
    assert rows.height == 3 and rows["id"].n_unique() == 3
