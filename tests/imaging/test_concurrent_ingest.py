"""Two deliveries of the same instances ingested at the same time: each instance ends once in the
store and once in the index; a repeated SOP Instance UID in the index fails a blocking check."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import random
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from hdh_assets.imaging.assets import (
    INSTANCES,
    UNIQUE_CHECK,
    other_batches_rows,
    repeated_instances,
    unique_instances_check,
)
from synthetic.dicom import write_study
from synthetic.people import make_population

FILES = 120  # more than the 64 below which ingestion runs without worker processes
BARRIER_TIMEOUT = 1800  # only stops a run whose twin died before the commit point


def _delivery(folder: Path, files: int = FILES) -> int:
    """Synthetic CT and MR studies (deterministic), cut down to ``files`` files."""
    rng = random.Random("hdh-concurrent-ingest")
    counter = [0]
    written: list[Path] = []
    for person in make_population(60, seed=11):
        modality = "CT" if person.index % 2 else "MR"
        day = dt.date(2024, 1, 1) + dt.timedelta(days=person.index)
        record = write_study(
            person, rng, modality, day, folder / f"P{person.index:03d}", False, counter
        )
        written += [Path(p) for p in record.files]
        if len(written) >= files:
            break
    for extra in written[files:]:
        extra.unlink()
    return min(files, len(written))


def _cli_ingest(delivery: str, batch: str, barrier, results) -> None:
    """A child process: the real ``hdh ingest dicom``, held at the commit point until its twin
    reaches it too, so that both have classified and pseudonymised every file (and would both
    call every instance new) before either commits."""
    import hdh_assets.imaging.ingest as ingest

    real_lock = ingest.store_lock
    waited = []

    @contextmanager
    def lock_once_both_prepared(store_root: Path):
        if not waited:
            waited.append(batch)
            barrier.wait(timeout=BARRIER_TIMEOUT)
        with real_lock(store_root):
            yield

    ingest.store_lock = lock_once_both_prepared
    from click.testing import CliRunner

    from hdh_cli.main import cli

    result = CliRunner().invoke(cli, ["ingest", "dicom", delivery, "--batch", batch, "--json"])
    results.put(
        {
            "batch": batch,
            "exit_code": result.exit_code,
            "stdout": result.stdout,
            "error": repr(result.exception) if result.exception else None,
            "reached_commit_point": bool(waited),
        }
    )


def _index(home) -> pl.DataFrame:
    files = sorted(str(p) for p in home.lake.joinpath(*INSTANCES.path).rglob("*.parquet"))
    files = [f for f in files if not Path(f).name.startswith((".", "_"))]
    return pl.read_parquet(files, hive_partitioning=True) if files else pl.DataFrame()


@pytest.mark.slow  # two whole `hdh ingest dicom` commands, in two processes
def test_two_deliveries_of_the_same_files_at_the_same_time_ingest_each_instance_once(
    hdh_home, tmp_path, monkeypatch
):
    delivery = tmp_path / "delivery"
    files = _delivery(delivery)
    assert files == FILES
    context = multiprocessing.get_context("spawn")  # the children inherit HDH_HOME and the key
    barrier = context.Barrier(2)
    results = context.Queue()
    children = [
        context.Process(target=_cli_ingest, args=(str(delivery), batch, barrier, results))
        for batch in ("e", "f")
    ]
    for child in children:
        child.start()
    reports = {}
    for _ in children:
        report = results.get(timeout=3 * BARRIER_TIMEOUT)
        reports[report["batch"]] = report
    for child in children:
        child.join()
        assert child.exitcode == 0

    # Both runs were at their commit point at once: the race was really run.
    assert all(r["reached_commit_point"] for r in reports.values()), reports
    for report in reports.values():
        assert report["exit_code"] == 0, report["error"] or report["stdout"]
    summaries = {batch: json.loads(r["stdout"]) for batch, r in reports.items()}
    for summary in summaries.values():
        assert summary["success"], summary
        assert summary["landed"] == files
        assert summary["quarantined"] == 0
    # The first to commit ingests every file; the other counts each a duplicate.
    assert sorted(s["ingested"] for s in summaries.values()) == [0, files]
    assert sorted(s["duplicates"] for s in summaries.values()) == [0, files]
    assert sum(s["ingested"] + s["duplicates"] for s in summaries.values()) == 2 * files

    store = hdh_home.store / "dicom"
    stored = sorted(p for p in store.rglob("*.dcm") if ".staging" not in p.parts)
    assert len(stored) == files
    assert len({p.stem for p in stored}) == files  # each SOP Instance UID once in the store
    index = _index(hdh_home)
    assert index.height == files
    assert index["sop_instance_uid"].n_unique() == files
    winner = next(b for b, s in summaries.items() if s["ingested"] == files)
    assert index["batch"].unique().to_list() == [winner]
    assert sorted(index["store_path"]) == sorted(str(p.relative_to(store)) for p in stored)
    assert repeated_instances(other_batches_rows(hdh_home.lake, ""), "", index.head(0)).is_empty()

    # The new check ran in both runs and passed.
    instance = dg.DagsterInstance.get()
    evaluations = {}
    for summary in summaries.values():
        for run in summary["runs"]:
            for entry in instance.all_logs(
                run["run_id"], of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            ):
                data = entry.dagster_event.event_specific_data
                if data.check_name == UNIQUE_CHECK:
                    evaluations[summary["batch"]] = data.passed
    assert evaluations == {"e": True, "f": True}


# -- the check itself -----------------------------------------------------------------------------
def _rows(uids: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"sop_instance_uid": uids, "sha256": ["0" * 64] * len(uids)},
        schema={"sop_instance_uid": pl.String, "sha256": pl.String},
    )


def _write_partition(lake: Path, batch: str, frame: pl.DataFrame) -> None:
    folder = lake.joinpath(*INSTANCES.path) / f"batch={batch}"
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(folder / "part-0.parquet")


def test_a_repeated_sop_instance_uid_in_the_index_fails_the_check(tmp_path):
    """What the race used to leave: two batches' partitions holding the same instances."""
    lake = tmp_path / "lake"
    uids = [f"2.25.{n}" for n in range(10, 18)]
    _write_partition(lake, "e", _rows(uids))
    _write_partition(lake, "derived-20260101", _rows(["2.25.99"]))
    own = _rows([*uids[:6], "2.25.7"])

    result = unique_instances_check(other_batches_rows(lake, "f"), "f", own)
    assert not result.passed
    metadata = {k: getattr(v, "value", v) for k, v in result.metadata.items()}
    assert metadata["repeated_sop_instance_uids"] == 6
    assert metadata["extra_rows"] == 6
    assert metadata["rows_checked"] == 8 + 1 + 7
    assert metadata["batches_with_repeats"] == ["e", "f"]
    assert metadata["examples"] == sorted(uids[:6])[:5]  # a few pseudonymised UIDs, no more


def test_the_check_passes_on_unique_uids_and_on_a_rerun_of_the_same_batch(tmp_path):
    lake = tmp_path / "lake"
    _write_partition(lake, "e", _rows(["2.25.1", "2.25.2"]))
    _write_partition(lake, "f", _rows(["2.25.3"]))
    assert unique_instances_check(other_batches_rows(lake, "g"), "g", _rows(["2.25.4"])).passed
    # a rerun of f replaces f's partition: its old rows are not repeats of its new ones
    assert unique_instances_check(other_batches_rows(lake, "f"), "f", _rows(["2.25.3"])).passed
    repeated = repeated_instances(other_batches_rows(lake, "g"), "g", _rows(["2.25.2", "2.25.5"]))
    assert repeated.to_dicts() == [{"sop_instance_uid": "2.25.2", "rows": 2, "batches": ["e", "g"]}]


def test_the_check_also_catches_a_repeat_inside_one_batch(tmp_path):
    result = unique_instances_check(
        other_batches_rows(tmp_path / "lake", "e"), "e", _rows(["2.25.1", "2.25.1"])
    )
    assert not result.passed
    assert result.metadata["repeated_sop_instance_uids"].value == 1
