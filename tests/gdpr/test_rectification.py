"""Rectification: the corrected source data replaces the person's records of that source, and
everything downstream follows; nobody else is touched."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import polars as pl
import pytest
from click.testing import CliRunner

from hdh_cli.main import cli
from resources.pseudonymisation import PseudonymisationKeyResource
from synthetic.fhir import write_fhir
from synthetic.people import make_population

PEOPLE = make_population(3, seed=21)
PERSON = PEOPLE[0]


def _hdh(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, (result.stdout if "--json" in args else result.output)


def _patients(home) -> pl.DataFrame:
    return pl.read_parquet(home.lake / "clinical" / "patients", hive_partitioning=True)


def _rows_of(home, pseudonym: str) -> pl.DataFrame:
    return _patients(home).filter(pl.col("subject_pseudonym") == pseudonym)


def _observations_of(home, pseudonym: str) -> int:
    frame = pl.read_parquet(home.lake / "clinical" / "observations", hive_partitioning=True)
    return frame.filter(pl.col("subject_pseudonym") == pseudonym).height


def _corrected_export(export, target, birth_date: dt.date) -> None:
    """The person's NDJSON lines of ``export``, their Patient with another birth date."""
    patients = [json.loads(line) for line in (export / "Patient.ndjson").read_text().splitlines()]
    (patient,) = [p for p in patients if PERSON.nir in json.dumps(p)]
    target.mkdir()
    for path in export.glob("*.ndjson"):
        kept = []
        for line in path.read_text().splitlines():
            if path.name == "Patient.ndjson":
                if json.loads(line)["id"] == patient["id"]:
                    kept.append(json.dumps({**patient, "birthDate": birth_date.isoformat()}))
            elif f'"Patient/{patient["id"]}"' in line:
                kept.append(line)
        (target / path.name).write_text("".join(f"{line}\n" for line in kept))


@pytest.mark.slow  # the whole rectification: landing, ingestion and re-materialisations
def test_a_rectified_birth_date_replaces_the_wrong_one_everywhere(hdh_home, tmp_path):
    home = hdh_home
    write_fhir(PEOPLE, {}, tmp_path / "export", seed=4)
    # named to sort after "rectification-...": the plan's order must not depend on names
    code, out = _hdh("ingest", "json", tmp_path / "export", "--batch", "weekly-export", "--json")
    assert code == 0, out
    pseudonym = PseudonymisationKeyResource().pseudonymiser().subject_pseudonym(PERSON.nir)
    before = _rows_of(home, pseudonym)
    others_before = _patients(home).filter(pl.col("subject_pseudonym") != pseudonym).height
    assert before.height == 1 and before["birth_year"][0] == PERSON.birth_date.year

    code, out = _hdh(
        "rights", "submit", "--type", "rectification", "--nir", PERSON.nir,
        "--family-name", PERSON.family_name, "--given-names", " ".join(PERSON.given_names),
        "--birth-date", PERSON.birth_date.isoformat(), "--email", PERSON.email, "--json",
    )  # fmt: skip
    assert code == 0, out
    request_id = json.loads(out)["id"]
    corrected = dataclasses.replace(PERSON, birth_date=PERSON.birth_date - dt.timedelta(days=800))
    # the hospital sends the person's whole record again, only the birth date changed: the
    # unchanged resources must land in the corrected batch, not be taken for duplicates of the
    # old batch's rows that the rectification removes
    observations_before = _observations_of(home, pseudonym)
    assert observations_before > 0
    _corrected_export(tmp_path / "export", tmp_path / "corrected", corrected.birth_date)
    # nothing is attached to an unverified request, and nothing is processed without data
    code, out = _hdh("rights", "rectify", request_id, tmp_path / "corrected", "--source", "json")
    assert code != 0 and "attach to a verified request" in out
    assert _hdh("rights", "verify", request_id)[0] == 0
    code, out = _hdh("rights", "process", "--json")
    assert json.loads(out)["pending"] == []  # waits for its corrected data
    code, out = _hdh("rights", "rectify", request_id, tmp_path / "corrected", "--source", "json")
    assert code == 0, out

    code, out = _hdh("rights", "process", "--wait", "--json")
    assert code == 0, out
    (outcome,) = json.loads(out)["processed"]
    assert outcome["status"] == "completed", outcome["report"]
    report = outcome["report"]
    batch = f"rectification-{request_id.lower()}"
    assert report["corrected_batch"] == batch and report["rectified_partitions"] == [batch]
    assert report["raw_copies_clean"] is True and all(report["checks"].values())

    after = _rows_of(home, pseudonym)
    assert after.height == 1 and after["birth_year"][0] == corrected.birth_date.year
    assert _observations_of(home, pseudonym) == observations_before
    assert _patients(home).filter(pl.col("subject_pseudonym") != pseudonym).height == others_before
    # the old batch no longer carries the person; the corrected batch does
    landed = b"".join(
        p.read_bytes() for p in (home.landing / "json" / "weekly-export").rglob("*.ndjson")
    )
    assert PERSON.nir[:13].encode() not in landed
    assert PEOPLE[1].nir[:13].encode() in landed
    shown = json.loads(_hdh("rights", "show", request_id, "--json")[1])
    assert shown["status"] == "completed"
    assert "correction_attached" in [a["action"] for a in shown["audit"]]
