"""Releases: frozen snapshots with a manifest; changing or deleting one is refused."""

from __future__ import annotations

import json
import stat

import polars as pl
import pytest
from click.testing import CliRunner

from hdh_assets.products.releases import ReleaseError, ReleaseStore
from hdh_cli.main import cli


def _table(folder, rows=10):
    folder.mkdir(parents=True)
    pl.DataFrame(
        {"subject_pseudonym": [f"p{i}" for i in range(rows)], "n": list(range(rows))}
    ).write_parquet(folder / "part-00000.parquet")
    (folder / ".part-00000.parquet.crc").write_bytes(b"spark checksum, not data")
    return folder


def test_a_release_is_a_complete_read_only_snapshot(tmp_path):
    source = _table(tmp_path / "lake" / "products" / "p")
    store = ReleaseStore(tmp_path / "releases")
    release = store.create("p", "1.0.0", source, {"code_version": "abc"})
    manifest = release.manifest
    assert (
        manifest["rows"] == 10
        and manifest["version"] == "1.0.0"
        and manifest["code_version"] == "abc"
    )
    assert [f["path"] for f in manifest["files"]] == [
        "part-00000.parquet"
    ]  # checksums are not data
    assert manifest["schema"] == [
        {"name": "subject_pseudonym", "type": "large_string"},
        {"name": "n", "type": "int64"},
    ]
    for path in release.path.rglob("*"):
        assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), path
    # the lake moves on; the release does not
    pl.DataFrame({"subject_pseudonym": ["x"], "n": [0]}).write_parquet(
        source / "part-00000.parquet"
    )
    assert store.verify("p", "1.0.0") == []
    assert pl.read_parquet(release.data / "part-00000.parquet").height == 10


def test_changing_or_deleting_a_release_is_refused_and_tampering_is_detected(tmp_path):
    source = _table(tmp_path / "lake" / "p")
    store = ReleaseStore(tmp_path / "releases")
    release = store.create("p", "1.1.0", source, {})
    with pytest.raises(ReleaseError, match="released already and releases are immutable"):
        store.create("p", "1.1.0", source, {})
    with pytest.raises(ReleaseError, match=r"must be newer than the released 1\.1\.0"):
        store.create("p", "1.0.9", source, {})
    with pytest.raises(ReleaseError, match="cannot be deleted"):
        store.delete("p", "1.1.0")
    assert release.path.exists()
    with pytest.raises(ReleaseError, match="not a release version"):
        store.create("p", "2", source, {})
    data = release.data / "part-00000.parquet"
    data.chmod(0o644)  # someone with the rights to do it anyway
    data.write_bytes(data.read_bytes()[:-8] + b"tampered")
    assert store.verify("p", "1.1.0") == ["changed part-00000.parquet"]
    data.unlink()
    assert store.verify("p", "1.1.0") == ["missing part-00000.parquet"]
    assert [r.version for r in store.releases("p")] == ["1.1.0"]


def _hdh(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_release_command_freezes_a_checked_materialisation(hdh_home, product_lake):
    code, out = _hdh("products", "release", "diabetes_patients")
    assert code != 0 and "never materialised" in out
    code, out = _hdh("materialize", 'key:"products/diabetes_patients"', "--json")
    assert code == 0, out
    code, out = _hdh("products", "release", "diabetes_patients", "--json")
    assert code == 0, out
    manifest = json.loads(out)
    assert manifest["version"] == "1.0.0"  # the version its YAML declares
    assert manifest["subject_column"] == "subject_pseudonym"
    assert set(manifest["checks"]) == {
        "not_null_subject_pseudonym",
        "unique_subject_pseudonym",
        "relationships_subject_pseudonym",
        "expression_diagnosis_records",
        "accepted_values_gender",
        "no_excluded_subject",  # the GDPR proof every asset holding people carries
    }
    assert all(c["outcome"] in {"passed", "warned"} for c in manifest["checks"].values())
    assert {"clinical/conditions", "clinical/patients"} <= {a["asset"] for a in manifest["lineage"]}
    assert manifest["code_version"] and manifest["materialization"]["run_id"]
    lake_rows = pl.read_parquet(product_lake / "products" / "diabetes_patients").height
    assert manifest["rows"] == lake_rows
    code, out = _hdh("products", "release", "diabetes_patients", "1.0.0")
    assert code != 0 and "immutable" in out
    code, out = _hdh("products", "delete", "diabetes_patients", "1.0.0")
    assert code != 0 and "cannot be deleted" in out
    code, out = _hdh("products", "verify", "diabetes_patients", "1.0.0")
    assert code == 0 and "intact" in out
    code, out = _hdh("products", "list", "--json")
    listed = {p["product"]: p for p in json.loads(out)["products"]}
    assert listed["diabetes_patients"]["released"] == ["1.0.0"]
    assert listed["care_consumption_per_month"]["aggregate_only"] is True


def test_a_product_with_a_failing_check_cannot_be_released(hdh_home, product_lake):
    observations = product_lake / "clinical" / "observations" / "batch=b1" / "part-00000.parquet"
    frame = pl.read_parquet(observations)
    frame.with_columns(  # an HbA1c of 45 %: a unit error the blocking range check must catch
        pl.when(pl.col("code") == "4548-4")
        .then(45.0)
        .otherwise(pl.col("value_quantity"))
        .alias("value_quantity")
    ).write_parquet(observations)
    code, out = _hdh(
        "materialize", 'key:"products/diabetes_patients" or key:"products/hba1c_trajectory"'
    )
    assert code != 0
    code, out = _hdh("products", "release", "hba1c_trajectory", "1.0.0")
    assert code != 0 and "expression_hba1c_percent" in out and "cannot be released" in out


def test_an_erasure_purges_a_release_holding_the_person_and_only_that(tmp_path):
    store = ReleaseStore(tmp_path / "releases")
    source = _table(tmp_path / "lake" / "p")
    store.create("p", "1.0.0", source, {"subject_column": "subject_pseudonym"})
    store.create("q", "1.0.0", _table(tmp_path / "lake" / "q"), {"aggregate_only": True})
    assert [r.product for r in store.holding("p3")] == ["p"]  # aggregates are not searched
    pl.DataFrame({"subject_pseudonym": ["p1"], "n": [1]}).write_parquet(
        source / "part-00000.parquet"
    )
    store.create(
        "p", "1.0.1", source, {"subject_column": "subject_pseudonym", "supersedes": "1.0.0"}
    )
    store.purge("p", "1.0.0", "HDH-REQUEST01", "1.0.1")
    purged = store.get("p", "1.0.0")
    assert purged.manifest["purged"]["request"] == "HDH-REQUEST01" and not purged.data.exists()
    assert store.verify("p", "1.0.0") == [] and store.holding("p3") == []
    with pytest.raises(ReleaseError, match="cannot be deleted"):
        store.delete("p", "1.0.1")
