"""Who sees which study: two projects see what their grants hold; excluded people vanish; no
answer ever carries an identifier of the synthetic people."""

from __future__ import annotations

import json

import polars as pl
import pytest
import requests

from dicomweb.access import Access, project_studies
from dicomweb.app import create_app
from dicomweb.index import IndexSource
from dicomweb.tokens import Tokens
from resources.home import HdhHome
from tests.conftest import identity_needles
from tests.dicomweb.conftest import SAMPLE, TOKEN_KEY, Store, exclude, ingest
from tests.dicomweb.servers import start_service


def grant(home: HdhHome, project: str, product: str, frame: pl.DataFrame, subject: str | None):
    """A project's extract of one release, as workspace provisioning writes it."""
    root = home.workspaces / project / "grants"
    data = root / product / "1.0.0" / "data"
    data.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(data / "part-00000.parquet")
    manifest = root / "manifest.json"
    grants = json.loads(manifest.read_text())["grants"] if manifest.exists() else []
    grants.append({"product": product, "granted_version": "1.0.0", "subject_column": subject})
    manifest.write_text(json.dumps({"project": project, "grants": grants}))


@pytest.fixture
def platform(tmp_path, sample_root) -> tuple[HdhHome, pl.DataFrame]:
    """A home of its own (tests here change grants and exclusions) with the sample ingested."""
    home = HdhHome(tmp_path / "hdh").ensure()
    (batch,) = (sample_root / "landing" / "dicom").iterdir()
    return home, ingest(home, {SAMPLE: batch})[SAMPLE]


def _studies(service_url: str, token: str) -> set[str]:
    found = requests.get(f"{service_url}/studies", headers={"Authorization": f"Bearer {token}"})
    assert found.status_code == 200
    return {item["0020000D"]["Value"][0] for item in found.json()}


def test_two_projects_see_different_studies_and_an_excluded_person_vanishes(platform):
    home, index = platform
    studies = (
        index.select("study_instance_uid", "subject_pseudonym").unique().sort("study_instance_uid")
    )
    people = sorted(studies["subject_pseudonym"].unique())
    assert len(people) >= 4
    # An imaging release (study UIDs) for one project, clinical releases (subjects) for the other
    linked = studies.filter(pl.col("subject_pseudonym").is_in(people[:2]))
    grant(home, "imaging-study", "imaging_clinical_linkage", linked, "subject_pseudonym")
    grant(home, "imaging-study", "studies_per_modality_month", pl.DataFrame({"month": [1]}), None)
    cohort = pl.DataFrame({"subject_pseudonym": people[2:4], "birth_year": [1950, 1960]})
    grant(home, "clinical-study", "diabetes_patients", cohort, "subject_pseudonym")
    tokens = Tokens(TOKEN_KEY)
    service = start_service(create_app(home, tokens))
    try:
        url = service.dicomweb
        imaging = _studies(url, tokens.issue("imaging-study", 60))
        clinical = _studies(url, tokens.issue("clinical-study", 60))
        everything = _studies(url, tokens.issue(None, 60))
        assert imaging == set(linked["study_instance_uid"])
        by_person = studies.filter(pl.col("subject_pseudonym").is_in(people[2:4]))
        assert clinical == set(by_person["study_instance_uid"])
        assert imaging and clinical and not imaging & clinical
        assert everything == set(studies["study_instance_uid"])
        assert _studies(url, tokens.issue("no-grants", 60)) == set()

        # The first person objects: their studies leave every answer at once.
        erased = people[0]
        theirs = studies.filter(pl.col("subject_pseudonym") == erased)
        study = theirs["study_instance_uid"][0]
        exclude(home, [erased])
        assert _studies(url, tokens.issue(None, 60)) == everything - set(
            theirs["study_instance_uid"]
        )
        gone = set(theirs["study_instance_uid"])
        assert _studies(url, tokens.issue("imaging-study", 60)) == imaging - gone
        operator = {"Authorization": f"Bearer {tokens.issue(None, 60)}"}
        for path in (f"/studies/{study}", f"/studies/{study}/metadata", f"/studies/{study}/series"):
            assert requests.get(url + path, headers=operator).status_code == 404
        health = requests.get(f"{url}/health", headers=operator).json()
        assert health["excluded_subjects"] == 1
    finally:
        service.stop()


def test_the_rule_follows_what_the_grants_hold(platform):
    home, index = platform
    view = IndexSource(home).current()
    root = home.workspaces / "p" / "grants"
    assert project_studies(root, view) == frozenset()  # no grants: nothing
    aggregate = pl.DataFrame({"month": [1], "studies": [3]})
    grant(home, "p", "studies_per_modality_month", aggregate, None)
    assert project_studies(root, view) == frozenset()  # an aggregate grants no study
    one = index.head(1)
    grant(
        home,
        "p",
        "imaging_clinical_linkage",
        one.select("study_instance_uid", "subject_pseudonym"),
        "subject_pseudonym",
    )
    assert project_studies(root, view) == {one["study_instance_uid"][0]}
    unknown = pl.DataFrame({"study_instance_uid": ["1.2.3"], "subject_pseudonym": ["x"]})
    grant(home, "p", "other_imaging", unknown, "subject_pseudonym")
    assert project_studies(root, view) == {one["study_instance_uid"][0]}  # only what is stored
    claims = Tokens(TOKEN_KEY).verify(Tokens(TOKEN_KEY).issue("p", 60))
    assert Access(home).visible(claims, view) == {one["study_instance_uid"][0]}


def test_no_answer_carries_an_identifier_of_the_synthetic_people(
    store: Store, service, auth, identities
):
    needles = identity_needles(identities)
    texts = []
    for level in ("studies", "series", "instances"):
        found = requests.get(
            f"{service.dicomweb}/{level}", params={"includefield": "all"}, headers=auth
        )
        assert found.status_code == 200
        texts.append(found.text)
    sample = store.instances.filter(pl.col("batch") == SAMPLE)
    for study in sample["study_instance_uid"].unique():
        texts.append(
            requests.get(f"{service.dicomweb}/studies/{study}/metadata", headers=auth).text
        )
    everything = "\n".join(texts)
    assert sample.height > 0 and len(everything) > 100_000
    leaked = sorted(n for n in needles if n in everything)
    assert not leaked, f"{len(leaked)} identifying values in DICOMweb answers"
