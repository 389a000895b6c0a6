"""Who must no longer appear: the pseudonyms of verified objection and erasure requests.

The registry is the source; the lake table ``gdpr/exclusions`` is its snapshot, read at every
ingestion boundary (the lake IO manager for every asset with a subject column, DICOM ingestion
for the store), and by the proof checks.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

EXCLUSIONS_PATH = ("gdpr", "exclusions")
SCHEMA = {"subject_pseudonym": pl.String, "request_id": pl.String, "request_type": pl.String}


def exclusions_frame(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    """(pseudonym, request id, type) rows as the snapshot table, one row per pseudonym."""
    frame = pl.DataFrame(rows, schema=SCHEMA, orient="row")
    return frame.unique("subject_pseudonym", keep="first").sort("subject_pseudonym")


def excluded_pseudonyms(lake_root: Path | str) -> frozenset[str]:
    """The snapshot's pseudonyms; none when it was never written."""
    folder = Path(str(lake_root)).joinpath(*EXCLUSIONS_PATH)
    files = [p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_"))]
    if not files:
        return frozenset()
    return frozenset(pl.read_parquet(files, columns=["subject_pseudonym"])["subject_pseudonym"])
