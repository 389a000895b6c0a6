"""JSON batches never overlap: their ingestion step takes the instance's json_ingestion pool,
whichever process runs it (the daemon's run workers, or hdh in its own process)."""

from __future__ import annotations

import threading

import dagster as dg
import pytest

from hdh_assets.clinical.assets import JSON_INGESTION_POOL
from hdh_assets.definitions import build_definitions
from hdh_assets.landing.partitions import BATCH_PARTITIONS
from hdh_cli.ingest import batch_request
from hdh_cli.instance import platform_instance
from hdh_cli.runs import execute
from synthetic.fhir import write_fhir
from synthetic.people import make_population


@pytest.mark.slow
def test_two_json_batches_started_together_are_ingested_one_after_the_other(hdh_home):
    for index, batch in enumerate(("b1", "b2")):
        write_fhir(
            make_population(6, seed=30 + index),
            {},
            hdh_home.landing_for("json") / batch,
            seed=index,
        )
    instance = platform_instance(hdh_home)
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    instance.add_dynamic_partitions(BATCH_PARTITIONS["json"].name, ["b1", "b2"])
    defs = build_definitions(hdh_home)
    graph = defs.resolve_asset_graph()
    outcomes = {}
    start = threading.Barrier(2)

    def ingest(batch: str) -> None:
        start.wait()
        outcomes[batch] = execute(defs, instance, batch_request("json", batch, graph))

    threads = [threading.Thread(target=ingest, args=(b,)) for b in ("b1", "b2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert all(o.success for o in outcomes.values()), outcomes
    windows = []
    for outcome in outcomes.values():
        events = {
            e.dagster_event.event_type_value: e.timestamp
            for e in instance.all_logs(outcome.run_id)
            if e.dagster_event and e.dagster_event.step_key == "json_ingestion"
        }
        windows.append((events["STEP_START"], events["STEP_SUCCESS"]))
    (_, first_end), (second_start, _) = sorted(windows)
    assert second_start >= first_end, "the two ingestions overlapped"
    assert graph.get(dg.AssetKey(["clinical", "patients"])).pools == {JSON_INGESTION_POOL}
