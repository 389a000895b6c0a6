"""`hdh ingest json`: a Synthea-style export through the Dagster assets, with a provider profile."""

import json

from click.testing import CliRunner

from hdh_cli.main import cli
from synthetic.synthea_style import synthea_style_export


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
    from hdh_assets.definitions import ALL_ASSETS
    from hdh_cli.ingest import batch_selection

    rerun = CliRunner().invoke(
        cli,
        [
            "materialize",
            batch_selection("json", ALL_ASSETS),
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
