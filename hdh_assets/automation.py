"""What follows a landed batch, declared once and read the same way by the daemon and by ``hdh``.

- The assets that span batches (series, studies, linkage, products, the subject index) carry
  automation conditions; the automation sensor evaluates them in the daemon, and ``hdh ingest``
  and ``hdh demo`` evaluate the same conditions with ``dg.evaluate_automation_conditions`` and
  execute what they request (``run_groups`` turns a request into runs).
- Claims events are partitioned by month of the shifted event date, and which months a batch
  touches is only known from its data: ``claims_month_requests`` reads it from the batch's
  Parquet statistics (the claims months sensor, and ``hdh`` after a claims batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from hdh_assets.claims.events import landed_date_range, months_touched

# Dagster's tags for a run over a range of partitions (one run, a single-run backfill).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
RIGHTS_REQUEST_TAG = "hdh/rights_request"


def follows_upstream() -> dg.AutomationCondition:
    """Eager, for an asset that reads every partition of its upstreams (a table across batches
    or months): it follows any update of them. Partitions never built (months without data, a
    batch still waiting) do not hold it back, but an upstream with nothing built at all does,
    and runs in progress do, as for eager."""
    built = ~dg.AutomationCondition.missing() | dg.AutomationCondition.will_be_requested()
    return dg.AutomationCondition.eager().without(
        ~dg.AutomationCondition.any_deps_missing()
    ) & dg.AutomationCondition.all_deps_match(built).with_label("every upstream built")


def follows_whatever_exists() -> dg.AutomationCondition:
    """Eager, for an asset built from whatever the lake holds (the subject index): no missing
    upstream holds it back, an update or a run in progress upstream does as for eager."""
    return dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


# -- claims months ----------------------------------------------------------------------------


def claims_month_span(batch_folder, max_shift_days: int) -> tuple[str, str] | None:
    """First and last monthly partitions that a landed claims batch can feed."""
    files = sorted(batch_folder.rglob("*.parquet")) if batch_folder.is_dir() else []
    raw = landed_date_range(files)
    return months_touched(*raw, max_shift_days) if raw else None


def clamp(partitions: dg.PartitionsDefinition, span: tuple[str, str]) -> tuple[str, str] | None:
    """The part of a (first, last) key span that exists in ``partitions``."""
    inside = [k for k in partitions.get_partition_keys() if span[0] <= k <= span[1]]
    return (inside[0], inside[-1]) if inside else None


def claims_month_requests(
    instance: dg.DagsterInstance,
    inventory_key: dg.AssetKey,
    events_key: dg.AssetKey,
    months: dg.PartitionsDefinition,
    landing_root,
    max_shift_days: int,
    after_storage_id: int | None,
    log=lambda message: None,
) -> tuple[list[dg.RunRequest], int | None]:
    """One range run of the claims events per claims batch ingested since ``after_storage_id``
    (the months its events can fall in), and the new cursor."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=inventory_key, after_storage_id=after_storage_id),
        limit=1000,
        ascending=True,
    ).records
    requests = []
    for record in records:
        batch = record.partition_key
        run = instance.get_run_by_id(record.run_id)
        if batch is None or (run and RIGHTS_REQUEST_TAG in run.tags):
            continue  # a rights request's re-ingestion plans its months itself
        try:
            span = claims_month_span(landing_root / batch, max_shift_days)
        except Exception as error:  # an unreadable batch must not stop the batches after it
            log(f"claims batch {batch}: months not computed ({type(error).__name__})")
            continue
        span = clamp(months, span) if span else None
        if span is None:
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"claims-months:{record.storage_id}",
                asset_selection=[events_key],
                tags={RANGE_START_TAG: span[0], RANGE_END_TAG: span[1], "hdh/claims_batch": batch},
            )
        )
    cursor = records[-1].storage_id if records else after_storage_id
    return requests, cursor


# -- an evaluation as runs --------------------------------------------------------------------


@dataclass(frozen=True)
class RunGroup:
    level: int
    assets: tuple[dg.AssetKey, ...]
    partition_span: tuple[str, str] | None  # one key: (k, k)

    def run_request(self, tags: dict[str, str] | None = None) -> dg.RunRequest:
        tags = dict(tags or {})
        kwargs: dict = {}
        if self.partition_span and self.partition_span[0] == self.partition_span[1]:
            kwargs["partition_key"] = self.partition_span[0]
        elif self.partition_span:
            tags.update(
                {RANGE_START_TAG: self.partition_span[0], RANGE_END_TAG: self.partition_span[1]}
            )
        return dg.RunRequest(asset_selection=list(self.assets), tags=tags, **kwargs)


def _spans(keys: list[str], ordered: list[str]) -> list[tuple[str, str]]:
    position = {k: i for i, k in enumerate(ordered)}
    spans: list[list[str]] = []
    for key in sorted(keys, key=lambda k: position[k]):
        if spans and position[key] == position[spans[-1][-1]] + 1:
            spans[-1].append(key)
        else:
            spans.append([key])
    return [(s[0], s[-1]) for s in spans]


def run_groups(requested: dict[dg.AssetKey, set[str | None]], graph) -> list[RunGroup]:
    """The runs that materialise ``requested`` (asset -> partition keys, None when
    unpartitioned), in order: assets sharing a partitioning and a span of partitions run
    together (a span of time partitions as one range run, as the daemon's single-run backfill
    does), and a run comes after every run feeding it."""
    shape: dict[dg.AssetKey, tuple] = {}
    for key, partitions in requested.items():
        partitions_def = graph.get(key).partitions_def
        if partitions_def is None:
            spans: tuple = (None,)
        elif isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
            spans = tuple(_spans(sorted(partitions), partitions_def.get_partition_keys()))
        else:
            spans = tuple((p, p) for p in sorted(partitions))
        shape[key] = (partitions_def, spans)
    level: dict[dg.AssetKey, int] = {}

    def level_of(key: dg.AssetKey) -> int:
        if key not in level:
            level[key] = 0  # the graph has no cycle; this only guards the recursion
            parents = [p for p in graph.get(key).parent_keys if p in requested]
            level[key] = max(
                (level_of(p) + (0 if shape[p] == shape[key] else 1) for p in parents), default=0
            )
        return level[key]

    grouped: dict[tuple, list[dg.AssetKey]] = {}
    for key in sorted(requested, key=lambda k: k.to_user_string()):
        partitions_def, spans = shape[key]
        for span in spans:
            grouped.setdefault((level_of(key), str(partitions_def), span), []).append(key)
    return [
        RunGroup(group[0], tuple(keys), group[2])
        for group, keys in sorted(grouped.items(), key=lambda item: (item[0][0], str(item[0][1:])))
    ]


def requested_by(result, graph) -> dict[dg.AssetKey, set[str | None]]:
    """asset -> requested partition keys, from ``dg.evaluate_automation_conditions``."""
    requested = {}
    for key in graph.get_all_asset_keys():
        if result.get_num_requested(key):
            partitions = result.get_requested_partitions(key)
            requested[key] = set(partitions)
    return requested
