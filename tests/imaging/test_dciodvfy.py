"""dicom3tools' dciodvfy finds no error on an output that it did not find on the input."""

import re
import shutil
import subprocess
from pathlib import Path

import pydicom.data
import pytest

from hdh_assets.imaging.classify import classify_bytes
from hdh_assets.pseudonymisation import Pseudonymiser
from hdh_assets.pseudonymisation.dicom import DicomPseudonymiser

DCIODVFY = shutil.which("dciodvfy")
pytestmark = pytest.mark.skipif(
    DCIODVFY is None,
    reason="dciodvfy not installed (Debian package dicom3tools: make system-deps installs it)",
)
_VALUES = re.compile(r"<[^>]*>|\b[0-9]+(\.[0-9]+)+\b|\b[0-9]+\b")


def _errors(path: Path) -> tuple[set[str], bool]:
    """Error lines with values and UIDs blanked out, and whether dciodvfy could read the file."""
    result = subprocess.run(
        [DCIODVFY, "-new", str(path)], capture_output=True, text=True, timeout=60
    )
    lines = [
        line.strip()
        for line in (result.stdout + result.stderr).splitlines()
        if line.startswith("Error")
    ]
    readable = not any("read failed" in line for line in lines)
    return {_VALUES.sub("#", line) for line in lines}, readable


def _inputs(sample_root: Path) -> list[Path]:
    batch = sample_root / "landing/dicom/sample-seed7"
    sample = sorted(p for p in batch.rglob("*") if p.is_file() and p.parent.name != "misc")[:12]
    corpus = [Path(p) for p in pydicom.data.get_testdata_files() if Path(p).is_file()]
    return sample + corpus


@pytest.mark.slow
def test_no_new_dciodvfy_error(sample_root, tmp_path):
    engine = DicomPseudonymiser(Pseudonymiser(bytes(range(32))))
    checked, introduced = 0, {}
    for path in _inputs(sample_root):
        classified = classify_bytes(path.read_bytes())
        if not classified.ok or not classified.has_file_meta:
            continue  # quarantined, or not a file dciodvfy reads
        before, readable = _errors(path)
        if not readable:
            continue  # nothing to compare against
        out, _, _ = engine.apply(classified.dataset)
        written = tmp_path / "out.dcm"
        out.save_as(written, enforce_file_format=True)
        after, _ = _errors(written)
        checked += 1
        if after - before:
            introduced[path.name] = sorted(after - before)
    assert checked > 100
    assert introduced == {}
