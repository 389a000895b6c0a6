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
_HEX32 = r"^[0-9a-f]{32}$"


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


def id_identities(types: pl.Series, ids: pl.Series) -> np.ndarray:
    """:func:`id_identity` of many resources at once (int64)."""
    frame = pl.DataFrame({"t": types.cast(pl.String), "i": ids.cast(pl.String)})
    salts = {t: type_salt(t) for t in frame["t"].unique().to_list()}
    hexed = frame["i"].str.contains(_HEX32).fill_null(False).to_numpy()
    out = np.zeros(frame.height, np.int64)
    if hexed.any():
        part = frame.filter(pl.Series(hexed))
        out[hexed] = (
            part["i"].str.slice(0, 15).str.to_integer(base=16).to_numpy().astype(np.int64)
            ^ part["t"].replace_strict(salts, return_dtype=pl.Int64).to_numpy()
        )
    for at in np.flatnonzero(~hexed):
        out[at] = id_identity(frame["t"][int(at)], frame["i"][int(at)])
    return out


def declared_identity(record_type: str, pseudonymised_json: bytes) -> int:
    """A declared record's identity: its type and pseudonymised content (sorted keys)."""
    return h64(b"declared:" + record_type.encode() + pseudonymised_json)
