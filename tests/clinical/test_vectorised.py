"""The column-wise NDJSON path gives exactly the per-record path's result: the same tables (same
columns, types and rows), the same pseudonyms and date shifts, the same quarantine with file and
line, the same counts. On the sample, on a Synthea-style export and on hostile lines.

Equal results prove nothing if the lines went one by one (the column-wise path hands back to the
per-record path whatever it cannot vouch for, a whole chunk on an unexpected failure): every
comparison also states how many NDJSON lines were read column-wise and how many went back."""

import base64
import gzip
import hmac
import json
import os
from collections import Counter
from pathlib import Path

import orjson
import polars as pl
import pytest

from hdh_assets.clinical.earlier import RANK, EarlierBatches
from hdh_assets.clinical.ingest import BatchRun, JsonIngestSettings, file_key, ingest_json_batch
from hdh_assets.clinical.providers import Provider
from hdh_assets.clinical.reader import NDJSON_SUFFIXES, batch_files
from hdh_assets.clinical.vectorised import chunking, decoding, driver, rows, shapes
from hdh_assets.pseudonymisation import Pseudonymiser
from hdh_assets.pseudonymisation.bulk import (
    KeyedSha256,
    date_offsets,
    provider_pseudonyms,
    remap_ids,
    subject_pseudonyms,
)
from hdh_assets.pseudonymisation.fhir import remap_id
from hdh_assets.pseudonymisation.identifiers import nir_key
from synthetic.fhir import write_fhir
from synthetic.people import make_population
from synthetic.synthea_style import synthea_style_export
from tests.conftest import identity_needles

KEY = bytes(range(3, 35))
NIR = "185057800608436"
NIR2 = "2690549588157" + nir_key("2690549588157")
NIR3 = "1850578006084"  # without its key
ARABIC_DATE = "\u0662\u0660\u0662\u0663-\u0660\u0661-\u0660\u0661"  # 2023-01-01, Arabic-Indic


def _both(folder: Path, tmp_path: Path, **kwargs):
    """(per-record result, column-wise result, records the column-wise run read one by one)."""
    settings = JsonIngestSettings(KEY, tmp_path / "quarantine", **kwargs.pop("settings", {}))
    slow = ingest_json_batch("b", folder, settings, vectorised=False, **kwargs)
    slow_notes = _notes(tmp_path)
    calls = []
    original = BatchRun.process

    def counted(self, record, key=None, problems=None):
        calls.append(record)
        return original(self, record, key, problems)

    BatchRun.process = counted
    try:
        fast = ingest_json_batch("b", folder, settings, vectorised=True, **kwargs)
    finally:
        BatchRun.process = original
    assert _notes(tmp_path) == slow_notes  # the operators' list of rejected records
    return slow, fast, calls


def _notes(tmp_path: Path) -> list[dict]:
    target = tmp_path / "quarantine" / "b" / "rejected_records.ndjson"
    if not target.exists():
        return []
    notes = [json.loads(line) for line in target.read_text().splitlines()]
    return sorted(notes, key=lambda n: (n["file"], n["line"], n["reason"]))


def _assert_same(slow, fast, *, columnwise: int, per_record: int) -> None:
    """The same result both ways, ``columnwise`` NDJSON lines of it read column-wise and
    ``per_record`` sent back one by one (lines, and the record of a file that stops being
    readable): stated by every comparison, so that the fallback alone cannot pass it."""
    assert set(slow.tables) == set(fast.tables)
    for name in slow.tables:
        a, b = slow.tables[name].lazy().collect(), fast.tables[name].lazy().collect()
        assert a.schema == b.schema, name
        a, b = a.sort(a.columns, nulls_last=True), b.sort(b.columns, nulls_last=True)
        assert a.equals(b), f"{name}: {a.height} rows one by one, {b.height} column-wise"
    columns = slow.quarantine.columns
    assert slow.quarantine.sort(columns).equals(fast.quarantine.sort(columns))
    assert slow.per_file.equals(fast.per_file)
    assert slow.summary() == fast.summary()
    assert slow.rows == fast.rows
    assert slow.path_counts.is_empty()  # the per-record run reads nothing column-wise
    totals = fast.path_totals()
    assert (totals["lines_columnwise"], totals["lines_per_record"]) == (columnwise, per_record)
    files = fast.path_counts.join(fast.per_file, on="file_key")
    assert (files["records_in"] == files["lines_columnwise"] + files["lines_per_record"]).all()


def _ndjson_lines(folder: Path) -> int:
    """Records of the batch's NDJSON files (non-blank lines): all of them column-wise, when the
    files hold nothing the column-wise path has to send back."""
    total = 0
    for path in batch_files(folder):
        if path.name.lower().endswith(NDJSON_SUFFIXES):
            data = path.read_bytes()
            if path.name.lower().endswith(".gz"):
                data = gzip.decompress(data)
            total += sum(1 for line in data.splitlines() if line.strip())
    return total


def _paths_by_file(result, folder: Path) -> dict[str, tuple[int, int]]:
    """Per file name: (lines read column-wise, records sent one by one)."""
    names = {file_key("b", p.relative_to(folder).as_posix()): p.name for p in batch_files(folder)}
    return {
        names[key]: (columnwise, per_record)
        for key, columnwise, per_record in result.path_counts.iter_rows()
    }


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fhir") / "batch"
    write_fhir(make_population(60, 5), {}, folder, seed=5, bundles=3)
    return folder


def test_the_synthetic_export_gives_the_same_tables(export, tmp_path):
    slow, fast, calls = _both(export, tmp_path)
    _assert_same(slow, fast, columnwise=_ndjson_lines(export), per_record=0)
    assert slow.summary()["duplicates"] > 0  # the Bundles repeat NDJSON resources
    # every NDJSON line was handled column-wise: only the Bundles' entries went one by one
    assert calls and all(c.file.startswith("bundles/") for c in calls)


def test_small_chunks_give_the_same_tables(export, tmp_path, monkeypatch):
    monkeypatch.setattr(chunking, "CHUNK_BYTES", 3000)
    slow, fast, _ = _both(export, tmp_path)
    _assert_same(slow, fast, columnwise=_ndjson_lines(export), per_record=0)


def test_the_sample_gives_the_same_tables_and_no_identifier(sample_root, identities, tmp_path):
    batch = sample_root / "landing" / "json" / "sample-seed7"
    slow, fast, _ = _both(batch, tmp_path)
    _assert_same(slow, fast, columnwise=_ndjson_lines(batch), per_record=0)
    text = "\n".join(str(f.lazy().collect().to_dicts()) for f in fast.tables.values())
    needles = identity_needles(identities)
    needles |= {p["address_line"] for p in identities} | {p["birth_date"] for p in identities}
    needles |= {p["hospital_patient_id"] for p in identities}
    needles |= {p["phone"] for p in identities} | {p["nir"] for p in identities}
    assert not [n for n in needles if n in text]
    assert fast.tables["patients"]["birth_date"].str.len_chars().max() == 4


def test_a_synthea_style_export_gives_the_same_tables(tmp_path):
    folder = tmp_path / "synthea"
    people = synthea_style_export(folder, patients=8, seed=4)
    slow, fast, calls = _both(folder, tmp_path)
    types = Counter(
        orjson.loads(line)["resourceType"]
        for path in folder.glob("*.ndjson")
        for line in path.read_bytes().splitlines()
        if line.strip()
    )
    # one by one: the types without a shape, and the Patients (US extensions outside the shape)
    back = sum(n for rtype, n in types.items() if rtype not in shapes.SHAPES or rtype == "Patient")
    _assert_same(slow, fast, columnwise=_ndjson_lines(folder) - back, per_record=back)
    assert slow.summary()["quarantined"] == 0
    text = "\n".join(str(f.lazy().collect().to_dicts()) for f in fast.tables.values())
    needles = {"Quigley282", "9999912345", "316-555-0100"}
    for person in people:
        needles |= {person[k] for k in ("family", "maiden", "ssn", "phone", "line", "mother")}
        needles |= {person["birth_date"], person["id"], *person["given"]}
    assert not [n for n in needles if n in text]
    encoded = [
        base64.b64encode(f"Patient {p['given'][0]} {p['family']}".encode()).decode()[:16]
        for p in people
    ]
    assert not [e for e in encoded if e in text]
    ndjson = sum(len(p.read_text().splitlines()) for p in folder.glob("*.ndjson"))
    assert len([c for c in calls if c.data is not None]) < ndjson  # not all one by one


def test_providers_rules_are_the_same(export, tmp_path):
    for provider in (
        Provider("lab", birth_date="month"),
        Provider("registry", national_identifier_systems=(), birth_date="none"),
    ):
        slow, fast, _ = _both(export, tmp_path, settings={"provider": provider})
        _assert_same(slow, fast, columnwise=_ndjson_lines(export), per_record=0)


# -- hostile lines --------------------------------------------------------------------------------
PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": NIR}],
    "name": [{"family": "LEAKNAME", "given": ["Ana"]}],
    "telecom": [{"system": "phone", "value": "0601020304"}],
    "address": [{"line": ["1 rue LEAKSTREET"], "city": "Lyon"}],
    "birthDate": "1985-05-17",
    "gender": "female",
    "text": {"status": "generated", "div": "<div>LEAKNAME</div>"},
    "meta": {"lastUpdated": "2024-01-01T00:00:00Z"},
}
LOCAL = {"resourceType": "Patient", "id": "p2", "birthDate": "1990-02-03", "gender": "male"}
REF = {"reference": "Patient/p1"}


def _obs(rid: str, **fields) -> dict:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "subject": REF,
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "HbA1c"}]},
        "effectiveDateTime": "2024-01-02T10:00:00+01:00",
        "valueQuantity": {"value": 7.1, "unit": "%", "code": "%"},
        **fields,
    }


def _line(value) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value, ensure_ascii=False).encode()


OBSERVATIONS = [
    _obs("o1"),
    b'{"resourceType": "Observation", "id": "o2", ',  # truncated
    {"id": "o3", "status": "final"},  # no resourceType
    _obs("o4", valueQuantity={"value": "seven"}),  # wrong type
    _obs("o5", subject={"reference": "Patient/nobody"}),  # unknown reference
    b"[1, 2, 3]",
    _obs("o1"),  # exact duplicate
    _obs("o1", status="amended"),  # conflicting version
    b"null",
    b'{"resourceType":"Observation","id":"n1","subject":{"reference":"Patient/p1"},'
    b'"valueQuantity":{"value":NaN}}',
    b'{"resourceType":"Observation","id":"n2","valueQuantity":{"value":-Infinity}}',
    b'{"resourceType":"Observation","id":"n3","subject":{"reference":"Patient/p1"},"text":{"x":NaN}}',
    b'{"resourceType":"Observation","id":"n4","subject":{"reference":"Patient/p1"},"meta":[1,-Infinity]}',
    b'{"resourceType":"Observation","id":"n5","subject":{"reference":"Patient/p1"},"note":[{"v":[[NaN]]}]}',
    _obs("n6", subject={"reference": "Patient/pn"}),
    b"\xef\xbb\xbf" + orjson.dumps(_obs("bom")),
    b"   " + orjson.dumps(_obs("spaced")) + b"   ",
    b'{"resourceType":"Observation","id":"d1","status":"final","status":"amended"}',
    b'{"resourceType":"Observation","id":"d2","subject":{"reference":"Patient/p1"},'
    b'"subject":{"reference":"Patient/p2"},"effectiveDateTime":"2024-01-02"}',
    orjson.dumps(_obs("two1")) + orjson.dumps(_obs("two2")),
    b'{"resourceType":"Observation","id":"s1","status":"\\ud800"}',
    b'{"resourceType":"Observation","id":"u1","status":"fin\xffal"}',
    _obs("deep", extension=json.loads("[" * 900 + "]" * 900)),
    b'{"resourceType":"Observation","id":"deeper","x":' + b"[" * 1500 + b"]" * 1500 + b"}",
    b'{"resourceType":"Observation","id":"deepest","x":' + b"[" * 20000 + b"]" * 20000 + b"}",
    b'{"resourceType":"Observation","id":"nul","status":null,"subject":{"reference":"Patient/p1"}}',
    {"resourceType": "Observation", "id": "i1", "subject": REF, "valueInteger": 7},
    b'{"resourceType":"Observation","id":"i2","valueInteger":7.0}',
    b'{"resourceType":"Observation","id":"i3","valueInteger":18446744073709551615}',
    b'{"resourceType":"Observation","id":"i4","valueInteger":-9223372036854775808}',
    b'{"resourceType":"Observation","id":"f1","valueQuantity":{"value":1e400}}',
    b'{"resourceType":"Observation","id":"f2","subject":{"reference":"Patient/p1"},'
    b'"valueQuantity":{"value":123456789012345678901234567890}}',
    _obs("dt1", effectiveDateTime="2023-02-30"),
    _obs("dt2", effectiveDateTime="2023-02-30T10:00:00Z"),
    _obs("dt3", effectiveDateTime="2023-01-01T24:00:00"),
    _obs("dt4", effectiveDateTime="2023-01-01T10:00"),
    _obs("dt5", effectiveDateTime="2023"),
    _obs("dt6", effectiveDateTime="2023-07"),
    _obs("dt7", effectiveDateTime="2023-01-01T10:00:00.1234567+01:00"),
    _obs("dt8", effectiveDateTime="20230101"),
    _obs("dt9", effectiveDateTime=""),
    _obs("dt10", effectiveDateTime="2024-02-29T23:59:59.5-11:30"),
    _obs("dt11", effectiveDateTime="2024-12-31T23:00:00Z", issued="2024-12-31T23:00:00.123Z"),
    _obs("dt12", effectiveDateTime="0999-01-01"),
    _obs("dt13", effectiveDateTime="2023-01-01\n"),
    _obs("dt14", effectivePeriod={"start": "2023-01-01", "end": "2023-13-01"}),
    _obs("dt15", effectiveDateTime="2023-01-01T10:00:00+24:00"),
    _obs("dt16", effectiveDateTime=ARABIC_DATE),
    _obs("dl1", code={"coding": [{"system": "s", "code": "c", "display": "2024-01-01"}]}),
    _obs("dl2", status="2023-05-05"),
    _obs("dl3", valueQuantity=None, valueString="2023-05-05T10:00:00"),
    _obs("dl4", code={"coding": [{"system": "s", "code": "c", "display": ARABIC_DATE}]}),
    _obs("dl5", code={"coding": [{"display": "only a display"}, {"code": "x"}]}),
    _obs("dl6", valueQuantity=None, valueString="NaN is fine in a text"),
    b'{"resourceType":"Observation","i\\u0064":"esc1","subject":{"reference":"Patient/p1"}}',
    b'{"resourceType":"Observation","id":"o\\u0031x","subject":{"reference":"Patient/p1"}}',
    _obs(""),
    {k: v for k, v in _obs("x").items() if k != "id"},
    b'{"resourceType":"Observation","id":5}',
    _obs("mv1", valueString="a", valueBoolean=True),
    _obs("mv2", valueQuantity=None, valueBoolean=False),
    _obs("mv3", effectivePeriod={"start": "2024-01-01"}),
    _obs(
        "cmp1",
        valueQuantity=None,
        component=[
            {"code": {"coding": [{"code": "a"}]}, "valueQuantity": {"value": 1, "unit": "u"}},
            {"code": {"coding": [{"system": "s"}]}, "valueString": "x", "valueBoolean": True},
        ],
    ),
    _obs(
        "cmp2",
        valueQuantity=None,
        component=[
            {"code": {"text": "no coding"}, "valueRange": {"low": {}, "high": {"code": "mm"}}},
            {"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 3}}},
            {"valueDateTime": "2023-05-06T07:08:09Z", "valueCodeableConcept": None},
            {"valuePeriod": {"start": "2022-02-02"}},
            {"valueTime": "10:00:00"},
        ],
    ),
    _obs("r1", valueQuantity={"value": 5, "unit": "mmHg", "code": ""}),
    _obs("r2", valueQuantity=None, valueRange={"low": {"value": 1, "code": "a"}}),
    _obs("x1", foo=1),
    _obs("x2", code={"coding": [{"system": "s", "code": "c", "extension": []}]}),
    _obs("x3", note=[{"text": "Mr LEAKNAME"}], text={"div": "LEAKNAME"}, meta={"v": 1}),
    _obs("ref1", encounter={"reference": "Encounter/e1/_history/2"}),
    _obs("ref2", encounter={"reference": "http://x.org/fhir/Encounter/e1"}),
    _obs("ref3", encounter={"reference": "urn:uuid:0e2a1b7c-8d9e-4f00-9a1b-2c3d4e5f6a7b"}),
    _obs("ref4", encounter={"reference": "Encounter?identifier=x|1", "display": "LEAKNAME"}),
    _obs("ref5", encounter={"reference": "#c1/x"}),
    _obs("ref6", encounter={"reference": "#c1"}),
    _obs("ref7", encounter={"reference": "Encounter/e1\n"}),
    _obs("g1", subject={"reference": "Group/g1"}),
    _obs("g2", subject={"display": "LEAKNAME"}),
    _obs("g3", subject={"reference": "Patient/p2"}),
    _obs("g4", subject={"reference": "http://x.org/fhir/Patient/p1"}),
    _obs("late1", subject={"reference": "Patient/late"}),
    {"resourceType": "Condition", "id": "mixed1", "subject": REF, "onsetDateTime": "2020-01-01"},
    b'{"resourceType":"Pati\\u0065nt","id":"late","birthDate":"1970-01-01"}',
    _obs("late2", subject={"reference": "Patient/late"}),
    _obs("cat", category=[{"coding": [{"system": "c", "code": "lab"}]}, {"text": "t"}]),
    _obs("nodisplay", code={"coding": []}),
    b"",
    b"   ",
    _obs("last"),
]


def _hostile_batch(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Patient.ndjson").write_bytes(
        b"\n".join(
            _line(x)
            for x in (
                PATIENT,
                LOCAL,
                {**LOCAL, "id": "p3", "identifier": "not a list"},
                {**LOCAL, "id": "p4", "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8"}]},
                {**LOCAL, "id": "p5", "deceasedDateTime": "2020-01-01T00:00:00Z"},
                {**LOCAL, "id": "p6", "deceasedBoolean": True, "birthDate": "19x0"},
                {**LOCAL, "id": "p7", "birthDate": "1990"},
                {**LOCAL, "id": "p8", "extension": [{"url": "u", "valueString": "LEAKNAME"}]},
                {**LOCAL, "id": "p2", "gender": "other"},  # same id, other content
                {
                    **LOCAL,
                    "id": "p9",
                    "identifier": [
                        {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "123"},  # invalid
                        {
                            "system": "https://hl7.fr/ig/fhir/core/NamingSystem/INS-NIR",
                            "value": NIR2,
                        },
                        {"system": "1.2.250.1.213.1.4.8", "value": NIR3},  # this one: 2nd system
                        {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": ""},
                    ],
                },
                {**LOCAL, "id": "p10", "identifier": [{"system": "other", "value": NIR2}, {}]},
                b'{"resourceType":"Patient","id":"pn","text":{"x":NaN}}',
            )
        )
        + b"\n"
    )
    (folder / "Observation.ndjson").write_bytes(
        b"\n".join(_line(x) for x in OBSERVATIONS)  # no newline after the last line
    )
    (folder / "Observation.2.ndjson").write_bytes(
        b"\r\n".join(_line(x) for x in (_obs("o1"), _obs("o5b"), _obs("cmp1", status="x"), b""))
    )
    with gzip.open(folder / "Condition.ndjson.gz", "wb") as handle:
        handle.write(
            orjson.dumps(
                {"resourceType": "Condition", "id": "c1", "subject": REF, "recordedDate": "2021"}
            )
            + b"\n"
        )
    whole = gzip.compress(b"".join(orjson.dumps(_obs(f"gz{i}")) + b"\n" for i in range(400)))
    (folder / "Broken.ndjson.gz").write_bytes(whole[: len(whole) // 2])
    (folder / "Other.ndjson").write_bytes(
        orjson.dumps({"resourceType": "Basic", "id": "b1", "subject": REF}) + b"\n"
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:0e2a1b7c-8d9e-4f00-9a1b-2c3d4e5f6a7b", "resource": _obs("o1")},
            {"fullUrl": "urn:uuid:aa", "resource": _obs("i1", status="changed")},
            {"fullUrl": "urn:uuid:bb", "resource": {**_obs("bundle-1"), "subject": REF}},
        ],
    }
    (folder / "bundles").mkdir(exist_ok=True)
    (folder / "bundles" / "b.json").write_text(json.dumps(bundle))


# lines of the hostile batch read column-wise and one by one, with every decodable line decoded
HOSTILE_COLUMNWISE, HOSTILE_PER_RECORD = 190, 67


def test_hostile_lines_get_the_same_result(tmp_path, monkeypatch):
    monkeypatch.setattr(decoding, "MIN_PIECE", 1)  # every decodable line decoded column-wise
    folder = tmp_path / "hostile"
    _hostile_batch(folder)
    slow, fast, calls = _both(folder, tmp_path)
    _assert_same(slow, fast, columnwise=HOSTILE_COLUMNWISE, per_record=HOSTILE_PER_RECORD)
    assert _paths_by_file(fast, folder) == {
        "Patient.ndjson": (6, 6),
        "Observation.ndjson": (28, 59),  # of the 87 records of OBSERVATIONS
        "Observation.2.ndjson": (3, 0),
        "Condition.ndjson.gz": (1, 0),
        "Broken.ndjson.gz": (152, 1),  # the lines before the cut, and the unreadable record
        "Other.ndjson": (0, 1),  # a Basic: no shape
    }
    reasons = slow.summary()["quarantined_by_reason"]
    assert {"invalid_json", "wrong_type", "unknown_reference", "conflicting_version"} <= set(
        reasons
    )
    assert "invalid_date" in reasons and "unreadable" in reasons
    text = "\n".join(str(f.lazy().collect().to_dicts()) for f in fast.tables.values())
    assert not [n for n in ("LEAKNAME", NIR, "0601020304", "LEAKSTREET", "1985-05-17") if n in text]
    assert len(calls) < sum(1 for _ in OBSERVATIONS) + 420  # some lines went column-wise


def test_resources_naming_no_subject_are_read_column_wise(tmp_path):
    """A piece whose subject references are all absent is read column-wise like any other:
    no subject, no row sent back (and no failure sending the whole chunk one by one)."""
    folder = tmp_path / "no-subject"
    folder.mkdir()
    resources = [{k: v for k, v in _obs(f"ns{i}").items() if k != "subject"} for i in range(3)]
    (folder / "Observation.ndjson").write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in resources)
    )
    slow, fast, calls = _both(folder, tmp_path)
    _assert_same(slow, fast, columnwise=3, per_record=0)
    assert not calls and fast.summary()["ingested"] == 3


SETTINGS = {"CHUNK_BYTES": chunking, "MIN_PIECE": decoding, "PREFETCH": driver}  # their modules


@pytest.mark.parametrize(
    ("settings", "columnwise", "per_record"),
    [
        # pieces of up to 3 lines that do not decode go back whole
        ({"CHUNK_BYTES": 700, "MIN_PIECE": 3}, 187, 70),
        # the next chunk read meanwhile
        (
            {"PREFETCH": True, "CHUNK_BYTES": 2000, "MIN_PIECE": 1},
            HOSTILE_COLUMNWISE,
            HOSTILE_PER_RECORD,
        ),
    ],
    ids=["small-chunks", "prefetching"],
)
def test_hostile_lines_in_small_chunks(tmp_path, monkeypatch, settings, columnwise, per_record):
    for name, value in settings.items():
        monkeypatch.setattr(SETTINGS[name], name, value)
    folder = tmp_path / "hostile"
    _hostile_batch(folder)
    slow, fast, _ = _both(folder, tmp_path)
    _assert_same(slow, fast, columnwise=columnwise, per_record=per_record)


def test_resources_known_from_earlier_batches(tmp_path):
    folder = tmp_path / "hostile"
    _hostile_batch(folder)
    settings = JsonIngestSettings(KEY, tmp_path / "quarantine")
    first = ingest_json_batch("a", folder, settings, vectorised=False)
    earlier = EarlierBatches(
        {t: f.lazy().filter(pl.int_range(pl.len()) % 2 == 0) for t, f in first.tables.items()}
    )  # every other row: some resources are duplicates, the others are not
    slow, fast, _ = _both(folder, tmp_path, earlier=earlier)
    # pieces of up to MIN_PIECE (16) lines that do not decode go back whole
    _assert_same(slow, fast, columnwise=178, per_record=79)
    assert 0 < slow.summary()["duplicates"] < slow.summary()["records_in"]


def test_resources_earlier_batches_hold_are_compared_column_wise(export, tmp_path):
    settings = JsonIngestSettings(KEY, tmp_path / "quarantine")
    first = ingest_json_batch("a", export, settings)
    every_other = pl.int_range(pl.len()) % 2 == 0
    tables = {t: f.lazy().filter(every_other) for t, f in first.tables.items()}
    changed = pl.int_range(pl.len()) % 4 == 0  # an older version of a quarter of them
    tables["observations"] = tables["observations"].with_columns(
        value_quantity=pl.when(changed)
        .then(pl.col("value_quantity") + 1)
        .otherwise(pl.col("value_quantity"))
    )
    earlier = EarlierBatches(
        {t: f.with_columns(pl.lit(0, pl.Int32).alias(RANK)) for t, f in tables.items()}
    )
    slow, fast, calls = _both(export, tmp_path, earlier=earlier)
    _assert_same(slow, fast, columnwise=_ndjson_lines(export), per_record=0)
    summary = fast.summary()
    assert summary["duplicates"] > 0 and summary["newer_versions"] > 0 and summary["ingested"] > 0
    # the NDJSON lines stayed column-wise, those of resources the earlier batch holds included
    assert calls and all(c.file.startswith("bundles/") for c in calls)


def test_batched_keyed_hashes_are_the_per_value_ones():
    for key in (bytes(32), os.urandom(64), os.urandom(100)):
        hasher = KeyedSha256(key)
        for message in (b"", b"x", os.urandom(300)):
            assert hasher.digest(message) == hmac.digest(key, message, "sha256")
        ids = ["a", "é", "x" * 100]
        assert remap_ids(key, "prov", ids) == [remap_id(key, "prov", i) for i in ids]
        pseudonymiser = Pseudonymiser(key if len(key) >= 32 else key * 2, 200)
        names = ["a", "b" * 40]
        assert date_offsets(pseudonymiser.key, 200, names) == [
            pseudonymiser.date_offset_days(n) for n in names
        ]
        nirs = [NIR, NIR2, NIR3, "1 85 05 78 006 084 36", "123", "2A0549588157x"]
        expected = []
        for value in nirs:
            try:
                expected.append(pseudonymiser.subject_pseudonym(value))
            except ValueError:
                expected.append(None)
        assert subject_pseudonyms(pseudonymiser.key, nirs) == expected
        assert provider_pseudonyms(pseudonymiser.key, "lab", ["Patient/a ", "x"]) == [
            pseudonymiser.provider_scoped_pseudonym("lab", "Patient/a "),
            pseudonymiser.provider_scoped_pseudonym("lab", "x"),
        ]


def test_tables_spilled_to_disk_are_the_same(export, tmp_path):
    settings = JsonIngestSettings(KEY, tmp_path / "q")
    slow = ingest_json_batch("b", export, settings, spill=tmp_path / "slow", vectorised=False)
    fast = ingest_json_batch("b", export, settings, spill=tmp_path / "fast", vectorised=True)
    assert isinstance(fast.tables["observations"], pl.LazyFrame)
    _assert_same(slow, fast, columnwise=_ndjson_lines(export), per_record=0)


def test_hostile_lines_with_another_provider(tmp_path, monkeypatch):
    monkeypatch.setattr(decoding, "MIN_PIECE", 1)
    folder = tmp_path / "hostile"
    _hostile_batch(folder)
    provider = Provider(
        "chu",
        national_identifier_systems=(
            "https://hl7.fr/ig/fhir/core/NamingSystem/INS-NIR",
            "urn:oid:1.2.250.1.213.1.4.8",
        ),
        birth_date="month",
    )
    slow, fast, _ = _both(folder, tmp_path, settings={"provider": provider})
    _assert_same(slow, fast, columnwise=HOSTILE_COLUMNWISE, per_record=HOSTILE_PER_RECORD)


def _broken(*args, **kwargs):
    raise RuntimeError("a shape nobody foresaw")


@pytest.mark.parametrize(
    "step",
    [(rows.RowMaker, "rows_of"), (decoding.ShapeDecoder, "decode_type")],
    ids=["rows", "decoding"],
)
def test_an_unexpected_failure_sends_the_chunk_one_by_one(export, tmp_path, monkeypatch, step):
    monkeypatch.setattr(*step, _broken)
    slow, fast, calls = _both(export, tmp_path)
    _assert_same(slow, fast, columnwise=0, per_record=_ndjson_lines(export))
    assert len(calls) == slow.summary()["records_in"]


def test_the_fallback_alone_fails_the_comparison(export, tmp_path, monkeypatch):
    """With the rows of every chunk failing to compute, each line goes one by one and the result
    is still the same: the comparison fails on the lines it states were read column-wise."""
    monkeypatch.setattr(rows.RowMaker, "rows_of", _broken)
    slow, fast, _ = _both(export, tmp_path)
    lines = _ndjson_lines(export)
    _assert_same(slow, fast, columnwise=0, per_record=lines)  # the same tables, one by one
    with pytest.raises(AssertionError):  # what the comparison of the synthetic export states
        _assert_same(slow, fast, columnwise=lines, per_record=0)


def test_the_column_wise_path_never_imports_the_per_record_path():
    """It drives the batch run through its PerRecordPath protocol only: no import of
    hdh_assets.clinical.ingest, not even for annotations (ingest imports it, one direction)."""
    from tests.test_architecture import ROOT, read_imports

    found = [
        f"{imp.where()}: {imp.target}"
        for imp in read_imports(ROOT, ("hdh_assets",))
        if imp.source.startswith("hdh_assets.clinical.vectorised")
        and imp.target.startswith("hdh_assets.clinical.ingest")
    ]
    assert found == []
