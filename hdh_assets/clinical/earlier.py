"""What the batches delivered before this one hold, so that a resource delivered again is a
duplicate rather than a second row.

FHIR exports overlap: a provider re-sends a whole export, or an incremental export (``_since``)
repeats resources that did not change. A resource whose (type, remapped id) an earlier batch holds
is flattened as usual, then compared with that batch's rows in every table it feeds (its own
table, codings, observation components): the same rows make it a duplicate; different rows make
it a newer version, ingested in this batch and counted as such. When several earlier batches
hold a resource, the latest of them (in arrival order) holds its current version. Comparing lake
rows rather than source text means a resource sent once as NDJSON and once in a Bundle is still
recognised. The comparison is made once per batch, at its end, on row hashes computed by polars
(:func:`row_keys`, :func:`changed`). Declared (non-FHIR) records have no id: an earlier record
with the same pseudonymised content is a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from hdh_assets.clinical.flatten import ALL_TABLES, TABLES
from hdh_assets.clinical.identity import (
    declared_identity,
    id_identities,
    identity_expr,
    type_salt,
)

TABLE_OF_TYPE = {rtype: table for rtype, (table, _, _) in TABLES.items()}
TYPE_OF_TABLE = {table: rtype for rtype, table in TABLE_OF_TYPE.items()}
OWN_TABLES = {*TYPE_OF_TABLE, "other_resources"}  # the tables a resource is a row of
OWNER_COLUMN = {  # the column naming the resource a row belongs to (with its type)
    **{table: "id" for table in OWN_TABLES},
    "codings": "resource_id",
    "observation_components": "observation_id",
}


RANK = "_batch_rank"  # the batch's place in arrival order: the latest version wins


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

    def held_rows(self, keys: np.ndarray) -> pl.DataFrame:
        """``(k, table, h)`` (see :func:`row_keys`) of the rows that the latest earlier batch
        holding each of these resources (by identity) holds of it. One scan per table."""
        wanted = pl.Series(np.unique(keys), dtype=pl.Int64)
        salts = salts_of(self.tables)
        parts = []
        for table, frame in self.tables.items():
            if table not in OWNER_COLUMN:
                continue
            if RANK not in frame.collect_schema().names():
                frame = frame.with_columns(pl.lit(0, pl.Int32).alias(RANK))
            parts.append(
                row_keys(frame, table, salts, keep=[RANK]).filter(pl.col("k").is_in(wanted))
            )
        if not parts:
            return _EMPTY
        rows = pl.concat(parts).collect()
        # a resource is one row of its own table: that row's batch is where its version lives
        latest = (
            rows.filter(pl.col("table").is_in(OWN_TABLES)).group_by("k").agg(pl.col(RANK).max())
        )
        return rows.join(latest, on=["k", RANK], how="semi").select(_EMPTY.columns)


_EMPTY = pl.DataFrame(schema={"k": pl.Int64, "table": pl.String, "h": pl.UInt64})


def salts_of(tables: dict[str, pl.LazyFrame | pl.DataFrame]) -> dict[str, int]:
    """The type salt of every resource type these tables' rows can belong to."""
    types = {*TYPE_OF_TABLE.values()}
    for table in ("other_resources", "codings"):
        if table in tables:
            found = tables[table].lazy().select(pl.col("resource_type").unique()).collect()
            types.update(found.to_series().drop_nulls().to_list())
    return {t: type_salt(t) for t in types}


def row_keys(
    frame: pl.LazyFrame | pl.DataFrame, table: str, salts: dict[str, int], keep: list[str] = ()
) -> pl.LazyFrame:
    """Per row of ``table``: ``k``, the identity of the resource it belongs to (as
    :func:`~hdh_assets.clinical.identity.id_identity` gives it for a remapped id, which is
    always 32 hex digits; other ids give none), the table, and ``h``, a hash of the row's
    columns (others are ignored). Both sides of a comparison are hashed in the same process
    with the same schema, so equal rows hash alike."""
    schema = ALL_TABLES[table]
    return (
        frame.lazy()
        .select(
            key_of_row(table, salts).alias("k"),
            pl.lit(table).alias("table"),
            pl.struct([pl.col(c).cast(t) for c, t in schema.items()]).hash(7).alias("h"),
            *keep,
        )
        .drop_nulls("k")
    )


def key_of_row(table: str, salts: dict[str, int]) -> pl.Expr:
    """The identity of the resource a row of ``table`` belongs to (null for an id that is not a
    remapped one, or a type not in ``salts``)."""
    if table in TYPE_OF_TABLE:
        rtype = pl.lit(TYPE_OF_TABLE[table])
    elif table == "observation_components":
        rtype = pl.lit("Observation")
    else:
        rtype = pl.col("resource_type")
    return identity_expr(rtype, pl.col(OWNER_COLUMN[table]), salts)


def changed(made: pl.DataFrame, held: pl.DataFrame) -> np.ndarray:
    """The identities whose rows differ between the two, compared as multisets of rows."""
    on = ["k", "table", "h"]
    counts = (
        made.group_by(on)
        .len("made")
        .join(held.group_by(on).len("held"), on=on, how="full", coalesce=True)
    )
    differ = counts.filter(pl.col("made").fill_null(0) != pl.col("held").fill_null(0))
    return differ["k"].unique().to_numpy()
