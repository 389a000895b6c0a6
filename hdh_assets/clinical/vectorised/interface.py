"""What the column-wise path needs of the batch run it works for, as protocols.

The column-wise path hands every line it cannot vouch for to the per-record path, and commits its
own rows into the tables and counts the per-record path fills. It knows the run only through
these few methods, so that it never imports :mod:`hdh_assets.clinical.ingest` (which imports this
package: one direction only) and the per-record path can change freely behind them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from hdh_assets.clinical.reader import RawRecord
from hdh_assets.pseudonymisation.fhir import FhirContext

LearnRecord = Callable[[FhirContext, RawRecord], None]
"""The per-record first pass for one record: registers a Patient (or a Bundle's fullUrl)."""


class SeenIdentities(Protocol):
    """The identities (keyed resource type and id, as integers) the batch has met, both paths."""

    def expect_columns(self) -> None:
        """Rows will be made column-wise: keep identities where :meth:`contains` finds them."""

    def contains(self, identities: np.ndarray) -> np.ndarray:
        """Which of these identities the batch has met already, by either path."""

    def earlier(self, identities: np.ndarray) -> np.ndarray:
        """Which of these identities an earlier batch holds."""

    def add_located(self, identities: np.ndarray, locations: np.ndarray) -> None:
        """Identities of rows made column-wise, with where their lines are (file << 32 | line),
        so that a later equal record is compared with the line read again."""


class PerRecordPath(Protocol):
    """The batch run as the column-wise path drives it: the per-record path for the records it
    sends back, and the tables, counts and identities both paths share."""

    context: FhirContext
    seen: SeenIdentities

    def key_of(self, name: str) -> str:
        """The opaque key of a file of the batch, as the counts and quarantine name it."""

    def locate(self, path: Path, name: str) -> int:
        """A number for a file whose column-wise rows are registered by location."""

    def process(self, record: RawRecord, key: str) -> None:
        """One record, read one by one: counted, then ingested, a duplicate or quarantined."""

    def count_records_in(self, key: str, count: int) -> None:
        """Records of a file read column-wise (``process`` counts its own)."""

    def add_frames(self, key: str, frames: dict[str, pl.DataFrame], count: int) -> None:
        """``count`` resources ingested column-wise, their rows as frames per table."""

    def hold(self, key: str, identities: np.ndarray, *, frames: dict[str, pl.DataFrame]) -> None:
        """Rows of resources an earlier batch holds: compared with its rows at the end."""
