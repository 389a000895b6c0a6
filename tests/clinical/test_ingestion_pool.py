"""JSON batches never overlap: their ingestion step takes the instance's json_ingestion pool,
whichever process runs it (the daemon's run workers, or hdh in its own process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from hdh_assets.clinical.assets import JSON_INGESTION_POOL
from hdh_assets.definitions import build_definitions
from hdh_assets.landing.partitions import BATCH_PARTITIONS
from hdh_cli.ingest import batch_request
from hdh_cli.instance import platform_instance
from synthetic.fhir import write_fhir
from synthetic.people import make_population

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_json_batches_started_together_are_ingested_one_after_the_other(hdh_home):
    for index, batch in enumerate(("b1", "b2")):
        folder = hdh_home.landing_for("json") / batch
        write_fhir(make_population(6, seed=30 + index), {}, folder, seed=index)
    instance = platform_instance(hdh_home)
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    instance.add_dynamic_partitions(BATCH_PARTITIONS["json"].name, ["b1", "b2"])
    graph = build_definitions(hdh_home).resolve_asset_graph()
    keys = batch_request("json", "b1", graph).asset_selection
    selection = " or ".join(f'key:"{k.to_user_string()}"' for k in keys)
    hdh = str(Path(sys.executable).with_name("hdh"))
    # two processes, as two run workers would be, started at the same moment
    processes = [
        subprocess.Popen(
            [hdh, "materialize", selection, "--partition", batch, "--json"],
            env=dict(os.environ),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for batch in ("b1", "b2")
    ]
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, out[-2000:] + err[-2000:]
    windows = []
    for run in instance.get_runs():
        events = {
            e.dagster_event.event_type_value: e.timestamp
            for e in instance.all_logs(run.run_id)
            if e.dagster_event and e.dagster_event.step_key == "json_ingestion"
        }
        windows.append((events["STEP_START"], events["STEP_SUCCESS"]))
    assert len(windows) == 2
    (_, first_end), (second_start, _) = sorted(windows)
    assert second_start >= first_end, "the two ingestions overlapped"
    assert graph.get(dg.AssetKey(["clinical", "patients"])).pools == {JSON_INGESTION_POOL}
