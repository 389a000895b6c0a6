"""Which runs make a person disappear: planned from the subject index and the asset graph.

Pure: the plan names assets, partitions and run order; the command line (or a sensor) executes
it. Every partition holding the person is re-materialised together with the assets sharing its
partitioning (a landing batch is re-ingested whole, a month of claims with its monthly
products); then every unpartitioned asset downstream, the subject index last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

from hdh_assets.lineage import descendants

SKIPPED = {dg.AssetKey(["gdpr", "exclusions"])}


def _always(*_args) -> bool:
    return True


@dataclass(frozen=True)
class PlannedRun:
    assets: tuple[dg.AssetKey, ...]
    partition_range: tuple[str, str] | None = None  # one key: (k, k)

    @property
    def selection(self) -> str:
        return " or ".join(f'key:"{k.to_user_string()}"' for k in self.assets)


@dataclass
class ErasurePlan:
    holdings: dict[str, list[str | None]] = field(default_factory=dict)  # asset -> partitions
    runs: list[PlannedRun] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # partitions that no longer exist

    def to_json(self) -> dict:
        return {
            "assets": sorted(self.holdings),
            "partitions": {
                a: sorted(p for p in ps if p) for a, ps in sorted(self.holdings.items())
            },
            "runs": [
                {"assets": [k.to_user_string() for k in r.assets], "partitions": r.partition_range}
                for r in self.runs
            ],
            "skipped_partitions": sorted(self.skipped),
        }


def _ranges(keys: list[str], ordered: list[str]) -> list[tuple[str, str]]:
    """Contiguous runs of ``keys`` along the partition order (time partitions)."""
    position = {k: i for i, k in enumerate(ordered)}
    spans: list[list[str]] = []
    for key in sorted(keys, key=lambda k: position.get(k, -1)):
        if spans and position.get(key, -2) == position.get(spans[-1][-1], -3) + 1:
            spans[-1].append(key)
        else:
            spans.append([key])
    return [(s[0], s[-1]) for s in spans]


def plan_erasure(
    index: pl.DataFrame,
    pseudonym: str,
    graph,
    built: Callable[[dg.AssetKey], bool] = _always,
    also: pl.DataFrame | None = None,
    present: Callable[[dg.PartitionsDefinition, str], bool] = _always,
) -> ErasurePlan:
    """``index``: the subject index (asset, partition, subject_pseudonym, rows). ``built`` says
    whether an unpartitioned asset was ever materialised: one that never was holds nobody, and
    a source that never delivered must not fail its rebuild. ``also``: more (asset, partition)
    pairs to rebuild, e.g. the landing batches whose raw files lost the person. ``present``
    says whether a dynamic partition still exists (a retired project, a deleted batch hold
    nothing: they are listed as skipped, not run)."""
    mine = index.filter(pl.col("subject_pseudonym") == pseudonym).select("asset", "partition")
    return _plan(pl.concat([mine, also]) if also is not None else mine, graph, built, present)


def batch_rows(graph, partitions_def: dg.PartitionsDefinition, batches: list[str]) -> pl.DataFrame:
    """(asset, partition) of every asset of a source's batch partitioning, for these batches."""
    assets = sorted(
        k.to_user_string()
        for k in graph.get_all_asset_keys()
        if graph.get(k).partitions_def == partitions_def
    )
    return pl.DataFrame(
        [(a, b) for a in assets for b in batches],
        schema={"asset": pl.String, "partition": pl.String},
        orient="row",
    )


def plan_rectification(
    index: pl.DataFrame,
    pseudonym: str,
    graph,
    partitions_def: dg.PartitionsDefinition,
    corrected_batch: str,
    built: Callable[[dg.AssetKey], bool] = _always,
    present: Callable[[dg.PartitionsDefinition, str], bool] = _always,
) -> ErasurePlan:
    """Rectifying one source: the partitions of that source holding the person are rebuilt
    (their landed records of the person are gone by then), the corrected batch is ingested, and
    everything downstream follows. Other sources are not touched."""
    corrected = batch_rows(graph, partitions_def, [corrected_batch])
    source_assets = sorted(set(corrected["asset"]))
    mine = index.filter(
        (pl.col("subject_pseudonym") == pseudonym) & pl.col("asset").is_in(source_assets)
    )
    rows = pl.concat([mine.select("asset", "partition"), corrected])
    plan = _plan(rows, graph, built, present)
    # the corrected batch goes after the rebuilds: ingested while the old partitions still hold
    # the person, its unchanged resources would be taken for duplicates of rows about to go
    last = [r for r in plan.runs if r.partition_range == (corrected_batch, corrected_batch)]
    others = [r for r in plan.runs if r not in last]
    plan.runs = [*others[:-1], *last, others[-1]]  # the unpartitioned run stays last
    return plan


def _feeding_first(groups: dict, graph) -> list:
    """Partitionings ordered so that one whose assets feed another's comes first (a claims
    batch before the months of claims events it feeds), whatever the order they were met in."""
    below = {p: descendants(graph, set(keys)) for p, keys in groups.items()}
    remaining, ordered = list(groups), []
    while remaining:
        free = [
            p for p in remaining if not any(q != p and set(groups[p]) & below[q] for q in remaining)
        ]
        ordered.append((free or remaining)[0])  # the graph has no cycle; this guards it
        remaining.remove(ordered[-1])
    return ordered


def _plan(mine: pl.DataFrame, graph, built, present) -> ErasurePlan:
    plan = ErasurePlan()
    for asset, partition in mine.unique().sort("asset", "partition").iter_rows():
        plan.holdings.setdefault(asset, []).append(partition)
    targets = {dg.AssetKey.from_user_string(a) for a in plan.holdings}
    all_keys = [k for k in graph.get_all_asset_keys() if k not in SKIPPED]
    by_partitioning: dict = {}
    for key in sorted(targets, key=lambda k: k.to_user_string()):
        partitions_def = graph.get(key).partitions_def
        if partitions_def is None:
            continue
        keys = {p for p in plan.holdings[key.to_user_string()] if p}
        by_partitioning.setdefault(partitions_def, set()).update(keys)
    groups = {
        partitions_def: tuple(
            sorted(
                (k for k in all_keys if graph.get(k).partitions_def == partitions_def),
                key=lambda k: k.to_user_string(),
            )
        )
        for partitions_def in by_partitioning
    }
    for partitions_def in _feeding_first(groups, graph):
        keys, group = by_partitioning[partitions_def], groups[partitions_def]
        if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
            for span in _ranges(list(keys), partitions_def.get_partition_keys()):
                plan.runs.append(PlannedRun(group, span))
            continue
        for key in sorted(keys):
            if present(partitions_def, key):
                plan.runs.append(PlannedRun(group, (key, key)))
            else:
                plan.skipped.append(key)
    downstream = (targets | descendants(graph, targets)) - SKIPPED
    unpartitioned = {k for k in downstream if graph.get(k).partitions_def is None and built(k)}
    unpartitioned.add(dg.AssetKey(["gdpr", "subject_index"]))
    plan.runs.append(PlannedRun(tuple(sorted(unpartitioned, key=lambda k: k.to_user_string()))))
    return plan
