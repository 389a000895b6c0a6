"""Batch ingestion: every file ends in one state, counts reconcile, reruns change nothing."""

import hashlib
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pydicom
import pydicom.data
import pytest

from hdh_assets.imaging import ingest
from hdh_assets.imaging.ingest import DUPLICATE, INGESTED, QUARANTINED, IngestSettings, ingest_batch
from tests.conftest import identity_needles

KEY = bytes(range(100, 132))
PYDICOM_FILES = [Path(p) for p in pydicom.data.get_testdata_files() if Path(p).is_file()]


def _settings(root: Path, workers: int = 2) -> IngestSettings:
    return IngestSettings(
        KEY, root / "store" / "dicom", root / "quarantine" / "dicom", workers=workers
    )


def _tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".staging" not in p.parts
    }


@pytest.fixture(scope="module")
def corpus_batch(tmp_path_factory) -> Path:
    """pydicom's test files at several depths, plus archives, a repeat and a broken archive."""
    batch = tmp_path_factory.mktemp("corpus") / "batch"
    for index, path in enumerate(PYDICOM_FILES):
        target = batch / f"d{index % 4}" / f"{index:03d}_{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    small = pydicom.data.get_testdata_file("CT_small.dcm")
    shutil.copyfile(small, batch / "again_CT_small.dcm")  # same instance, same bytes: a duplicate
    with zipfile.ZipFile(batch / "study.zip", "w") as archive:
        archive.write(pydicom.data.get_testdata_file("MR_small.dcm"), "DUPONT/MR_small.dcm")
        archive.write(pydicom.data.get_testdata_file("rtplan.dcm"), "rtplan.dcm")
        archive.writestr("../escape.dcm", b"whatever")
    with tarfile.open(batch / "study.tar.gz", "w:gz") as archive:
        archive.add(pydicom.data.get_testdata_file("rtstruct.dcm"), "rt/rtstruct.dcm")
    (batch / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    return batch


@pytest.fixture(scope="module")
def corpus_result(corpus_batch, tmp_path_factory):
    root = tmp_path_factory.mktemp("platform")
    return root, ingest_batch("corpus", corpus_batch, _settings(root))


def test_every_file_is_classified_and_the_counts_reconcile(corpus_result, corpus_batch):
    _, result = corpus_result
    summary = result.summary()
    plain_files = [
        p for p in corpus_batch.rglob("*") if p.is_file() and p.suffix not in (".zip", ".gz")
    ]
    single_gz = [p for p in corpus_batch.rglob("*.gz") if not p.name.endswith(".tar.gz")]
    # zip members, the tar member, the broken zip, and one member per single-file .gz
    assert summary["landed"] == len(plain_files) + 3 + 1 + 1 + len(single_gz)
    assert summary["landed"] == summary["ingested"] + summary["duplicates"] + summary["quarantined"]
    assert summary["ingested"] > 100  # the corpus repeats many SOP Instance UIDs (uid_conflict)
    assert summary["duplicates"] >= 1
    assert {"not_dicom", "truncated", "dicomdir", "bad_archive"} <= set(
        summary["quarantined_by_reason"]
    )
    states = {o.name: o.state for o in result.outcomes}
    assert states["again_CT_small.dcm"] == DUPLICATE or any(
        n.endswith("CT_small.dcm") and s == DUPLICATE for n, s in states.items()
    )
    assert states["study.zip!DUPONT/MR_small.dcm"] in (
        INGESTED,
        DUPLICATE,
    )  # MR_small is also loose
    assert states["study.zip!../escape.dcm"] == QUARANTINED
    assert states["study.tar.gz!rt/rtstruct.dcm"] in (INGESTED, DUPLICATE)
    assert states["broken.zip"] == QUARANTINED


def test_store_holds_exactly_the_ingested_files_and_each_reads_back(corpus_result):
    root, result = corpus_result
    stored = sorted((root / "store" / "dicom").rglob("*.dcm"))
    index = result.index()
    assert len(stored) == index.height == result.count(INGESTED)
    assert sorted(str(p.relative_to(root / "store" / "dicom")) for p in stored) == sorted(
        index["store_path"]
    )
    for path in stored:
        ds = pydicom.dcmread(path)
        assert path.stem == ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.PatientIdentityRemoved == "YES"
        assert not any(elem.tag.is_private for elem in ds.iterall())
    assert index["sop_instance_uid"].is_unique().all()
    assert index["sha256"].null_count() == 0


def test_quarantine_keeps_originals_outside_the_store(corpus_result):
    root, result = corpus_result
    folder = root / "quarantine" / "dicom" / "corpus"
    notes = list(folder.glob("*.json"))
    assert len(notes) == len(
        {o.source_sha256 or o.name for o in result.outcomes if o.state == QUARANTINED}
    )
    frame = result.quarantine()
    assert frame.height == result.count(QUARANTINED)
    assert set(frame.columns) == {"file_sha256", "reason", "message"}  # no path in the lake


@pytest.mark.slow
def test_rerun_is_byte_identical_and_adds_nothing(corpus_batch, corpus_result, tmp_path):
    root, first = corpus_result
    again = ingest_batch("corpus", corpus_batch, _settings(root))
    assert again.summary() == first.summary()
    fresh_root = tmp_path / "fresh"
    ingest_batch("corpus", corpus_batch, _settings(fresh_root, workers=1))
    assert _tree(root / "store" / "dicom") == _tree(fresh_root / "store" / "dicom")


def test_a_run_killed_mid_batch_loses_nothing_when_run_again(corpus_batch, tmp_path, monkeypatch):
    real_replace = os.replace
    calls = {"n": 0}

    def dying_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        ingest_batch("corpus", corpus_batch, _settings(tmp_path / "a", workers=1))
    monkeypatch.setattr(os, "replace", real_replace)
    assert 0 < len(list((tmp_path / "a" / "store" / "dicom").rglob("*.dcm"))) < 100
    result = ingest_batch("corpus", corpus_batch, _settings(tmp_path / "a", workers=1))
    clean = ingest_batch("corpus", corpus_batch, _settings(tmp_path / "b", workers=1))
    assert result.summary() == clean.summary()
    assert _tree(tmp_path / "a" / "store" / "dicom") == _tree(tmp_path / "b" / "store" / "dicom")


@pytest.mark.slow
def test_a_batch_delivered_again_is_all_duplicates(corpus_batch, corpus_result, tmp_path):
    root, first = corpus_result
    taken = dict(zip(first.index()["sop_instance_uid"], first.index()["sha256"], strict=True))
    second = ingest_batch("redelivery", corpus_batch, _settings(root), taken_elsewhere=taken)
    assert second.count(INGESTED) == 0
    assert second.count(DUPLICATE) == first.count(INGESTED) + first.count(DUPLICATE)


def test_no_synthetic_identity_reaches_the_store(sample_root, identities, tmp_path):
    batch = sample_root / "landing" / "dicom" / "sample-seed7"
    originals = [pydicom.dcmread(p) for p in batch.rglob("*.dcm") if p.parent.name != "misc"]
    result = ingest_batch("s", batch, _settings(tmp_path))
    assert result.count(INGESTED) > 20
    needles = identity_needles(identities)
    needles |= {str(ds.SOPInstanceUID) for ds in originals} | {
        str(ds.StudyInstanceUID) for ds in originals
    }
    needles |= {str(ds.InstitutionName) for ds in originals} | {
        str(ds.ReferringPhysicianName) for ds in originals
    }
    for path in (tmp_path / "store").rglob("*.dcm"):
        raw = path.read_bytes()
        text = raw.decode("latin-1") + raw.decode("utf-8", errors="ignore")
        leaked = [n for n in needles if n in text]
        assert not leaked, f"{len(leaked)} identifiers in {path.name}"
    lake_text = str(result.index().to_dicts()) + result.quarantine().write_csv()
    assert not [n for n in needles if n in lake_text]


def test_a_leaking_profile_is_stopped_before_the_store(corpus_batch, tmp_path, monkeypatch):
    """If de-identification had a bug that kept a name, the file is quarantined, not stored."""
    import hdh_assets.pseudonymisation.dicom as dicom

    real_rule_for = dicom.rule_for

    def keep_names(tag):
        if tag == 0x00080080:  # Institution Name kept by mistake
            return None
        return real_rule_for(tag)

    monkeypatch.setattr(dicom, "rule_for", keep_names)
    monkeypatch.setattr(ingest, "_ENGINES", {})  # engines cache each attribute's action
    result = ingest_batch("leaky", corpus_batch, _settings(tmp_path, workers=1))
    reasons = result.quarantined_by_reason
    assert reasons.get("identifier_leak", 0) > 0
    stored = list((tmp_path / "store" / "dicom").rglob("*.dcm"))
    assert len(stored) == result.count(INGESTED)


def test_uids_that_are_paths_never_leave_the_store(tmp_path):
    """A UID such as '../a' is remapped like any other, so it can never name a path."""
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.Modality = "Dupont^Jean", "LOCAL12345", "OT"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "..", "..", "../../../escaped"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    batch = tmp_path / "landing" / "b"
    batch.mkdir(parents=True)
    ds.save_as(batch / "odd.dcm", enforce_file_format=True)
    result = ingest_batch("b", batch, _settings(tmp_path / "home", workers=1))
    assert result.count(INGESTED) == 1
    stored = list(tmp_path.rglob("*.dcm"))
    assert {p.parent.parent.parent.name for p in stored if "store" in p.parts} == {"dicom"}
    assert not (tmp_path / "escaped.dcm").exists() and "escaped" not in str(stored)


def test_a_leak_is_caught_even_when_a_removed_attribute_repeats_the_value(tmp_path, monkeypatch):
    """The leak check only excuses values that a kept attribute legitimately carries."""
    from pydicom.dataset import Dataset, FileMetaDataset

    import hdh_assets.pseudonymisation.dicom as dicom

    real_rule_for = dicom.rule_for
    monkeypatch.setattr(
        dicom, "rule_for", lambda tag: None if tag == 0x00080080 else real_rule_for(tag)
    )
    monkeypatch.setattr(ingest, "_ENGINES", {})  # engines cache each attribute's action
    ds = Dataset()
    ds.PatientID, ds.Modality, ds.SOPClassUID = "LOCAL1", "OT", "1.2.840.10008.5.1.4.1.1.7"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "1.2.3", "1.2.3.4", "1.2.3.4.5"
    ds.InstitutionName = "Clinique Sainte-Odile"  # kept by the (deliberately) broken rule
    ds.StudyDescription = "Clinique Sainte-Odile"  # removed by the basic profile
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    batch = tmp_path / "landing" / "b"
    batch.mkdir(parents=True)
    ds.save_as(batch / "one.dcm", enforce_file_format=True)
    result = ingest_batch("b", batch, _settings(tmp_path / "home", workers=1))
    assert result.quarantined_by_reason == {"identifier_leak": 1}
