"""The landing sensor registers complete batches as partitions and requests their runs."""

import os
import time

import dagster as dg

from hdh_assets.definitions import build_definitions
from resources.platform import HomeResource


def _evaluate(defs, instance, home, name="dicom_landing_sensor"):
    sensor = defs.resolve_sensor_def(name)
    context = dg.build_sensor_context(
        instance=instance, resources={"hdh_home": HomeResource(root=str(home.root))}
    )
    return sensor(context)


def test_ready_batches_become_partitions_and_runs(hdh_home, monkeypatch):
    monkeypatch.setenv("HDH_LANDING_QUIET_SECONDS", "300")
    landing = hdh_home.landing_for("dicom")
    (landing / "b-ready").mkdir(parents=True)
    (landing / "b-ready" / "a.dcm").write_bytes(b"x")
    (landing / "b-ready" / "_READY").write_text("")
    (landing / "b-busy").mkdir()
    (landing / "b-busy" / "a.dcm").write_bytes(b"x")
    (landing / ".b-partial").mkdir()
    defs = build_definitions(hdh_home)
    with dg.instance_for_test() as instance:
        result = _evaluate(defs, instance, hdh_home)
        assert [r.partition_key for r in result.run_requests] == ["b-ready"]
        assert defs.resolve_sensor_def("dicom_landing_sensor").job_name == "ingest_dicom_batch"
        (request,) = result.dynamic_partitions_requests
        assert list(request.partition_keys) == ["b-ready"]

        # Once registered, the same unchanged batch keeps the same run key (no duplicate run).
        instance.add_dynamic_partitions("dicom_batches", ["b-ready"])
        again = _evaluate(defs, instance, hdh_home)
        assert again.dynamic_partitions_requests == []
        assert again.run_requests[0].run_key == result.run_requests[0].run_key

        # A batch that stays quiet long enough is ready without a marker.
        old = time.time() - 3600
        for path in (landing / "b-busy" / "a.dcm", landing / "b-busy"):
            os.utime(path, (old, old))
        later = _evaluate(defs, instance, hdh_home)
        assert sorted(r.partition_key for r in later.run_requests) == ["b-busy", "b-ready"]


def test_a_batch_ingested_after_its_last_change_is_not_requested_again(hdh_home):
    """After `hdh demo` or `hdh ingest`, the sensor does not ingest the same batch once more."""
    from hdh_cli.demo import register_batches
    from hdh_cli.runs import materialize_selection

    landing = hdh_home.landing_for("dicom") / "done"
    landing.mkdir(parents=True)
    (landing / "a.dcm").write_bytes(b"\0" * 128 + b"DICM")
    (landing / "_READY").write_text("")
    defs = build_definitions(hdh_home)
    with dg.instance_for_test() as instance:
        assert [r.partition_key for r in _evaluate(defs, instance, hdh_home).run_requests] == [
            "done"
        ]
        register_batches(instance, hdh_home, "dicom")
        assert materialize_selection(
            hdh_home, instance, 'key:"imaging/landed_files"', partition="done"
        ).success
        assert _evaluate(defs, instance, hdh_home).run_requests == []
        later = time.time() + 5  # the batch changes after its ingestion: requested again
        os.utime(landing / "a.dcm", (later, later))
        assert [r.partition_key for r in _evaluate(defs, instance, hdh_home).run_requests] == [
            "done"
        ]
