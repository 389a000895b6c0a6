"""`hdh ingest dicom`: pydicom's whole corpus through the Dagster assets, then again as duplicates."""

import json
import shutil
from pathlib import Path

import pydicom.data
from click.testing import CliRunner

from hdh_cli.main import cli


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
