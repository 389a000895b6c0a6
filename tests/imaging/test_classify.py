"""Classification of landed files, on pydicom's 190+ real and broken files and on the sample."""

from pathlib import Path

import pydicom.data
from hypothesis import given
from hypothesis import strategies as st

from hdh_assets.imaging.classify import Reason, classify_bytes

PYDICOM_FILES = [Path(p) for p in pydicom.data.get_testdata_files() if Path(p).is_file()]


def test_every_pydicom_test_file_is_classified_without_a_crash():
    outcomes = {p: classify_bytes(p.read_bytes()) for p in PYDICOM_FILES}
    assert len(outcomes) > 170
    accepted = [p for p, c in outcomes.items() if c.ok]
    assert len(accepted) > 120
    for path, outcome in outcomes.items():
        assert outcome.ok == (outcome.dataset is not None), path.name
        assert outcome.ok or outcome.message, path.name
    by_name = {p.name: c for p, c in outcomes.items()}
    assert by_name["MR_truncated.dcm"].reason == Reason.TRUNCATED
    assert by_name["README.txt"].reason == Reason.NOT_DICOM
    assert by_name["DICOMDIR"].reason == Reason.DIRECTORY_ONLY
    assert by_name["CT_small.dcm"].ok
    assert by_name["rtplan.dcm"].ok
    # A dataset written without File Meta is still recognised, and read leniently.
    assert by_name["no_meta_group_length.dcm"].reason in (None, Reason.MISSING_REQUIRED_UIDS)
    assert by_name["ExplVR_BigEndNoMeta.dcm"].ok
    assert not by_name["ExplVR_BigEndNoMeta.dcm"].has_file_meta


@given(st.text(min_size=1, max_size=400))
def test_text_is_never_a_dataset(text):
    outcome = classify_bytes(text.encode())
    assert outcome.reason in (
        Reason.NOT_DICOM,
        Reason.UNREADABLE,
        Reason.MISSING_REQUIRED_UIDS,
        Reason.TRUNCATED,
    )
    assert outcome.dataset is None


def test_sample_files_are_classified_as_the_generator_meant(sample_root):
    batch = sample_root / "landing/dicom/sample-seed7"
    misc = {p.name: classify_bytes(p.read_bytes()).reason for p in (batch / "misc").iterdir()}
    garbage = misc.pop("garbage_after_preamble.dcm")
    assert garbage in (Reason.UNREADABLE, Reason.MISSING_REQUIRED_UIDS)  # parses into nonsense
    assert misc == {
        "README-scanner.dcm": Reason.NOT_DICOM,
        "truncated.dcm": Reason.TRUNCATED,
        "empty.dcm": Reason.EMPTY,
        "no_sop_instance_uid.dcm": Reason.MISSING_REQUIRED_UIDS,
    }
    studies = [
        p
        for p in batch.rglob("*")
        if p.is_file() and p.parent.name != "misc" and p.name != "_READY"
    ]
    reasons = {classify_bytes(p.read_bytes()).reason for p in studies}
    assert reasons == {None, Reason.BURNED_IN_ANNOTATION}


def test_messages_never_quote_file_content():
    data = b"\0" * 128 + b"DICM" + b"DUPONT^JEAN" * 20
    outcome = classify_bytes(data)
    assert not outcome.ok
    assert "DUPONT" not in outcome.message
