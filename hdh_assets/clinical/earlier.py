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
OWNER_COLUMN = {  # the column naming the resource a row belongs to (with its type)
    **{table: "id" for table in OWN_TABLES},
    "codings": "resource_id",
    "observation_components": "observation_id",
}
Owner = tuple[str, str]  # (resource type, remapped id)


RANK = "_batch_rank"  # the batch's place in arrival order: the latest version wins
OWNER = "_owner"  # owner_key of the resource a row belongs to


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
                rtype = pl.lit(TYPE_OF_TABLE[table], pl.String)
            elif table == "other_resources":
                rtype = pl.col("resource_type")
            else:
                continue
            owners = frame.select(rtype.alias("t"), pl.col("id").alias("i"))
            parts.append(owners.filter(pl.col("i").is_not_null()))
        if not parts:
            return np.empty(0, np.int64)
        return id_identities(pl.concat(parts))

    def declared_identities(self) -> set[int]:
        frame = self.tables.get("declared_records")
        if frame is None:
            return set()
        return {
            declared_identity(name, text.encode())
            for name, text in frame.select("record_type", "json").collect().iter_rows()
        }

    def row_hashes(self, owners: Iterable[Owner]) -> pl.DataFrame:
        """The rows the latest earlier batch holding each of these resources holds of it, as
        :func:`row_hashes`. One scan per table."""
        keys = pl.Series([owner_key(rtype, rid) for rtype, rid in owners], dtype=pl.String)
        frames = {}
        for table, frame in self.tables.items():
            if table == "declared_records":
                continue
            if RANK not in frame.collect_schema().names():
                frame = frame.with_columns(pl.lit(0, pl.Int32).alias(RANK))
            frames[table] = (
                frame.with_columns(_owner_of(table).alias(OWNER))
                .filter(pl.col(OWNER).is_in(keys))
                .collect()
            )
        # a resource is one row of its own table: that row's batch is where its version lives
        own = [f.select(OWNER, RANK) for t, f in frames.items() if t in OWN_TABLES]
        if not own:
            return row_hashes({})
        latest = pl.concat(own).group_by(OWNER).agg(pl.col(RANK).max())
        return row_hashes(
            {t: f.join(latest, on=[OWNER, RANK], how="semi") for t, f in frames.items()}
        )


def owner_key(resource_type: str, remapped_id: str) -> str:
    return f"{resource_type}/{remapped_id}"


def rows_as_frames(rows: Iterable[dict[str, list[dict]]]) -> dict[str, pl.DataFrame]:
    """Rows made one by one (:func:`flatten`'s), as frames per table."""
    gathered: dict[str, list[dict]] = defaultdict(list)
    for table_rows in rows:
        for table, some in table_rows.items():
            gathered[table].extend(some)
    return {
        table: pl.DataFrame(some, schema=ALL_TABLES[table], orient="row")
        for table, some in gathered.items()
        if some
    }


def row_hashes(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per table row: the resource it belongs to (``OWNER``), the table and a hash of
    the row (columns other than the table's are ignored). Both sides of a comparison are hashed
    in the same process with the same schema, so equal rows hash alike."""
    parts = [pl.DataFrame(schema={OWNER: pl.String, "table": pl.String, "h": pl.UInt64})]
    for table, frame in frames.items():
        if not frame.height:
            continue
        schema = ALL_TABLES[table]
        typed = frame.select(list(schema)).cast(schema)
        parts.append(
            typed.select(_owner_of(table).alias(OWNER), pl.lit(table).alias("table")).with_columns(
                h=typed.hash_rows()
            )
        )
    return pl.concat(parts)


def changed(made: pl.DataFrame, held: pl.DataFrame) -> set[str]:
    """The resources (``owner_key``) whose rows differ between the two, as multisets."""
    on = [OWNER, "table", "h"]
    counts = (
        made.group_by(on)
        .len("made")
        .join(held.group_by(on).len("held"), on=on, how="full", coalesce=True)
    )
    differ = counts.filter(pl.col("made").fill_null(0) != pl.col("held").fill_null(0))
    return set(differ[OWNER].to_list())


def _owner_of(table: str) -> pl.Expr:
    if table in TYPE_OF_TABLE:
        return pl.concat_str(pl.lit(TYPE_OF_TABLE[table]), pl.col("id"), separator="/")
    if table == "other_resources":
        return pl.concat_str("resource_type", "id", separator="/")
    if table == "codings":
        return pl.concat_str("resource_type", "resource_id", separator="/")
    return pl.concat_str(pl.lit("Observation"), pl.col("observation_id"), separator="/")
