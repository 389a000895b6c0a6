"""pyarrow's JSON reader, against an explicit schema, on the lines of a chunk.

pyarrow refuses a whole block for one bad line (a value of the wrong JSON type, a repeated key,
two objects on one line), so a piece of lines that does not decode is split in two until the lines
that do not decode are isolated (MIN_PIECE): they go back one by one, the others are read here.
Lines are decoded against the part of their type's shape met so far (declared absent fields cost
as much as present ones) and conformed to the whole shape afterwards, so that every piece has the
same columns and types.
"""

from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.json as pj

from hdh_assets.clinical.vectorised.chunking import Chunk
from hdh_assets.clinical.vectorised.expressions import any_of, fields_outside, not_finite
from hdh_assets.clinical.vectorised.shapes import (
    POLARS_SHAPES,
    SCHEMAS,
    S,
    merge_parts,
    polars_dtype,
    shape_part,
)
from hdh_assets.pseudonymisation.fhir import REMOVED_KEYS

MIN_PIECE = 16  # a piece of a chunk this small that does not decode goes back line by line
MAX_SCHEMA_DEPTH = 48


class DecodedPiece(NamedTuple):
    """Lines of one resource type decoded together, ready for the polars expressions."""

    part: np.ndarray  # indices of the lines in their chunk, ascending
    frame: pl.DataFrame  # every column of the shape, those absent from the file null
    observed: dict[str, pl.DataType]  # the part of the shape met so far, as polars types
    extra: np.ndarray  # rows holding a field outside the shape, or a NaN or infinite float


def _schema_depth(dtype: pa.DataType) -> int:
    deepest, stack = 0, [(dtype, 0)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if pa.types.is_struct(current):
            stack.extend((current.field(i).type, depth + 1) for i in range(current.num_fields))
        elif pa.types.is_list(current) or pa.types.is_large_list(current):
            stack.append((current.value_type, depth + 1))
    return deepest


def _read(chunk: Chunk, part: np.ndarray, schema: pa.Schema, unexpected: str):
    longest = int((chunk.ends[part] - chunk.starts[part]).max())
    try:
        table = pj.read_json(
            io.BytesIO(chunk.data(part)),
            read_options=pj.ReadOptions(block_size=max(1 << 21, 2 * longest + 2)),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior=unexpected
            ),
        )
    except Exception:
        return None
    if table.num_rows != len(part):
        return None  # two objects on one line, for one
    if any(_schema_depth(f.type) > MAX_SCHEMA_DEPTH for f in table.schema):
        return None
    return table


def decode(
    chunk: Chunk, indices: np.ndarray, schema: pa.Schema, unexpected: str = "infer"
) -> tuple[list[tuple[np.ndarray, pa.Table]], list[int]]:
    """Decode the lines at ``indices``; a piece that does not decode is split in two, down to
    MIN_PIECE lines, which go back one by one."""
    pieces, failed, stack = [], [], [indices]
    while stack:
        part = stack.pop()
        if not len(part):
            continue
        table = _read(chunk, part, schema, unexpected)
        if table is not None:
            pieces.append((part, table))
        elif len(part) <= MIN_PIECE:
            failed.extend(int(i) for i in part)
        else:
            middle = len(part) // 2
            stack += [part[middle:], part[:middle]]
    return pieces, failed


def _conform(array: pa.Array, target: pa.DataType) -> pa.Array:
    """``array`` (of a part of the shape) as an array of the whole shape: absent fields null."""
    if array.type == target:
        return array
    if pa.types.is_struct(target):
        children, present = [], {array.type.field(i).name for i in range(array.type.num_fields)}
        for i in range(target.num_fields):
            field = target.field(i)
            if field.name in present:
                children.append(_conform(array.field(field.name), field.type))
            else:
                children.append(pa.nulls(len(array), field.type))
        return pa.StructArray.from_arrays(
            children,
            fields=[target.field(i) for i in range(target.num_fields)],
            mask=array.is_null() if array.null_count else None,
        )
    if pa.types.is_list(target):
        return pa.ListArray.from_arrays(
            array.offsets,
            _conform(array.values, target.value_type),
            type=target,
            mask=array.is_null() if array.null_count else None,
        )
    return array.cast(target)


def conformed(table: pa.Table, known: pa.DataType, shape: pa.Schema) -> pa.Table:
    """The decoded table with the columns of the whole shape: those met as ``known`` types them
    (fields outside the shape dropped), the others null."""
    fields, columns = [], []
    for field in shape:
        if known.get_field_index(field.name) >= 0:
            target = known.field(field.name).type
            column = table.column(field.name)
            chunks = [_conform(chunk, target) for chunk in column.chunks]
            columns.append(pa.chunked_array(chunks, type=target))
            fields.append(pa.field(field.name, target))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
            fields.append(field)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


class ShapeDecoder:
    """Decodes lines type by type, remembering per type the part of the shape met so far in the
    batch: pyarrow is told only that part, widened when a line uses a field not met before."""

    def __init__(self) -> None:
        self._met: dict[str, pa.DataType] = {}  # per type, the part of the shape met so far

    def decode_type(
        self, rtype: str, chunk: Chunk, indices: np.ndarray
    ) -> tuple[list[DecodedPiece], list[int]]:
        """The decoded pieces of the lines of one resource type, and the lines that do not decode.

        pyarrow is told only the part of the shape met so far in the file (declared absent
        fields cost as much as present ones); a field of the shape met for the first time
        widens that part and the lines are decoded again."""
        shape = SCHEMAS[rtype]
        shape_type = pa.struct(list(shape))
        known = self._met.get(rtype)
        if known is None:  # a first look at a few lines, for the part of the shape they use
            known = pa.struct([("resourceType", S), ("id", S)])
            for _, table in decode(chunk, indices[:256], pa.schema(list(known)))[0]:
                known = merge_parts(known, shape_part(pa.struct(list(table.schema)), shape_type))
            self._met[rtype] = known
        while True:
            pieces, failed = decode(chunk, indices, pa.schema(list(known)))
            met = known
            for _, table in pieces:
                met = merge_parts(met, shape_part(pa.struct(list(table.schema)), shape_type))
            if met == known:
                break
            known = self._met[rtype] = met
        out = []
        expected = dict(POLARS_SHAPES[rtype])
        observed = {
            name: polars_dtype(known.field(name).type)
            for name in known.names
            if name in shape.names
        }
        for part, table in pieces:
            raw = pl.from_arrow(table)
            extras = []
            for column, dtype in raw.schema.items():
                extras += not_finite(pl.col(column), dtype)  # NaN, Infinity: not JSON
                if column in REMOVED_KEYS or (rtype == "Patient" and column == "name"):
                    continue  # removed elements are never read: whatever they hold
                extras += fields_outside(pl.col(column), dtype, expected.get(column))
            extra = (
                raw.select(any_of(extras)).to_series().to_numpy()
                if extras
                else np.zeros(raw.height, bool)
            )
            frame = pl.from_arrow(conformed(table, known, shape)).rechunk()
            out.append(DecodedPiece(part, frame, observed, extra))
        return out, failed
