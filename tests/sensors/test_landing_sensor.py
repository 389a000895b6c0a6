"""The landing sensor registers complete batches as partitions and requests their runs."""

import json
import os
import shutil
import time

import dagster as dg

from hdh_assets.definitions import build_definitions
from hdh_assets.landing import batches as batches_module
from hdh_assets.landing.batches import landing_batch
from resources.platform import HomeResource
from sensors import landing as landing_module


def _evaluate(defs, instance, home, name="dicom_landing_sensor", cursor=None):
    sensor = defs.resolve_sensor_def(name)
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"hdh_home": HomeResource(root=str(home.root))},
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
    from hdh_cli.runs import execute, selection_request

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
        request = selection_request(defs, 'key:"imaging/landed_files"', partition="done")
        assert execute(defs, instance, request).success
        assert _evaluate(defs, instance, hdh_home).run_requests == []
        later = time.time() + 5  # the batch changes after its ingestion: requested again
        os.utime(landing / "a.dcm", (later, later))
        assert [r.partition_key for r in _evaluate(defs, instance, hdh_home).run_requests] == [
            "done"
        ]


def _land(source_root, name, files):
    with landing_batch(source_root, name) as folder:
        for relative, data in files.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(data)


def test_the_cursor_skips_seen_batches_and_catches_relanded_and_new_ones(hdh_home, monkeypatch):
    monkeypatch.setenv("HDH_LANDING_QUIET_SECONDS", "300")
    landing = hdh_home.landing_for("dicom")
    _land(landing, "b1", {"a.dcm": b"x", "deep/er/b.dcm": b"y"})
    _land(landing, "b2", {"a.dcm": b"z"})
    quiet = landing / "b-quiet"  # ready by the quiet period, no marker
    (quiet / "sub").mkdir(parents=True)
    (quiet / "sub" / "a.dcm").write_bytes(b"q")
    old = time.time() - 3600
    for path in (quiet / "sub" / "a.dcm", quiet / "sub", quiet):
        os.utime(path, (old, old))
    (landing / "b-busy").mkdir()  # changed just now: not ready
    (landing / "b-busy" / "a.dcm").write_bytes(b"x")

    # Count the walks of batch folders and the instance's materialisation look-ups.
    walked: list[str] = []
    real_latest_change = batches_module.latest_change

    def counting_latest_change(folder):
        walked.append(folder.name)
        return real_latest_change(folder)

    monkeypatch.setattr(batches_module, "latest_change", counting_latest_change)
    monkeypatch.setattr(landing_module, "latest_change", counting_latest_change)
    defs = build_definitions(hdh_home)
    with dg.instance_for_test() as instance:
        looked_up: list[str] = []
        real_fetch = instance.fetch_materializations

        def counting_fetch(records_filter, *args, **kwargs):
            looked_up.extend(records_filter.asset_partitions or [])
            return real_fetch(records_filter, *args, **kwargs)

        monkeypatch.setattr(instance, "fetch_materializations", counting_fetch)

        first = _evaluate(defs, instance, hdh_home)
        assert [r.partition_key for r in first.run_requests] == ["b-quiet", "b1", "b2"]
        (request,) = first.dynamic_partitions_requests
        assert sorted(request.partition_keys) == ["b-quiet", "b1", "b2"]
        # Seen and requested batches are in the cursor; the batch not ready yet is not.
        assert sorted(json.loads(first.cursor)) == ["b-quiet", "b1", "b2"]
        instance.add_dynamic_partitions("dicom_batches", list(request.partition_keys))
        first_keys = {r.partition_key: r.run_key for r in first.run_requests}
        # b1 is ingested (the materialisation the run would record)
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=["imaging", "landed_files"], partition="b1")
        )

        # (a) With the cursor, nothing is requested, and no seen batch is walked or looked up:
        # only the batch not ready yet is looked at again.
        walked.clear()
        looked_up.clear()
        second = _evaluate(defs, instance, hdh_home, cursor=first.cursor)
        assert second.run_requests == []
        assert second.dynamic_partitions_requests == []
        assert walked == ["b-busy"]
        assert looked_up == []
        assert second.cursor == first.cursor

        # (b) b1 landed again (same name, a new folder): requested again with a new run key,
        # although it was ingested before; only b1 is examined.
        time.sleep(0.05)  # the new files are later than the materialisation, whatever the clock
        _land(landing, "b1", {"a.dcm": b"x2"})
        walked.clear()
        looked_up.clear()
        third = _evaluate(defs, instance, hdh_home, cursor=second.cursor)
        assert [r.partition_key for r in third.run_requests] == ["b1"]
        assert third.run_requests[0].run_key != first_keys["b1"]
        assert third.dynamic_partitions_requests == []  # b1 is a known partition already
        assert sorted(walked) == ["b-busy", "b1"]
        assert looked_up == ["b1"]
        assert json.loads(third.cursor)["b1"] != json.loads(second.cursor)["b1"]
        assert _evaluate(defs, instance, hdh_home, cursor=third.cursor).run_requests == []

        # (c) A new batch next to the seen ones is requested and registered, alone; a batch
        # that disappeared leaves the cursor.
        _land(landing, "b3", {"a.dcm": b"w"})
        shutil.rmtree(landing / "b2")
        walked.clear()
        looked_up.clear()
        fourth = _evaluate(defs, instance, hdh_home, cursor=third.cursor)
        assert [r.partition_key for r in fourth.run_requests] == ["b3"]
        (request,) = fourth.dynamic_partitions_requests
        assert list(request.partition_keys) == ["b3"]
        assert sorted(walked) == ["b-busy", "b3"]
        assert looked_up == ["b3"]
        assert sorted(json.loads(fourth.cursor)) == ["b-quiet", "b1", "b3"]

        # The batch not ready yet is requested once it is complete.
        (landing / "b-busy" / "_READY").write_text("")
        fifth = _evaluate(defs, instance, hdh_home, cursor=fourth.cursor)
        assert [r.partition_key for r in fifth.run_requests] == ["b-busy"]
        assert "b-busy" in json.loads(fifth.cursor)


def test_an_empty_cursor_does_not_ingest_again_what_was_ingested(hdh_home):
    """After a restart (no cursor), a batch ingested after its last change is only recorded."""
    landing = hdh_home.landing_for("dicom")
    _land(landing, "done", {"a.dcm": b"x"})
    defs = build_definitions(hdh_home)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dicom_batches", ["done"])
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=["imaging", "landed_files"], partition="done")
        )
        for cursor in (None, "", "not json"):
            result = _evaluate(defs, instance, hdh_home, cursor=cursor)
            assert result.run_requests == []
            assert list(json.loads(result.cursor)) == ["done"]
