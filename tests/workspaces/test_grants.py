"""Data grants: exactly the granted releases, read-only, without excluded people, and the
patch release when an erasure purged the one granted."""

from __future__ import annotations

import json

import polars as pl
import pytest

from hdh_assets.products.releases import ReleaseError, ReleaseStore
from hdh_assets.workspaces.grants import (
    Grant,
    extract_grants,
    extracts_holding,
    remove_grants,
)


def _release(store: ReleaseStore, tmp_path, product, version, subjects, column="subject"):
    source = tmp_path / f"lake-{product}-{version}"
    source.mkdir()
    pl.DataFrame({column: subjects, "value": list(range(len(subjects)))}).write_parquet(
        source / "part-0.parquet"
    )
    return store.create(product, version, source, {"subject_column": column})


@pytest.fixture
def store(tmp_path):
    store = ReleaseStore(tmp_path / "releases")
    _release(store, tmp_path, "cohort", "1.0.0", ["p1", "p2", "p3", "p2"])
    _release(store, tmp_path, "other", "2.1.0", ["p9"])
    return store


def test_a_project_gets_exactly_its_grants_read_only_with_hashes(store, tmp_path):
    root = tmp_path / "workspaces" / "alpha"
    result = extract_grants(store, root, "alpha", [Grant("cohort", "1.0.0")], set(), "DR-1")
    grants = root / "grants"
    assert sorted(p.name for p in grants.iterdir()) == ["cohort", "manifest.json"]
    data = pl.read_parquet(grants / "cohort" / "1.0.0" / "data")
    assert sorted(data["subject"]) == ["p1", "p2", "p2", "p3"]
    manifest = json.loads((grants / "manifest.json").read_text())
    assert manifest["authorisation"] == "DR-1"
    (entry,) = manifest["grants"]
    assert entry["delivered_version"] == "1.0.0" and entry["rows"] == 4
    assert len(entry["files"][0]["sha256"]) == 64
    assert (grants / "cohort" / "1.0.0" / "data" / "part-0.parquet").stat().st_mode & 0o222 == 0
    ledger = result.ledger
    assert ledger.columns == ["project", "product", "version", "subject_pseudonym", "rows"]
    assert dict(ledger.select("subject_pseudonym", "rows").iter_rows()) == {
        "p1": 1,
        "p2": 2,
        "p3": 1,
    }


def test_excluded_people_are_left_out_and_the_proof_finds_none(store, tmp_path):
    root = tmp_path / "workspaces" / "alpha"
    extract_grants(store, root, "alpha", [Grant("cohort", "1.0.0")], set())
    assert extracts_holding(root, {"p2"}) == ["cohort/1.0.0/data/part-0.parquet"]
    result = extract_grants(store, root, "alpha", [Grant("cohort", "1.0.0")], {"p2"})
    assert extracts_holding(root, {"p2"}) == []
    assert result.manifest["grants"][0]["rows_left_out_for_gdpr"] == 2
    assert "p2" not in result.ledger["subject_pseudonym"].to_list()


def test_a_purged_release_is_delivered_from_its_patch_release(store, tmp_path):
    _release(store, tmp_path, "cohort", "1.0.1", ["p1", "p3"])
    store.purge("cohort", "1.0.0", "HDH-REQUEST1", "1.0.1")
    root = tmp_path / "workspaces" / "alpha"
    result = extract_grants(store, root, "alpha", [Grant("cohort", "1.0.0")], set())
    entry = result.manifest["grants"][0]
    assert (entry["granted_version"], entry["delivered_version"]) == ("1.0.0", "1.0.1")
    assert sorted(pl.read_parquet(root / "grants" / "cohort" / "1.0.0" / "data")["subject"]) == [
        "p1",
        "p3",
    ]


def test_a_withdrawn_grant_disappears_and_decommissioning_removes_everything(store, tmp_path):
    root = tmp_path / "workspaces" / "alpha"
    both = [Grant("cohort", "1.0.0"), Grant("other", "2.1.0")]
    extract_grants(store, root, "alpha", both, set())
    assert (root / "grants" / "other").exists()
    extract_grants(store, root, "alpha", both[:1], set())
    assert not (root / "grants" / "other").exists()
    assert not list(root.glob(".*"))  # no staging or old copy left behind
    assert remove_grants(root) and not (root / "grants").exists()
    assert not remove_grants(root)


def test_a_grant_of_an_unknown_release_is_refused_and_the_old_extract_stays(store, tmp_path):
    root = tmp_path / "workspaces" / "alpha"
    extract_grants(store, root, "alpha", [Grant("cohort", "1.0.0")], set())
    with pytest.raises(ReleaseError, match=r"no release 9\.9\.9"):
        extract_grants(store, root, "alpha", [Grant("cohort", "9.9.9")], set())
    assert (root / "grants" / "cohort" / "1.0.0" / "data").exists()
