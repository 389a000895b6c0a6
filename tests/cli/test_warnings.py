"""Only warnings that tell the user something reach the terminal.

pyspark's pandas-version FutureWarning (pandera imports pyspark.pandas) and pydicom's VR
warnings for files ingestion then repairs or quarantines are filtered by category, message and
module; another warning of the same libraries still shows.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pydicom.data
import pytest

from hdh_cli.warning_filters import KNOWN_WARNINGS, PYTHONWARNINGS, silence_known_warnings

HDH = [sys.executable, "-c", "from hdh_cli.main import cli; cli()"]


def _hdh(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*HDH, *args], cwd=cwd, env=dict(os.environ), capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow  # hdh ingest in a subprocess
def test_ingesting_a_file_with_invalid_vrs_prints_no_known_warning(hdh_home, tmp_path):
    """badVR.dcm holds an IS '1A' and an over-long UID: pydicom warns, ingestion copes."""
    delivery = tmp_path / "delivery"
    delivery.mkdir()
    bad = Path(pydicom.data.get_testdata_file("badVR.dcm"))
    (delivery / bad.name).write_bytes(bad.read_bytes())
    result = _hdh("ingest", "dicom", str(delivery), "--batch", "bad-vr", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["success"] and summary["landed"] == 1
    assert summary["ingested"] + summary["quarantined"] == 1
    assert "FutureWarning" not in result.stderr
    assert "Invalid value for VR" not in result.stderr
    assert "pyspark" not in result.stderr


@pytest.fixture
def clean_warning_state(monkeypatch):
    monkeypatch.delenv(PYTHONWARNINGS, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        yield caught


def _warn(message: str, category: type[Warning], module: str) -> None:
    warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)


def test_the_filters_are_narrow(clean_warning_state):
    silence_known_warnings()
    for known in KNOWN_WARNINGS:
        _warn(f"{known.message_start}: details", known.category, known.module)
    assert [str(w.message) for w in clean_warning_state] == []
    # same module, another message; same message, another module; another category
    _warn("The number of bytes of pixel data is sufficient", UserWarning, "pydicom.valuerep")
    _warn("Invalid value for VR IS: '1A'", UserWarning, "hdh_assets.imaging.classify")
    _warn("PySpark does not yet fully support pandas", DeprecationWarning, "pyspark.pandas")
    assert len(clean_warning_state) == 3


def test_processes_the_command_starts_inherit_the_filters(clean_warning_state):
    """Ingestion's spawned workers do not inherit this process's filters, only its environment."""
    silence_known_warnings()
    silence_known_warnings()  # idempotent: no option is added twice
    options = os.environ[PYTHONWARNINGS].split(",")
    assert sorted(options) == sorted(k.as_python_option() for k in KNOWN_WARNINGS)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import warnings\n"
            "warnings.warn_explicit(\"Invalid value for VR UI: 'x'\", UserWarning, 'v.py', 1,"
            " module='pydicom.valuerep')\n"
            "warnings.warn_explicit('something else', UserWarning, 'v.py', 2,"
            " module='pydicom.valuerep')\n",
        ],
        env=dict(os.environ),
        capture_output=True,
        text=True,
    )
    assert "Invalid value for VR" not in child.stderr
    assert "something else" in child.stderr
