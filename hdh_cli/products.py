"""Data products from the command line: which runs cover the products."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from hdh_assets.products.assets import GROUP


@dataclass(frozen=True)
class ProductSelections:
    """Product runs in order: partitioned products per partitioning (one range run each), then
    the unpartitioned ones."""

    partitioned: list[tuple[dg.PartitionsDefinition, str]]
    unpartitioned: str | None


def _selection(keys: list[dg.AssetKey]) -> str:
    return " or ".join(f'key:"{k.to_user_string()}"' for k in keys)


def product_selections(graph, exclude: set[dg.AssetKey] = frozenset()) -> ProductSelections:
    keys = sorted(
        (
            k
            for k in graph.get_all_asset_keys()
            if graph.get(k).group_name == GROUP and k not in exclude
        ),
        key=lambda k: k.to_user_string(),
    )
    by_partitions: dict[dg.PartitionsDefinition, list[dg.AssetKey]] = {}
    plain = []
    for key in keys:
        partitions = graph.get(key).partitions_def
        if partitions is None:
            plain.append(key)
        else:
            by_partitions.setdefault(partitions, []).append(key)
    return ProductSelections(
        partitioned=[(p, _selection(k)) for p, k in by_partitions.items()],
        unpartitioned=_selection(plain) or None,
    )


def clamp_range(partitions: dg.PartitionsDefinition, keys: tuple[str, str]) -> tuple[str, str]:
    """The part of a (first, last) key range that exists in ``partitions``."""
    existing = partitions.get_partition_keys()
    inside = [k for k in existing if keys[0] <= k <= keys[1]]
    if not inside:
        raise ValueError(f"no partition of {partitions} between {keys[0]} and {keys[1]}")
    return inside[0], inside[-1]
