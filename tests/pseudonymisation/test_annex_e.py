"""Conformance: our Table E.1-1 actions against the reference extraction of the standard."""

import json
from pathlib import Path

import pytest

from hdh_assets.pseudonymisation.annex_e import STANDARD_REVISION, Option, rules

# The standard's table as extracted by innolitics/dicom-standard (MIT): see data/README.md.
REFERENCE = Path(__file__).resolve().parent / "data" / "ps3.15-table-e1-1.json"
OPTION_COLUMNS = {
    "rtnLongModifDatesOpt": Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
    "rtnPatCharsOpt": Option.RETAIN_PATIENT_CHARACTERISTICS,
    "rtnDevIdOpt": Option.RETAIN_DEVICE_IDENTITY,
}


@pytest.fixture(scope="module")
def reference_rows() -> list[dict]:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def ours() -> dict[str, object]:
    return {rule.pattern.label: rule for rule in rules()}


def test_every_reference_row_is_in_our_table_with_the_same_basic_action(reference_rows, ours):
    assert STANDARD_REVISION == "2024b"
    assert len(reference_rows) == 621
    missing = [r["tag"] for r in reference_rows if r["tag"].upper() not in ours]
    assert missing == []
    wrong = {
        r["tag"]: (ours[r["tag"].upper()].basic, r["basicProfile"])
        for r in reference_rows
        if ours[r["tag"].upper()].basic != r["basicProfile"]
    }
    assert wrong == {}
    assert len(ours) == len(reference_rows)


@pytest.mark.parametrize("column", sorted(OPTION_COLUMNS))
def test_supported_options_match_the_reference(reference_rows, ours, column):
    option = OPTION_COLUMNS[column]
    wrong = {}
    for row in reference_rows:
        rule = ours[row["tag"].upper()]
        expected = row.get(column) or row["basicProfile"]
        actual = rule.action([option])
        if actual != expected:
            wrong[f"{row['tag']} {row['name']}"] = (actual, expected)
    assert wrong == {}
