"""The asset graph read straight from asset definitions, for code that runs inside a run.

A run worker knows its repository, but a run executed in the caller's process does not, and
resolving a whole ``Definitions`` inside a run would also validate resources the run never
uses. Erasure plans and release manifests only read keys, parents, children, partitioning,
groups, metadata, code versions and checks: this offers exactly that part of Dagster's
``AssetGraph`` interface (``get``, ``has``, ``get_all_asset_keys``), so the same planning code
takes either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg


@dataclass
class AssetNode:
    key: dg.AssetKey
    partitions_def: dg.PartitionsDefinition | None
    group_name: str | None
    metadata: dict
    code_version: str | None
    owners: list[str]
    description: str | None
    parent_keys: set[dg.AssetKey] = field(default_factory=set)
    child_keys: set[dg.AssetKey] = field(default_factory=set)
    check_keys: set[dg.AssetCheckKey] = field(default_factory=set)


class AssetLineage:
    def __init__(self, assets: Iterable[dg.AssetsDefinition]):
        self._nodes: dict[dg.AssetKey, AssetNode] = {}
        for asset in assets:
            for key in asset.keys:
                spec = asset.specs_by_key[key]
                self._nodes[key] = AssetNode(
                    key=key,
                    partitions_def=asset.partitions_def,
                    group_name=spec.group_name,
                    metadata=dict(spec.metadata),
                    code_version=spec.code_version,
                    owners=list(spec.owners),
                    description=spec.description,
                    parent_keys={dep.asset_key for dep in spec.deps},
                    check_keys={c for c in asset.check_keys if c.asset_key == key},
                )
        for node in self._nodes.values():
            node.parent_keys &= self._nodes.keys()  # outside the graph: not ours to plan
            for parent in node.parent_keys:
                self._nodes[parent].child_keys.add(node.key)

    def has(self, key: dg.AssetKey) -> bool:
        return key in self._nodes

    def get(self, key: dg.AssetKey) -> AssetNode:
        return self._nodes[key]

    def get_all_asset_keys(self) -> set[dg.AssetKey]:
        return set(self._nodes)


def descendants(graph, keys: set[dg.AssetKey]) -> set[dg.AssetKey]:
    """Every asset downstream of ``keys`` (works on this lineage and on Dagster's graph)."""
    seen, stack = set(), list(keys)
    while stack:
        for child in graph.get(stack.pop()).child_keys:
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def waves(runs: list[dict], graph) -> list[list[int]]:
    """Runs (``{"assets": [key strings], ...}``, in plan order) grouped so that a run comes in a
    later wave than every earlier run feeding it or touching the same assets (other partitions
    of them: the plan's order between those holds); runs of one wave are independent."""
    keys = [{dg.AssetKey.from_user_string(a) for a in run["assets"]} for run in runs]
    below = [k | descendants(graph, k) for k in keys]
    level: list[int] = []
    for j, mine in enumerate(keys):
        feeding = [level[i] for i in range(j) if below[i] & mine]
        level.append(1 + max(feeding) if feeding else 0)
    return [[j for j, lv in enumerate(level) if lv == n] for n in range(max(level, default=-1) + 1)]
