"""Right of access: an archive of every row held on the person, explained in plain language."""

from __future__ import annotations

import zipfile

import dagster as dg
import polars as pl

from hdh_assets.definitions import build_definitions
from hdh_assets.gdpr.rights import validate_submission
from hdh_cli.rights import process_here
from resources.pseudonymisation import PseudonymisationKeyResource
from resources.rights_registry import RightsRegistry
from tests.products.conftest import pseudonym, write_lake


def test_an_access_request_yields_the_persons_rows_and_nobody_elses(hdh_home):
    write_lake(hdh_home.lake)
    person, other = pseudonym(3), pseudonym(4)
    registry = RightsRegistry.from_env(hdh_home)
    kind, identity = validate_submission(
        "access", "Laurent", "Hélène", "2012-02-06", "212023197298779", "h@example.fr"
    )
    request_id, _ = registry.submit(kind, identity, person)
    registry.verify(request_id, "dpo")
    with dg.instance_for_test() as instance:
        outcome = process_here(build_definitions(hdh_home), instance, registry, request_id)
        # an access request is one run: its outcome (the archive), tagged with the request
        (run,) = instance.get_runs(dg.RunsFilter(tags={"hdh/rights_request": request_id}))
        assert run.tags["hdh/rights_step"] == "finish" and run.status is dg.DagsterRunStatus.SUCCESS
    assert outcome.status == "completed" and [r.run_id for r in outcome.runs] == [run.run_id]
    shown = registry.get(request_id)
    assert shown.status.value == "completed"
    archive = hdh_home.root / "exports" / f"{request_id}.zip"
    assert shown.report["archive"] == str(archive) and archive.stat().st_mode & 0o077 == 0
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
        assert {"README.txt", "claims__events.csv", "clinical__patients.csv"} <= names
        events = pl.read_csv(zipped.read("claims__events.csv"))
        readme = zipped.read("README.txt").decode()
        everything = b"".join(zipped.read(n) for n in names)
    lake_events = pl.scan_parquet(str(hdh_home.lake / "claims" / "events" / "**" / "*.parquet"))
    expected = (
        lake_events.filter(pl.col("subject_pseudonym") == person).select(pl.len()).collect().item()
    )
    assert events.height == expected == shown.report["rows_by_asset"]["claims/events"] > 0
    assert set(events["subject_pseudonym"]) == {person}
    assert other.encode() not in everything
    offset = PseudonymisationKeyResource().pseudonymiser().date_offset_days(person)
    assert f"{offset:+d} jours" in readme and f"{offset:+d} days" in readme and person in readme
