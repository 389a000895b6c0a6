"""What the batches delivered before this one hold, so that a resource delivered again is a
duplicate rather than a second row.

FHIR exports overlap: a provider re-sends a whole export, or an incremental export (``_since``)
repeats resources that did not change. A resource whose (type, remapped id) an earlier batch holds
is flattened as usual, then compared with that batch's rows in every table it feeds (its own
table, codings, observation components): the same rows make it a duplicate; different rows make
it a newer version, ingested in this batch and counted as such. When several earlier batches
hold a resource, the latest of them (in arrival order) holds its current version. Comparing lake rows rather than
source text means a resource sent once as NDJSON and once in a Bundle is still recognised.
Declared (non-FHIR) records have no id: an earlier record with the same pseudonymised content is
a duplicate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from hdh_assets.clinical.flatten import ALL_TABLES, TABLES
from hdh_assets.clinical.identity import declared_identity, id_identities

TABLE_OF_TYPE = {rtype: table for rtype, (table, _, _) in TABLES.items()}
TYPE_OF_TABLE = {table: rtype for rtype, table in TABLE_OF_TYPE.items()}
OWN_TABLES = {*TYPE_OF_TABLE, "other_resources"}  # the tables a resource is a row of
Owner = tuple[str, str]  # (resource type, remapped id)


RANK = "_batch_rank"  # the batch's place in arrival order: the latest version wins
_OWNER = "_owner"


@dataclass
class EarlierBatches:
    """The rows of earlier batches, per table, as lazy frames with the table's columns and
    ``RANK``, the batch's place in arrival order (the larger, the later)."""

    tables: dict[str, pl.LazyFrame] = field(default_factory=dict)

    def identities(self) -> np.ndarray:
        """The identity (:func:`hdh_assets.clinical.identity.id_identity`) of every resource."""
        parts = []
        for table, frame in self.tables.items():
            if table in TYPE_OF_TABLE:
                owners = frame.select(pl.lit(TYPE_OF_TABLE[table]).alias("t"), pl.col("id"))
            elif table == "other_resources":
                owners = frame.select(pl.col("resource_type").alias("t"), pl.col("id"))
            else:
                continue
            parts.append(owners.filter(pl.col("id").is_not_null()).collect())
        if not parts:
            return np.empty(0, np.int64)
        owners = pl.concat(parts)
        return id_identities(owners["t"], owners["id"])

    def declared_identities(self) -> set[int]:
        frame = self.tables.get("declared_records")
        if frame is None:
            return set()
        return {
            declared_identity(name, text.encode())
            for name, text in frame.select("record_type", "json").collect().iter_rows()
        }

    def fingerprints(self, owners: Iterable[Owner]) -> dict[Owner, tuple]:
        """What the latest earlier batch holding each of these resources holds of it,
        comparable with :func:`fingerprints`. One scan per table."""
        keys = pl.Series([f"{rtype}/{rid}" for rtype, rid in owners], dtype=pl.String)
        frames = {}
        for table, frame in self.tables.items():
            if table == "declared_records":
                continue
            if RANK not in frame.collect_schema().names():
                frame = frame.with_columns(pl.lit(0, pl.Int32).alias(RANK))
            frames[table] = (
                frame.with_columns(_owner_of(table).alias(_OWNER))
                .filter(pl.col(_OWNER).is_in(keys))
                .collect()
            )
        # a resource is one row of its own table: that row's batch is where its version lives
        own = [f.select(_OWNER, RANK) for t, f in frames.items() if t in OWN_TABLES]
        if not own:
            return {}
        latest = pl.concat(own).group_by(_OWNER).agg(pl.col(RANK).max())
        return _fingerprints(
            {t: f.join(latest, on=[_OWNER, RANK], how="semi") for t, f in frames.items()}
        )


def fingerprints(rows: dict[Owner, dict[str, list[dict]]]) -> dict[Owner, tuple]:
    """The rows each resource feeds (from :func:`flatten`), comparable with the lake's."""
    gathered: dict[str, list[dict]] = defaultdict(list)
    for table_rows in rows.values():
        for table, some in table_rows.items():
            gathered[table].extend(some)
    return _fingerprints(
        {
            table: pl.DataFrame(some, schema=ALL_TABLES[table], orient="row")
            for table, some in gathered.items()
            if some
        }
    )


def _owner_of(table: str) -> pl.Expr:
    if table in TYPE_OF_TABLE:
        return pl.concat_str(pl.lit(TYPE_OF_TABLE[table]), pl.col("id"), separator="/")
    if table == "other_resources":
        return pl.concat_str("resource_type", "id", separator="/")
    if table == "codings":
        return pl.concat_str("resource_type", "resource_id", separator="/")
    return pl.concat_str(pl.lit("Observation"), pl.col("observation_id"), separator="/")


def _fingerprints(frames: dict[str, pl.DataFrame]) -> dict[Owner, tuple]:
    """Per resource, the sorted hashes of its rows in every table (row order does not matter).
    Both sides are hashed in the same process with the same schema, so equal rows hash alike."""
    found: dict[Owner, list[tuple[str, int]]] = defaultdict(list)
    for table, frame in frames.items():
        if not frame.height:
            continue
        schema = ALL_TABLES[table]
        frame = frame.select(list(schema)).cast(schema)
        owners = frame.select(_owner_of(table)).to_series().to_list()
        for owner, digest in zip(owners, frame.hash_rows().to_list(), strict=True):
            rtype, _, rid = owner.partition("/")
            found[(rtype, rid)].append((table, digest))
    return {owner: tuple(sorted(parts)) for owner, parts in found.items()}
