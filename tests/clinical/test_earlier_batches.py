"""A resource delivered again in a later batch is a duplicate, not a second row; a changed one is
a newer version. Compared on the rows the lake holds, so NDJSON and Bundle deliveries match."""

import json
import shutil
from pathlib import Path

import orjson
import polars as pl
import pytest

from hdh_assets.clinical.earlier import RANK, EarlierBatches
from hdh_assets.clinical.flatten import ALL_TABLES
from hdh_assets.clinical.ingest import JsonIngestSettings, ingest_json_batch

KEY = bytes(range(11, 43))


def _settings(tmp_path: Path) -> JsonIngestSettings:
    return JsonIngestSettings(KEY, tmp_path / "quarantine")


def _earlier(*results) -> EarlierBatches:
    """What the lake would hold after these batches, in this order (the asset reads the same
    from Parquet, with each batch's place in arrival order)."""
    return EarlierBatches(
        {
            t: pl.concat(
                [
                    r.tables[t].lazy().with_columns(pl.lit(rank, pl.Int32).alias(RANK))
                    for rank, r in enumerate(results)
                ]
            )
            for t in ALL_TABLES
        }
    )


def _paths(vectorised: bool, files: int, columnwise: int) -> dict[str, int]:
    """What ``path_totals()`` must report: in the column-wise variant every NDJSON line read
    column-wise (else both variants would test the per-record path), nothing in the other."""
    if not vectorised:
        return {"files": 0, "lines_columnwise": 0, "lines_per_record": 0}
    return {"files": files, "lines_columnwise": columnwise, "lines_per_record": 0}


def _total_rows(result) -> int:
    return sum(frame.lazy().select(pl.len()).collect().item() for frame in result.tables.values())


@pytest.mark.parametrize("vectorised", [True, False], ids=["column-wise", "per-record"])
def test_a_batch_delivered_twice_adds_no_row(sample_root, tmp_path, vectorised):
    folder = sample_root / "landing" / "json" / "sample-seed7"
    first = ingest_json_batch("first", folder, _settings(tmp_path), vectorised=vectorised)
    again = ingest_json_batch(
        "again", folder, _settings(tmp_path), earlier=_earlier(first), vectorised=vectorised
    )
    summary = again.summary()
    assert summary["ingested"] == 0 and summary["newer_versions"] == 0
    assert summary["records_in"] == first.summary()["records_in"]
    assert summary["duplicates"] == summary["records_in"] - summary["quarantined"]
    assert _total_rows(again) == 0 < _total_rows(first)
    counts = again.per_file
    assert (counts["records_in"] == counts["duplicates"] + counts["quarantined"]).all()
    ndjson = list(folder.glob("*.ndjson"))
    lines = sum(len(p.read_bytes().splitlines()) for p in ndjson)
    assert again.path_totals() == _paths(vectorised, len(ndjson), lines)


def test_resources_sent_as_ndjson_then_in_bundles_are_duplicates(sample_root, tmp_path):
    sample = sample_root / "landing" / "json" / "sample-seed7"
    ndjson, bundles = tmp_path / "ndjson", tmp_path / "bundles"
    ndjson.mkdir()
    for path in sample.glob("*.ndjson"):
        shutil.copy(path, ndjson)
    shutil.copytree(sample / "bundles", bundles)
    first = ingest_json_batch("first", ndjson, _settings(tmp_path))
    second = ingest_json_batch("second", bundles, _settings(tmp_path), earlier=_earlier(first))
    entries = sum(len(json.loads(p.read_text())["entry"]) for p in bundles.glob("*.json"))
    summary = second.summary()
    assert summary["records_in"] == entries == summary["duplicates"]
    assert summary["ingested"] == 0


@pytest.mark.parametrize("vectorised", [True, False], ids=["column-wise", "per-record"])
def test_a_changed_resource_is_a_newer_version(tmp_path, vectorised):
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female"}

    def observation(oid: str, value: float) -> dict:
        return {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
            "effectiveDateTime": "2024-01-02T10:00:00Z",
            "valueQuantity": {"value": value, "unit": "%"},
        }

    def batch(name: str, observations: list[dict]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "Patient.ndjson").write_bytes(orjson.dumps(patient) + b"\n")
        (folder / "Observation.ndjson").write_bytes(
            b"".join(orjson.dumps(o) + b"\n" for o in observations)
        )
        return folder

    first = ingest_json_batch(
        "first",
        batch("first", [observation("o1", 6.1), observation("o2", 7.0)]),
        _settings(tmp_path),
        vectorised=vectorised,
    )
    second = ingest_json_batch(
        "second",
        batch("second", [observation("o1", 6.1), observation("o2", 7.4), observation("o3", 5.9)]),
        _settings(tmp_path),
        earlier=_earlier(first),
        vectorised=vectorised,
    )
    summary = second.summary()
    assert summary["records_in"] == 4
    assert summary["duplicates"] == 2  # the patient and o1, unchanged
    assert summary["ingested"] == 2 and summary["newer_versions"] == 1  # o2 changed, o3 new
    values = sorted(second.tables["observations"].lazy().collect()["value_quantity"].to_list())
    assert values == [5.9, 7.4]
    assert second.tables["codings"].lazy().collect().height == 2  # codings of o2 and o3 only
    assert second.tables["patients"].lazy().collect().height == 0
    assert second.path_totals() == _paths(vectorised, 2, 4)

    # a third batch repeating the second: o2's current version is the second batch's, so it
    # is a duplicate although the first batch holds an older version of it
    third = ingest_json_batch(
        "third",
        batch("third", [observation("o2", 7.4), observation("o1", 6.1)]),
        _settings(tmp_path),
        earlier=_earlier(first, second),
        vectorised=vectorised,
    )
    summary = third.summary()
    assert (summary["duplicates"], summary["ingested"], summary["newer_versions"]) == (3, 0, 0)
    assert third.path_totals() == _paths(vectorised, 2, 3)
    # and going back to the first value is a newer version again
    fourth = ingest_json_batch(
        "fourth",
        batch("fourth", [observation("o2", 7.0)]),
        _settings(tmp_path),
        earlier=_earlier(first, second, third),
        vectorised=vectorised,
    )
    assert fourth.summary()["newer_versions"] == 1
    assert fourth.path_totals() == _paths(vectorised, 2, 2)


def test_declared_records_delivered_again_are_duplicates(tmp_path):
    from hdh_assets.clinical.providers import load_providers

    schema = {"type": "object", "required": ["nir", "score"]}
    (tmp_path / "visits.schema.json").write_text(json.dumps(schema))
    config = tmp_path / "providers.yaml"
    config.write_text(
        "providers:\n  registry:\n    records:\n      - name: visits\n"
        "        files: 'visits*.ndjson'\n        schema: visits.schema.json\n"
        "        subject_field: nir\n"
    )
    provider = load_providers(config)["registry"]
    settings = JsonIngestSettings(KEY, tmp_path / "q", provider=provider)
    records = [{"nir": "269054958815780", "score": s} for s in (1, 2)]

    def batch(name: str, rows: list[dict]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "visits.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        return folder

    first = ingest_json_batch("first", batch("first", records), settings)
    second = ingest_json_batch(
        "second",
        batch("second", [*records, {"nir": "269054958815780", "score": 3}]),
        settings,
        earlier=_earlier(first),
    )
    summary = second.summary()
    assert (summary["records_in"], summary["duplicates"], summary["ingested"]) == (3, 2, 1)


def test_identities_computed_by_polars_are_the_per_resource_ones():
    from hdh_assets.clinical.identity import id_identities, id_identity
    from hdh_assets.pseudonymisation.fhir import remap_id

    ids = [remap_id(KEY, "p", str(i)) for i in range(50)] + ["local-id", "ABCDEF", "é" * 32]
    types = [("Observation", "Patient", "Basic")[i % 3] for i in range(len(ids))]
    found = id_identities(pl.LazyFrame({"t": types, "i": ids}))
    assert sorted(found.tolist()) == sorted(
        id_identity(t, i) for t, i in zip(types, ids, strict=True)
    )
    assert len(set(found.tolist())) == len(ids)


@pytest.mark.parametrize("vectorised", [True, False], ids=["column-wise", "per-record"])
def test_a_new_coding_is_a_newer_version_and_later_records_compare_with_it(tmp_path, vectorised):
    patient = {"resourceType": "Patient", "id": "p1", "gender": "male"}
    loinc = {"system": "http://loinc.org", "code": "2345-7"}

    def observation(oid: str, codings: list[dict], value: float = 5.2) -> dict:
        return {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": codings},
            "effectiveDateTime": "2024-03-04T08:00:00Z",
            "valueQuantity": {"value": value, "unit": "mmol/L"},
        }

    def batch(name: str, observations: list[dict], bundled: list[dict] = ()) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "Patient.ndjson").write_bytes(orjson.dumps(patient) + b"\n")
        (folder / "Observation.ndjson").write_bytes(
            b"".join(orjson.dumps(o) + b"\n" for o in observations)
        )
        if bundled:
            (folder / "bundles").mkdir()
            entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in bundled]
            bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
            (folder / "bundles" / "b.json").write_bytes(orjson.dumps(bundle))
        return folder

    settings = _settings(tmp_path)
    first = ingest_json_batch(
        "first", batch("first", [observation("o1", [loinc]), observation("o2", [loinc])]), settings
    )
    snomed = {"system": "http://snomed.info/sct", "code": "33747003"}
    second = ingest_json_batch(
        "second",
        batch(
            "second",
            [observation("o1", [loinc, snomed]), observation("o2", [loinc])],
            bundled=[observation("o2", [loinc]), observation("o1", [loinc, snomed], 9.9)],
        ),
        settings,
        earlier=_earlier(first),
        vectorised=vectorised,
    )
    summary = second.summary()
    assert summary["records_in"] == 5
    assert (summary["ingested"], summary["newer_versions"]) == (1, 1)  # o1: one more coding
    assert summary["duplicates"] == 3  # the patient, o2, and o2 again in the Bundle
    assert summary["quarantined_by_reason"] == {"conflicting_version": 1}  # o1 changed again
    codings = second.tables["codings"].lazy().collect()
    assert sorted(codings["system"].to_list()) == ["http://loinc.org", "http://snomed.info/sct"]
    assert second.tables["observations"].lazy().collect()["value_quantity"].to_list() == [5.2]
    assert second.path_totals() == _paths(vectorised, 2, 3)  # the Bundle's entries: one by one
