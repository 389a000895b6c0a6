"""`hdh ingest dicom`: pydicom's whole corpus through the Dagster assets, then again as duplicates."""

import json
import shutil
from pathlib import Path

import pydicom.data
import pytest
from click.testing import CliRunner

from hdh_cli.main import cli


@pytest.mark.slow  # the whole corpus through every imaging asset, twice
def test_pydicom_corpus_is_ingested_with_reconciled_counts(hdh_home, tmp_path):
    corpus = tmp_path / "delivery"
    files = [Path(p) for p in pydicom.data.get_testdata_files() if Path(p).is_file()]
    for index, path in enumerate(files):
        target = corpus / f"part{index % 3}" / f"{index:03d}-{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    runner = CliRunner()
    result = runner.invoke(
        cli, ["ingest", "dicom", str(corpus), "--batch", "pydicom-corpus", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["success"]
    assert summary["landed"] >= len(files)  # a single-file .gz counts as its member
    assert summary["landed"] == summary["ingested"] + summary["duplicates"] + summary["quarantined"]
    assert summary["ingested"] > 100
    stored = list((hdh_home.store / "dicom").rglob("*.dcm"))
    assert len(stored) == summary["ingested"]
    assert (hdh_home.landing / "dicom" / "pydicom-corpus" / "_READY").exists()

    again = runner.invoke(cli, ["ingest", "dicom", str(corpus), "--batch", "redelivered", "--json"])
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["ingested"] == 0
    assert second["duplicates"] == summary["ingested"] + summary["duplicates"]
    assert len(list((hdh_home.store / "dicom").rglob("*.dcm"))) == len(stored)


@pytest.mark.slow  # ingestion and what automation requests: whole jobs
def test_what_follows_a_batch_is_exactly_what_the_automation_conditions_request(hdh_home, tmp_path):
    """`hdh ingest` runs the batch's own assets, then exactly what the assets' automation
    conditions request, as the daemon's automation sensor would: nothing from a written list."""
    import dagster as dg

    files = [Path(p) for p in pydicom.data.get_testdata_files("CT_small.dcm")]
    files += [Path(p) for p in pydicom.data.get_testdata_files("MR_small.dcm")]
    corpus = tmp_path / "delivery"
    corpus.mkdir()
    for path in files:
        shutil.copyfile(path, corpus / path.name)
    result = CliRunner().invoke(cli, ["ingest", "dicom", str(corpus), "--batch", "b1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    requested = {key for evaluation in summary["automation"] for key in evaluation}
    # the conditions ask for what spans batches, and nothing of other sources
    assert {"imaging/dicom_series", "imaging/dicom_studies", "gdpr/subject_index"} <= requested
    assert not any(k.startswith(("clinical/", "claims/")) for k in requested)
    instance = dg.DagsterInstance.get()
    automation_runs = instance.get_runs(dg.RunsFilter(tags={"hdh/automation": "hdh-cli"}))
    built = set()
    for run in automation_runs:
        for entry in instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ):
            built.add(entry.dagster_event.asset_key.to_user_string())
    assert built == requested
    # and the batch's own run built the batch's assets only
    everything = {
        entry.dagster_event.asset_key.to_user_string()
        for run in instance.get_runs()
        for entry in instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        )
    }
    assert everything - built == {
        "imaging/landed_files",
        "imaging/dicom_instances",
        "imaging/dicom_previews",
        "imaging/dicom_quarantine",
    }
