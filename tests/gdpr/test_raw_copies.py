"""Erasure reaches the raw copies: landed files and quarantined originals lose exactly the person."""

from __future__ import annotations

import gzip
import io
import json
import random
import tarfile
import zipfile
from pathlib import Path

import orjson
import polars as pl

from hdh_assets.gdpr.raw_copies import PersonMatcher, scrub_raw_copies
from synthetic.claims import write_claims
from synthetic.dicom import write_study
from synthetic.fhir import write_fhir
from synthetic.people import make_population

PEOPLE = make_population(4, seed=11)
ERASED, KEPT = PEOPLE[0], PEOPLE[1:]


def _text_of(path: Path) -> bytes:
    if path.suffix == ".parquet":
        return pl.read_parquet(path).write_csv().encode()
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            return b"".join(archive.read(n) for n in archive.namelist())
    if path.name.endswith(".tar.gz"):
        with tarfile.open(path) as archive:
            return b"".join(
                archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()
            )
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def _everything(root: Path) -> bytes:
    return b"\n".join(_text_of(p) for p in sorted(root.rglob("*")) if p.is_file())


def _patient_ids(folder: Path, person) -> set[str]:
    lines = (folder / "Patient.ndjson").read_text().splitlines()
    return {json.loads(line)["id"] for line in lines if person.nir in line}


def _landing(tmp_path: Path) -> tuple[Path, Path]:
    landing, quarantine = tmp_path / "landing", tmp_path / "quarantine"
    fhir = landing / "json" / "b1"
    write_fhir(PEOPLE, {}, fhir, seed=3)
    gz = fhir / "Observation.ndjson.gz"
    gz.write_bytes(gzip.compress((fhir / "Observation.ndjson").read_bytes()))
    (fhir / "Observation.ndjson").unlink()
    write_claims(PEOPLE, 400, landing / "claims" / "c1", seed=5)
    dicom = landing / "dicom" / "d1"
    counter = [0]  # one numbering for the batch, as the generator does
    for person in PEOPLE[:2]:
        write_study(person, random.Random(1), "CT", PEOPLE[0].birth_date, dicom, False, counter)
    files = sorted(dicom.rglob("*.dcm"))
    with zipfile.ZipFile(dicom / "delivery.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for f in files:
            archive.write(f, f.name)
    with tarfile.open(dicom / "delivery.tar.gz", "w:gz") as archive:
        for f in files:
            archive.add(f, f.name)
    # quarantine: a DICOM original and its note, the JSON notes with the raw line
    originals = quarantine / "dicom" / "d1"
    originals.mkdir(parents=True)
    (originals / "abc.bin").write_bytes(files[0].read_bytes())
    (originals / "abc.json").write_text('{"reason": "missing_uid"}')
    notes = quarantine / "json" / "b1" / "rejected_records.ndjson"
    notes.parent.mkdir(parents=True)
    raw = [r for r in (fhir / "Condition.ndjson").read_text().splitlines()]
    notes.write_text(
        "".join(json.dumps({"file": "x", "line": i, "record": r}) + "\n" for i, r in enumerate(raw))
    )
    return landing, quarantine


def test_the_person_leaves_every_raw_copy_and_the_others_stay(tmp_path):
    landing, quarantine = _landing(tmp_path)
    fhir = landing / "json" / "b1"
    erased_ids, kept_ids = _patient_ids(fhir, ERASED), _patient_ids(fhir, KEPT[0])
    matcher = PersonMatcher.for_nir(ERASED.nir).with_patients(erased_ids)
    before = _everything(tmp_path)
    assert matcher.mentions(before)  # the fixture does hold the person, in every area
    claims_before = pl.read_parquet(landing / "claims" / "c1").height

    report = scrub_raw_copies({"landing": landing, "quarantine": quarantine}, ERASED.nir)

    after = _everything(tmp_path)
    assert not matcher.mentions(after)
    assert report.to_json()["raw_copies_clean"] is True
    for person in KEPT:  # nobody else lost anything
        assert before.count(person.nir.encode()) == after.count(person.nir.encode()), person.index
    for pid in kept_ids:
        assert f"Patient/{pid}".encode() in after
    areas = {f.to_json()["area"] for f in report.files}
    assert {"landing/json/b1", "landing/claims/c1", "landing/dicom/d1"} <= areas
    assert {"quarantine/dicom/d1", "quarantine/json/b1"} <= areas
    claims = pl.read_parquet(landing / "claims" / "c1")
    removed = sum(
        f.records_removed for f in report.files if f.to_json()["area"] == "landing/claims/c1"
    )
    assert claims.height == claims_before - removed > 0
    assert not (quarantine / "dicom" / "d1" / "abc.bin").exists()
    assert not (quarantine / "dicom" / "d1" / "abc.json").exists()  # the note went with it
    with zipfile.ZipFile(landing / "dicom" / "d1" / "delivery.zip") as archive:
        assert archive.namelist()  # the other person's instances are still delivered
    # a Bundle lost the person's entries but stays a Bundle
    for bundle in (fhir / "bundles").glob("*.json"):
        assert orjson.loads(bundle.read_bytes())["resourceType"] == "Bundle"
    # reports never name a file by its path (providers put names in file names)
    assert all(len(f.file_sha256) == 64 for f in report.files)
    assert ERASED.family_name.encode() not in json.dumps(report.to_json()).encode()


def test_a_second_scrub_finds_nothing_left(tmp_path):
    landing, quarantine = _landing(tmp_path)
    roots = {"landing": landing, "quarantine": quarantine}
    assert scrub_raw_copies(roots, ERASED.nir).files
    again = scrub_raw_copies(roots, ERASED.nir)
    assert again.files == [] and again.remaining == []


def test_a_damaged_archive_holding_the_nir_is_removed_whole(tmp_path):
    landing = tmp_path / "landing" / "dicom" / "d2"
    landing.mkdir(parents=True)
    damaged = landing / "broken.zip"
    damaged.write_bytes(b"PK\x03\x04 truncated " + ERASED.nir.encode())
    report = scrub_raw_copies({"landing": tmp_path / "landing"}, ERASED.nir)
    assert not damaged.exists()
    assert [f.action for f in report.files] == ["deleted"]


def test_the_person_is_found_by_the_nir_body_even_with_a_wrong_key():
    wrong_key = ERASED.nir[:13] + ("00" if ERASED.nir[13:] != "00" else "01")
    assert PersonMatcher.for_nir(ERASED.nir).mentions(io.BytesIO(wrong_key.encode()).read())


def _patient(pid: str, nir: str, system: str = "urn:oid:1.2.250.1.213.1.4.8") -> dict:
    return {"resourceType": "Patient", "id": pid, "identifier": [{"system": system, "value": nir}]}


def _observation(oid: str, pid: str) -> dict:
    return {"resourceType": "Observation", "id": oid, "subject": {"reference": f"Patient/{pid}"}}


def test_references_match_whole_and_a_relatives_record_stays(tmp_path):
    """Patient/12 is not Patient/123, and a child whose record carries the erased parent's NIR
    as a secondary identifier is not the parent."""
    parent, other = ERASED, KEPT[0]
    child = _patient("77", KEPT[1].nir)
    child["identifier"].append({"system": "urn:example:parent-nir", "value": parent.nir})
    lines = [
        _patient("12", parent.nir),
        _patient("123", other.nir),
        child,
        _observation("o1", "12"),
        _observation("o2", "123"),
        _observation("o3", "77"),
    ]
    batch = tmp_path / "landing" / "json" / "b1"
    batch.mkdir(parents=True)
    (batch / "all.ndjson").write_text("".join(json.dumps(r) + "\n" for r in lines))
    report = scrub_raw_copies({"landing": tmp_path / "landing"}, parent.nir)
    left = [json.loads(line)["id"] for line in (batch / "all.ndjson").read_text().splitlines()]
    assert left == ["123", "77", "o2", "o3"]
    assert report.to_json()["raw_copies_clean"] is True


def test_an_nir_written_with_separators_or_lower_case_is_found(tmp_path):
    spaced = " ".join([ERASED.nir[:1], ERASED.nir[1:3], ERASED.nir[3:5], ERASED.nir[5:]])
    dotted = ".".join([ERASED.nir[:5], ERASED.nir[5:10], ERASED.nir[10:]]).lower()
    batch = tmp_path / "landing" / "json" / "b2"
    batch.mkdir(parents=True)
    rows = [_patient("a", spaced), _patient("b", dotted), _patient("c", KEPT[0].nir)]
    (batch / "p.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scrub_raw_copies({"landing": tmp_path / "landing"}, ERASED.nir)
    left = [json.loads(line)["id"] for line in (batch / "p.ndjson").read_text().splitlines()]
    assert left == ["c"]


def test_an_archive_is_recognised_by_its_content_and_keeps_the_others(tmp_path):
    dicom = tmp_path / "studies"
    counter = [0]
    for person in PEOPLE[:2]:
        write_study(person, random.Random(2), "MR", PEOPLE[0].birth_date, dicom, False, counter)
    landed = tmp_path / "landing" / "dicom" / "cd"
    landed.mkdir(parents=True)
    export = landed / "CD_EXPORT"  # no extension, as CD exports come
    with zipfile.ZipFile(export, "w", zipfile.ZIP_DEFLATED) as archive:
        for f in sorted(dicom.rglob("*")):
            if f.is_file():
                archive.write(f, f.relative_to(dicom).as_posix())
    before = len(zipfile.ZipFile(export).namelist())
    report = scrub_raw_copies({"landing": tmp_path / "landing"}, ERASED.nir)
    import pydicom

    with zipfile.ZipFile(export) as archive:
        names = archive.namelist()
        patients = {
            pydicom.dcmread(io.BytesIO(archive.read(n)), force=True).PatientID for n in names
        }
    assert 0 < len(names) < before and patients == {KEPT[0].nir}
    assert report.to_json()["raw_copies_clean"] is True


def test_a_damaged_parquet_file_does_not_stop_the_erasure(tmp_path):
    batch = tmp_path / "landing" / "claims" / "c9"
    batch.mkdir(parents=True)
    (batch / "broken.parquet").write_bytes(b"PAR1 truncated")
    (batch / "notes.csv").write_text(f"{ERASED.nir},x\n{KEPT[0].nir},y\n")
    report = scrub_raw_copies({"landing": tmp_path / "landing"}, ERASED.nir)
    assert len(report.unreadable) == 1 and (batch / "broken.parquet").exists()
    assert (batch / "notes.csv").read_text() == f"{KEPT[0].nir},y\n"
