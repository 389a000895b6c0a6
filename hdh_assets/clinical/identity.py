"""Integer identities of ingested records, so that millions of them fit in numpy arrays.

A resource is known by (resource type, remapped id). Remapped ids are keyed hashes already, so
their first 60 bits mixed with a salt of the type are a good 63-bit identity, computed alike one
by one and column-wise. A declared record has no id: it is known by its pseudonymised content.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import polars as pl

_ID_BITS = (1 << 60) - 1
HEX32 = r"^[0-9a-f]{32}$"  # a remapped id


def h64(value: str | bytes) -> int:
    data = value.encode() if isinstance(value, str) else value
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@lru_cache(maxsize=1024)
def type_salt(resource_type: str) -> int:
    return h64(f"resource-type:{resource_type}") & _ID_BITS


def id_identity(resource_type: str, remapped_id: str) -> int:
    """A resource's identity as a 63-bit integer."""
    if len(remapped_id) == 32:
        try:
            return int(remapped_id[:15], 16) ^ type_salt(resource_type)
        except ValueError:
            pass
    return h64(repr((resource_type, remapped_id))) >> 1


def identity_expr(rtype: pl.Expr, rid: pl.Expr, salts: dict[str, int]) -> pl.Expr:
    """:func:`id_identity` as a polars expression, for remapped ids (null for any other id, or
    a type missing from ``salts``)."""
    salt = rtype.replace_strict(salts, default=None, return_dtype=pl.Int64)
    number = rid.str.slice(0, 15).str.to_integer(base=16, strict=False)
    return pl.when(rid.str.contains(HEX32)).then(number.xor(salt))


def id_identities(owners: pl.LazyFrame) -> np.ndarray:
    """:func:`id_identity` of every row of ``owners`` (columns ``t``: type, ``i``: remapped id),
    as int64, computed by polars: 8 bytes per resource whatever the size of the lake."""
    salts = {t: type_salt(t) for t in owners.select(pl.col("t").unique()).collect()["t"]}
    hexed = pl.col("i").str.contains(HEX32).fill_null(False)
    fast = (
        owners.filter(hexed)
        .select(identity_expr(pl.col("t"), pl.col("i"), salts))
        .collect(engine="streaming")
        .to_series()
        .to_numpy()
    )
    rest = owners.filter(~hexed).collect()  # not a keyed hash: never in the lake, but possible
    slow = np.fromiter(
        (id_identity(t, i) for t, i in rest.iter_rows()), np.int64, count=rest.height
    )
    return np.concatenate([fast.astype(np.int64), slow])


def declared_identity(record_type: str, pseudonymised_json: bytes) -> int:
    """A declared record's identity: its type and pseudonymised content (sorted keys)."""
    return h64(b"declared:" + record_type.encode() + pseudonymised_json)
