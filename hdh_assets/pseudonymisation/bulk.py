"""The same keyed digests as :mod:`hmac`, for many values at once (column-wise ingestion).

HMAC-SHA-256 hashes the key's two pads before each message; with one key for a whole batch, the
two padded states are hashed once and copied for each value, which is about three times faster
than :func:`hmac.digest` per value, with byte-identical results (RFC 2104). Pure functions over
the key: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from hdh_assets.pseudonymisation.identifiers import InvalidNationalIdentifier, normalise_nir

_BLOCK = 64  # SHA-256 block size


class KeyedSha256:
    """``hmac.digest(key, message, "sha256")`` with the key's pads hashed once."""

    def __init__(self, key: bytes):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hexdigests(self, messages: Iterable[bytes], length: int = 64) -> list[str]:
        """Hex digests (first ``length`` characters) of every message, in order."""
        inner_copy, outer_copy = self._inner.copy, self._outer.copy
        out = []
        append = out.append
        for message in messages:
            inner = inner_copy()
            inner.update(message)
            outer = outer_copy()
            outer.update(inner.digest())
            append(outer.hexdigest()[:length])
        return out


def remap_ids(key: bytes, provider: str, resource_ids: Iterable[str]) -> list[str]:
    """``[fhir.remap_id(key, provider, i) for i in resource_ids]``, faster."""
    prefix = f"fhir-id:{provider}\x1f"
    return KeyedSha256(key).hexdigests(
        ((prefix + resource_id).encode() for resource_id in resource_ids), 32
    )


def date_offsets(key: bytes, max_date_shift_days: int, pseudonyms: Iterable[str]) -> list[int]:
    """``[Pseudonymiser(key, max).date_offset_days(p) for p in pseudonyms]``, faster."""
    span = max_date_shift_days
    hasher = KeyedSha256(key)
    out = []
    for pseudonym in pseudonyms:
        draw = int.from_bytes(hasher.digest(f"date-offset:{pseudonym}".encode())[:8], "big")
        draw %= 2 * span
        out.append(draw - span if draw < span else draw - span + 1)
    return out


def subject_pseudonyms(key: bytes, national_identifiers: Iterable[str]) -> list[str | None]:
    """``Pseudonymiser(key).subject_pseudonym(v)`` for each value, None where it is not a valid
    NIR (where that method raises :class:`InvalidNationalIdentifier`)."""
    hasher = KeyedSha256(key)
    out: list[str | None] = []
    for value in national_identifiers:
        try:
            nir = normalise_nir(value)
        except InvalidNationalIdentifier:
            out.append(None)
            continue
        out.append(hasher.digest(f"nir:{nir}".encode()).hex()[:32])
    return out


def provider_pseudonyms(key: bytes, provider: str, local_identifiers: Iterable[str]) -> list[str]:
    """``Pseudonymiser(key).provider_scoped_pseudonym(provider, i)`` for each identifier."""
    hasher = KeyedSha256(key)
    out = []
    for local in local_identifiers:
        if not provider or not local:
            raise ValueError("provider and local identifier are both required")
        out.append(hasher.digest(f"provider:{provider}\x1f{local.strip()}".encode()).hex()[:32])
    return out
