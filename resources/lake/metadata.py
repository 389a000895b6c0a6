"""Output metadata read back from the written files, so it is the same for polars and Spark."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
from upath import UPath

PREVIEW_ROWS = 5
PREVIEW_COLUMNS = 12


def parquet_rows(files: Sequence[UPath]) -> int:
    if not files:
        return 0  # without pyarrow: hdh status on a fresh HDH_HOME loads none
    import pyarrow.parquet as pq

    total = 0
    for file in files:
        with file.open("rb") as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def table_schema(file: UPath, documented: dg.TableSchema | None = None) -> dg.TableSchema:
    """Columns and types as written, with descriptions from the asset's declared schema."""
    import pyarrow.parquet as pq

    with file.open("rb") as handle:
        schema = pq.ParquetFile(handle).schema_arrow
    declared = {c.name: c for c in documented.columns} if documented else {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=str(field.type),
                description=declared[field.name].description if field.name in declared else None,
                constraints=declared[field.name].constraints if field.name in declared else None,
            )
            for field in schema
        ]
    )


def markdown_preview(file: UPath) -> str:
    import polars as pl

    with file.open("rb") as handle:
        frame = pl.read_parquet(handle, n_rows=PREVIEW_ROWS)
    frame = frame.select(frame.columns[:PREVIEW_COLUMNS])
    if frame.width == 0:
        return "(no columns)"
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * frame.width
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *rows])


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."


def output_metadata(
    files: Sequence[UPath],
    path: UPath,
    partitions_written: int | None,
    documented: dg.TableSchema | None = None,
) -> dict:
    rows = parquet_rows(files)
    metadata: dict = {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "bytes": dg.MetadataValue.int(sum(f.stat().st_size for f in files)),
        "path": dg.MetadataValue.path(path.path),
        "files": dg.MetadataValue.int(len(files)),
    }
    if files:
        metadata["dagster/column_schema"] = dg.MetadataValue.table_schema(
            table_schema(files[0], documented)
        )
        if rows:
            metadata["preview"] = dg.MetadataValue.md(markdown_preview(files[0]))
    if partitions_written is not None:
        metadata["partitions_written"] = dg.MetadataValue.int(partitions_written)
    return metadata
