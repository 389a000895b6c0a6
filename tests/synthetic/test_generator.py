"""The synthetic sample: deterministic to the byte, valid identifiers, realistic and broken files."""

import hashlib
import json
from pathlib import Path

import polars as pl
import pydicom
import pytest
from pydicom.errors import InvalidDicomError

from hdh_assets.landing.batches import READY_MARKER
from hdh_assets.pseudonymisation.identifiers import is_valid_nir
from synthetic.sample import SampleConfig, generate_sample


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_outputs(tmp_path, sample_root, sample_config):
    generate_sample(tmp_path / "landing", tmp_path / "sample", sample_config)
    first, second = tree_digest(sample_root), tree_digest(tmp_path)
    assert len(first) >= 100
    assert first == second


def test_another_seed_gives_other_people(tmp_path, identities, sample_config):
    config = SampleConfig(seed=sample_config.seed + 1, people=5, claims_rows=100)
    generate_sample(tmp_path / "landing", tmp_path / "sample", config)
    other = json.loads((tmp_path / "sample" / "identities.json").read_text())["people"]
    assert {p["nir"] for p in other}.isdisjoint({p["nir"] for p in identities})


def test_every_nir_is_valid_unique_and_consistent_with_the_person(identities):
    assert len({p["nir"] for p in identities}) == len(identities)
    for person in identities:
        nir = person["nir"]
        assert is_valid_nir(nir)
        assert nir[0] == ("2" if person["sex"] == "F" else "1")
        assert nir[1:3] == person["birth_date"][2:4] and nir[3:5] == person["birth_date"][5:7]


def test_batches_are_complete_with_ready_markers(sample_root):
    for source in ("dicom", "json", "claims"):
        batches = [p for p in (sample_root / "landing" / source).iterdir()]
        assert [b.name for b in batches] == ["sample-seed7"], "no partial or hidden batch is left"
        assert (batches[0] / READY_MARKER).exists()


def test_dicom_studies_carry_realistic_identifying_headers(sample_root, identities):
    by_nir = {p["nir"]: p for p in identities}
    files = [p for p in (sample_root / "landing/dicom/sample-seed7").rglob("*") if p.is_file()]
    valid = []
    for path in files:
        if path.parent.name == "misc" or path.name == READY_MARKER:
            continue
        valid.append(pydicom.dcmread(path))
    assert {ds.Modality for ds in valid} == {"CT", "MR"}
    assert any(path.suffix == "" for path in files if path.name != READY_MARKER)  # names vary
    for ds in valid:
        person = by_nir[ds.PatientID]
        assert str(ds.PatientName).startswith(person["family_name"].upper())
        assert ds.PatientBirthDate == person["birth_date"].replace("-", "")
        assert ds.IssuerOfPatientID == "INS-NIR"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPInstanceUID.startswith("2.25.")
        assert ds.InstitutionName and ds.ReferringPhysicianName and ds.AccessionNumber
        assert any(elem.tag.is_private for elem in ds)
        assert ds.pixel_array.shape == (64, 64)
    burned = {ds.StudyInstanceUID for ds in valid if ds.BurnedInAnnotation == "YES"}
    assert 0 < len(burned) < len({ds.StudyInstanceUID for ds in valid})
    series_per_study = {}
    for ds in valid:
        series_per_study.setdefault(ds.StudyInstanceUID, set()).add(ds.SeriesInstanceUID)
    assert max(len(s) for s in series_per_study.values()) >= 2


def test_malformed_dicom_files_are_really_broken(sample_root):
    misc = sample_root / "landing/dicom/sample-seed7/misc"
    broken = {p.name for p in misc.iterdir()}
    assert broken == {
        "README-scanner.dcm",
        "truncated.dcm",
        "garbage_after_preamble.dcm",
        "empty.dcm",
        "no_sop_instance_uid.dcm",
    }
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(misc / "README-scanner.dcm")
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(misc / "empty.dcm")
    with pytest.raises(Exception):  # noqa: B017 - any read error: the point is it cannot be read
        pydicom.dcmread(misc / "truncated.dcm").pixel_array  # noqa: B018
    assert "SOPInstanceUID" not in pydicom.dcmread(misc / "no_sop_instance_uid.dcm")


def test_fhir_ndjson_is_one_type_per_file_and_references_resolve(sample_root, identities):
    folder = sample_root / "landing/json/sample-seed7"
    resources = {}
    for path in folder.glob("*.ndjson"):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert {r["resourceType"] for r in lines} == {path.stem}
        resources[path.stem] = lines
    assert set(resources) == {
        "Patient",
        "Encounter",
        "Condition",
        "Observation",
        "MedicationRequest",
        "Procedure",
    }
    patients = {f"Patient/{r['id']}" for r in resources["Patient"]}
    assert len(patients) == len(identities)
    assert {r["identifier"][0]["value"] for r in resources["Patient"]} == {
        p["nir"] for p in identities
    }
    for kind, items in resources.items():
        for resource in items:
            if "subject" in resource:
                assert resource["subject"]["reference"] in patients, kind
    values = [o for o in resources["Observation"] if "component" in o]
    assert values and all(len(o["component"]) == 2 for o in values)
    bundles = [json.loads(p.read_text()) for p in (folder / "bundles").glob("*.json")]
    assert {b["type"] for b in bundles} == {"collection", "transaction", "searchset"}


def test_claims_are_chunked_and_refer_to_the_same_people(sample_root, identities, sample_config):
    files = sorted((sample_root / "landing/claims/sample-seed7").glob("*.parquet"))
    # one file per month of event dates (24 months from 2023-01), the undated rows apart
    assert len(files) == 25 and files[0].name == "events-2023-01-00000.parquet"
    assert files[-1].name == "events-undated-00000.parquet"
    claims = pl.read_parquet(files)
    assert claims.height == sample_config.claims_rows
    assert claims["event_id"].is_unique().all()
    nirs = set(claims["nir"].unique().to_list())
    valid = {p["nir"] for p in identities}
    invalid = nirs - valid
    assert 0 < len(invalid) <= 4  # a few deliberately wrong keys, for quarantine
    assert not any(is_valid_nir(n) for n in invalid)
    assert 0 < claims["event_date"].null_count() <= 4
    assert claims["amount_eur"].min() > 0


def test_claims_memory_is_bounded_by_the_chunk(tmp_path):
    """Many chunks, each written before the next is drawn: files appear one per chunk."""
    from synthetic.claims import write_claims
    from synthetic.people import make_population

    seen = []
    names = write_claims(
        make_population(3, 1),
        10_500,
        tmp_path,
        seed=1,
        chunk_rows=1_000,
        on_chunk=seen.append,
        months=2,
    )
    # 2023-01 holds 5 516 rows, 2023-02 4 984: six and five chunks, and the undated rows
    assert len(names) == 12 and seen == [1_000] * 5 + [516] + [1_000] * 4 + [984]
    assert max(pl.read_parquet(tmp_path / n).height for n in names) == 1_000
