"""Subject pseudonyms and date offsets, keyed so that only the platform can recompute them.

- subject pseudonym = HMAC-SHA-256(key, "nir:" + normalised NIR), the same for DICOM, FHIR and
  claims, and recomputable from a GDPR request that carries the NIR;
- a source without a national identifier gets a provider-scoped pseudonym instead, which never
  collides with a national one;
- each subject's dates move by one offset derived from the pseudonym, so intervals survive and
  imaging and clinical dates stay aligned.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass

from hdh_assets.pseudonymisation.identifiers import normalise_nir

PSEUDONYM_HEX_LENGTH = 32  # 128 bits: collision-free for any population on Earth
MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class Pseudonymiser:
    """Keyed pseudonymisation; construct once per run from the key resource."""

    key: bytes
    max_date_shift_days: int = 365

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise ValueError(f"pseudonymisation key must hold at least {MIN_KEY_BYTES} bytes")
        if self.max_date_shift_days < 1:
            raise ValueError("max_date_shift_days must be at least 1")

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.digest(self.key, f"{purpose}:{value}".encode(), "sha256")

    def subject_pseudonym(self, national_identifier: str) -> str:
        """The platform-wide pseudonym of the person holding this NIR."""
        nir = normalise_nir(national_identifier)
        return self._digest("nir", nir).hex()[:PSEUDONYM_HEX_LENGTH]

    def provider_scoped_pseudonym(self, provider: str, local_identifier: str) -> str:
        """A pseudonym for a provider's own patient id, when no national identifier is known."""
        if not provider or not local_identifier:
            raise ValueError("provider and local identifier are both required")
        digest = self._digest("provider", f"{provider}\x1f{local_identifier.strip()}")
        return digest.hex()[:PSEUDONYM_HEX_LENGTH]

    def remap_uid(self, uid: str) -> str:
        """A keyed, deterministic replacement UID (``2.25.<integer>``, at most 44 characters).

        The same original UID always gives the same new one, in every file and every run, so
        references between instances (SEG, RTSTRUCT, SR) still resolve after remapping.
        """
        digest = self._digest("uid", uid.strip().rstrip("\x00"))
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def date_offset_days(self, pseudonym: str) -> int:
        """A per-subject shift in [-max, -1] or [1, max] days, never zero."""
        span = self.max_date_shift_days
        draw = int.from_bytes(self._digest("date-offset", pseudonym)[:8], "big") % (2 * span)
        return draw - span if draw < span else draw - span + 1

    def shift_date(self, value: dt.date, pseudonym: str) -> dt.date:
        return value + dt.timedelta(days=self.date_offset_days(pseudonym))
