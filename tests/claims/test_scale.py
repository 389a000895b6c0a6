"""Billion-row claims, tested small: the generator's monthly layout, month-bounded reads that
prune files, a quarantine that is bounded, rerun-safe and complete, and the backfill setting."""

import datetime as dt
import hashlib
import itertools
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from hdh_assets.claims.assets import (
    MONTHS_PER_RUN_ENV,
    claims_backfill_policy,
    claims_events,
)
from hdh_assets.claims.events import (
    claims_files,
    files_for_window,
    months_touched,
    raw_window,
    read_undated,
    read_window,
)
from hdh_assets.claims.quarantine import months_between, quarantine_months
from hdh_assets.definitions import build_resources
from hdh_assets.landing.batches import landing_batch
from resources.home import HdhHome
from resources.pseudonymisation import PseudonymisationKeyResource
from synthetic.claims import (
    UNDATED_FILE,
    claims_chunk,
    defect_count,
    month_rows,
    split_undated,
    with_defects,
)
from synthetic.claims import (
    write_claims as _write_claims,
)
from synthetic.people import make_population

PEOPLE = make_population(30, 3)
ROOT = Path(__file__).resolve().parents[2]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def write_claims(folder: Path, rows: int = 12_000, chunk_rows: int = 700, months: int = 4):
    return _write_claims(PEOPLE, rows, folder, seed=3, chunk_rows=chunk_rows, months=months)


# -- the generator ----------------------------------------------------------------------------


def test_a_month_of_event_dates_lives_only_in_its_own_files_sorted(tmp_path):
    names = write_claims(tmp_path)
    assert names[-1] == UNDATED_FILE and names == sorted(names)
    total = 0
    for name in names[:-1]:
        frame = pl.read_parquet(tmp_path / name)
        month = name.split("-")[1] + "-" + name.split("-")[2]
        assert (frame["event_date"].dt.strftime("%Y-%m") == month).all(), name
        assert frame["event_date"].is_sorted() and frame["event_date"].null_count() == 0
        assert frame.height <= 700
        total += frame.height
    undated = pl.read_parquet(tmp_path / UNDATED_FILE)
    assert undated["event_date"].null_count() == undated.height > 0
    assert total + undated.height == 12_000
    everything = pl.read_parquet([tmp_path / n for n in names])
    assert everything["event_id"].sort().to_list() == list(range(12_000))
    months = everything["event_date"].drop_nulls().dt.strftime("%Y-%m").unique().sort()
    assert months.to_list() == ["2023-01", "2023-02", "2023-03", "2023-04"]


def _string_bytes(frame: pl.DataFrame) -> int:
    """Bytes of the buffers behind a frame's string columns, shared ones included."""
    table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
    return sum(
        buffer.size
        for column in table.columns
        if "string" in str(column.type)
        for chunk in column.chunks
        for buffer in chunk.buffers()
        if buffer is not None
    )


def test_the_undated_rows_kept_across_chunks_hold_only_their_own_bytes():
    """The generator keeps every chunk's undated rows until the end: they must not keep the
    chunk's buffers alive, or memory grows with the extract (a billion rows would not fit)."""
    nirs = pl.Series("nir", [p.nir for p in PEOPLE], dtype=pl.String)
    chunk = claims_chunk(nirs, 3, 0, 0, 200_000, (dt.date(2023, 1, 1), dt.date(2023, 2, 1)), 0)
    chunk = with_defects(chunk, 3, 40)
    shared = chunk.filter(pl.col("event_date").is_null())
    dated, undated = split_undated(chunk)
    assert undated.height == 40 and dated.height == chunk.height - 40
    assert undated.equals(shared)
    # the plain filter keeps the whole chunk's strings; the split's copy does not
    assert _string_bytes(shared) > 100 * _string_bytes(undated)


def test_a_month_is_cut_into_consecutive_day_ranges(tmp_path):
    """Files of one month follow each other in dates, so a few days' window opens few files."""
    names = write_claims(tmp_path)
    january = [pl.read_parquet(tmp_path / n)["event_date"] for n in names if "2023-01" in n]
    assert len(january) > 2
    for before, after in itertools.pairwise(january):
        assert before.max() <= after.min()


def test_same_seed_same_bytes_and_each_chunk_rebuilds_alone(tmp_path):
    write_claims(tmp_path / "a")
    write_claims(tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    # the third chunk of the second month, from (seed, month, chunk) and its rows only
    begin, end, first, count = month_rows(12_000, 4)[1]
    offset = 2 * 700
    nirs = pl.Series("nir", [p.nir for p in PEOPLE])
    from synthetic.claims import _chunk_days

    chunk = claims_chunk(
        nirs, 3, 2, first + offset, 700, _chunk_days(begin, end, offset, 700, count), 1
    )
    chunk = with_defects(chunk, 3, defect_count(first + offset, 700, 12_000), (1, 2))
    on_disk = pl.read_parquet(tmp_path / "a" / "events-2023-02-00002.parquet")
    assert chunk.filter(pl.col("event_date").is_not_null()).equals(on_disk)


def test_months_option_spans_years_and_defects_stay_rare(tmp_path):
    names = _write_claims(PEOPLE, 20_000, tmp_path, seed=1, chunk_rows=10_000, months=120)
    months = sorted({n[7:14] for n in names if n != UNDATED_FILE})
    assert len(months) == 120 and months[0] == "2023-01" and months[-1] == "2032-12"
    frame = pl.read_parquet(tmp_path)
    assert frame.height == 20_000
    assert frame["event_date"].null_count() == 20_000 // 5_000
    valid = {p.nir for p in PEOPLE}
    assert (~frame["nir"].is_in(list(valid))).sum() == 20_000 // 5_000


def test_the_default_sample_keeps_its_size_and_defect_rate(tmp_path):
    """The demo's 50 000 rows: 24 months, one file each, 10 wrong keys and 10 undated rows."""
    names = _write_claims(PEOPLE, 50_000, tmp_path, seed=42)
    assert len(names) == 25
    frame = pl.read_parquet(tmp_path)
    assert frame.height == 50_000 and frame["event_date"].null_count() == 10
    assert (~frame["nir"].is_in([p.nir for p in PEOPLE])).sum() == 10
    dates = frame["event_date"].drop_nulls()
    assert dates.min() >= dt.date(2023, 1, 1) and dates.max() <= dt.date(2024, 12, 31)


# -- month-bounded reads ----------------------------------------------------------------------


def test_file_statistics_come_from_the_footers(tmp_path):
    write_claims(tmp_path)
    files = {f.path.name: f for f in claims_files(tmp_path)}
    undated = files.pop(UNDATED_FILE)
    assert undated.first is None and undated.may_hold_undated and undated.undated_rows > 0
    march = [f for name, f in files.items() if "2023-03" in name]
    assert march[0].first == dt.date(2023, 3, 1) and march[-1].last == dt.date(2023, 3, 31)
    assert not any(f.may_hold_undated for f in files.values())


@pytest.mark.spark
def test_a_month_window_reads_only_the_files_it_needs(spark, tmp_path):
    write_claims(tmp_path)
    files = claims_files(tmp_path)
    start, end, shift = dt.date(2023, 2, 1), dt.date(2023, 3, 1), 5
    wanted = files_for_window(files, start, end, shift)
    frame = read_window(spark, wanted, *raw_window(start, end, shift))
    read = {Path(f.removeprefix("file:")).name for f in frame.inputFiles()}
    assert read == {f.path.name for f in wanted}
    # February, plus the files holding the last days of January and the first of March
    assert {n[7:14] for n in read} == {"2023-01", "2023-02", "2023-03"}
    # of January only the last files (its last days), of March only the first ones
    january = sorted(f.path.name for f in files if "2023-01" in f.path.name)
    march = sorted(f.path.name for f in files if "2023-03" in f.path.name)
    read_january = sorted(n for n in read if "2023-01" in n)
    read_march = sorted(n for n in read if "2023-03" in n)
    assert 0 < len(read_january) < len(january) and read_january == january[-len(read_january) :]
    assert 0 < len(read_march) < len(march) and read_march == march[: len(read_march)]
    assert len(read) < len(files) / 2
    assert not any("2023-04" in n or n == UNDATED_FILE for n in read)
    # what it reads is exactly the raw rows that can shift into February
    everything = pl.read_parquet(tmp_path)
    low, high = raw_window(start, end, shift)
    expected = everything.filter(pl.col("event_date").is_between(low, high, closed="left"))
    assert frame.count() == expected.height
    undated = read_undated(spark, files)
    assert {Path(f).name for f in undated.inputFiles()} == {UNDATED_FILE}
    assert undated.count() == everything["event_date"].null_count()


# -- the asset: bounded, idempotent and complete quarantine -------------------------------------

KEY = "a1" * 32
SHIFT = 20  # days: raw months 2023-01 .. 2023-04 feed shifted months 2022-12 .. 2023-05


def _home(root: Path, rows: int = 12_000) -> HdhHome:
    home = HdhHome(root).ensure()
    with landing_batch(home.landing / "claims", "b1") as folder:
        write_claims(folder, rows)
    return home


def _run(home: HdhHome, first: str, last: str) -> dg.ExecuteInProcessResult:
    resources = {
        **build_resources(home),
        "pseudonymisation": PseudonymisationKeyResource(secret_key=KEY, max_date_shift_days=SHIFT),
    }
    result = dg.materialize(
        [claims_events],
        resources=resources,
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
    )
    assert result.success
    return result


def _quarantine(home: HdhHome) -> dict[str, pl.DataFrame]:
    folder = home.quarantine / "claims" / "b1"
    return {p.name: pl.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}


def _content(quarantine: dict[str, pl.DataFrame]) -> dict[str, int]:
    """Rows of each quarantine file, the undated one under a name without its fingerprint."""
    return {
        ("undated" if "undated" in name else name): frame.hash_rows().sum()
        for name, frame in quarantine.items()
    }


def _events(home: HdhHome) -> pl.DataFrame:
    return pl.read_parquet(home.lake / "claims" / "events" / "**" / "*.parquet")


@pytest.mark.spark
def test_a_backfill_month_by_month_accounts_for_every_row_once(spark, tmp_path):
    home = _home(tmp_path / "monthly")
    landed = pl.read_parquet(home.landing / "claims" / "b1" / "*.parquet")
    first, last = months_touched(dt.date(2023, 1, 1), dt.date(2023, 4, 30), SHIFT)
    assert (first, last) == ("2022-12-01", "2023-05-01")
    months = [m.isoformat() for m in months_between(dt.date(2022, 12, 1), dt.date(2023, 6, 1))]
    for month in months:  # a multi-run backfill of one month per run
        result = _run(home, month, month)
    quarantine = _quarantine(home)
    # rows with a date by raw month, undated rows once, no legacy single file
    dated = sorted(n for n in quarantine if "undated" not in n)
    undated = [n for n in quarantine if n.startswith("rejected-undated-")]
    assert dated and set(dated) <= {f"rejected-2023-0{m}.parquet" for m in (1, 2, 3, 4)}
    assert len(undated) == 1 and len(quarantine) == len(dated) + 1
    rejected = pl.concat(quarantine.values())
    events = _events(home)
    assert events.height + rejected.height == landed.height
    assert events["source_event_id"].is_unique().all() and rejected["event_id"].is_unique().all()
    assert set(events["source_event_id"]) | set(rejected["event_id"]) == set(landed["event_id"])
    assert set(rejected["reject_reason"]) == {"invalid_nir", "missing_event_date"}
    for name, frame in quarantine.items():
        if "undated" not in name:
            assert (frame["event_date"].dt.strftime("rejected-%Y-%m.parquet") == name).all()
    # no raw identifier in what Dagster records
    metadata = str(result.get_asset_materialization_events()[0].materialization.metadata)
    assert not any(p.nir[:13] in metadata for p in PEOPLE)

    # a rerun of one month: the same files, the same rows, nothing twice
    before = _content(quarantine)
    undated_file = home.quarantine / "claims" / "b1" / undated[0]
    undated_written = undated_file.stat().st_mtime_ns
    folder = home.quarantine / "claims" / "b1"
    others = {n: (folder / n).stat().st_mtime_ns for n in dated if n != "rejected-2023-02.parquet"}
    again = _run(home, "2023-02-01", "2023-02-01")
    assert {n: (folder / n).stat().st_mtime_ns for n in others} == others, "only its month"
    assert _quarantine(home).keys() == quarantine.keys() and _content(_quarantine(home)) == before
    assert undated_file.stat().st_mtime_ns == undated_written, "undated rows are read once"
    metadata = again.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["landed_files_read"].value < metadata["landed_files"].value
    assert _events(home).height == events.height

    # the same backfill as one run: the same events, the same quarantine files
    single = _home(tmp_path / "single")
    ranged = _run(single, months[0], months[-1])
    # where the run's time went: each Spark pass before the write, then the range's one write
    metadata = ranged.get_asset_materialization_events()[0].materialization.metadata
    passes = metadata["seconds_by_pass"].value
    assert set(passes) == {"subjects", "quarantine", "summary_and_check"}
    assert all(value > 0 for value in passes.values())
    assert metadata["write_seconds"].value > 0
    assert _content(_quarantine(single)) == before  # the fingerprint names other files
    assert _events(single).sort("source_event_id").equals(events.sort("source_event_id"))


def test_quarantine_months_refuses_rows_of_other_months(tmp_path):
    """A window writes only its own months: a stray row is a bug, not something to file."""
    stray = pl.DataFrame(
        {"event_id": [1], "nir": ["x"], "event_date": [dt.date(2023, 5, 2)]}
    ).with_columns(
        pl.lit("c").alias("care_type"),
        pl.lit("c").alias("code"),
        pl.lit(1.0).alias("amount_eur"),
        pl.lit("invalid_nir").alias("reject_reason"),
        pl.lit("b").alias("batch"),
    )
    with pytest.raises(ValueError, match="outside"):
        quarantine_months(tmp_path, stray, dt.date(2023, 4, 1), dt.date(2023, 5, 1))
    assert "x" not in str(list(tmp_path.iterdir()))


# -- the backfill setting ---------------------------------------------------------------------


def test_the_backfill_policy_is_a_setting():
    assert claims_backfill_policy({}) == dg.BackfillPolicy.single_run()
    assert claims_backfill_policy({MONTHS_PER_RUN_ENV: "0"}) == dg.BackfillPolicy.single_run()
    assert claims_backfill_policy({MONTHS_PER_RUN_ENV: "3"}) == dg.BackfillPolicy.multi_run(
        max_partitions_per_run=3
    )
    for wrong in ("-1", "three"):
        with pytest.raises(ValueError, match=MONTHS_PER_RUN_ENV):
            claims_backfill_policy({MONTHS_PER_RUN_ENV: wrong})


@pytest.mark.slow
def test_the_definitions_read_the_setting_when_they_load():
    code = (
        "from hdh_assets.claims.assets import claims_events as a;"
        "print(a.backfill_policy.max_partitions_per_run)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": "/usr/bin:/bin", MONTHS_PER_RUN_ENV: "6", "HDH_HOME": "/tmp/unused-hdh"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "6"


# -- the benchmark's own parts (the whole run takes minutes: benchmarks/scale.py) ---------------


def test_the_scale_benchmark_cuts_runs_and_samples_memory(tmp_path):
    import argparse
    import os

    from benchmarks.scale import MemorySampler, extrapolate, groups_of, parse_args

    keys = [f"2023-{m:02d}-01" for m in range(1, 8)]
    assert groups_of(keys, 0) == [keys]
    assert groups_of(keys, 3) == [keys[:3], keys[3:6], keys[6:]]
    args = parse_args(["--rows", "200000", "--months", "3", "--work-dir", str(tmp_path)])
    assert args.people == 1_000 and args.months_per_run == 0
    with MemorySampler(roots={"Python driver": os.getpid()}) as sampler:
        sampler.phase = "test"
    [(label, _pid, peak)] = [row for row in sampler.report() if row[1] == os.getpid()]
    assert label == "Python driver" and peak.rss > 0
    runs = [{"months": 3, "seconds": 30.0, "rows_read": 300, "bytes_read": 3_000}]
    lines = extrapolate(
        {"overhead": 2.0, "runs": runs},
        argparse.Namespace(workers=2, cores_per_worker=1, node_cores=8),
        200,
    )
    assert lines[0].startswith("16 nodes x 8 cores") and lines[1].startswith("Limit:")
    assert "1.5x" in lines[1]
