"""The column-wise path's driver: both passes over an NDJSON file, chunk after chunk.

It screens, decodes and flattens each chunk with the other modules of this package, commits the
rows it vouches for and hands every other line to the per-record path, in line order. It knows the
batch run only through :class:`~hdh_assets.clinical.vectorised.interface.PerRecordPath`, and counts
per file how many lines went each way (:class:`LineCounts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from hdh_assets.clinical.reader import RawRecord
from hdh_assets.clinical.vectorised.chunking import Chunk, lines_by_type, read_chunks, screen
from hdh_assets.clinical.vectorised.decoding import DecodedPiece, ShapeDecoder, decode
from hdh_assets.clinical.vectorised.interface import LearnRecord, PerRecordPath
from hdh_assets.clinical.vectorised.rows import PieceRows, RowMaker
from hdh_assets.clinical.vectorised.shapes import LEARN_SCHEMA, SCHEMAS
from hdh_assets.pseudonymisation.bulk import provider_pseudonyms, subject_pseudonyms
from hdh_assets.pseudonymisation.fhir import Subject, local_key, national_key

PREFETCH = False  # True: decode the next chunk in a thread meanwhile (+~300 MB peak RSS)
_END = object()
Result = TypeVar("Result")


@dataclass
class LineCounts:
    """Where the records of one NDJSON file went in the second pass. ``per_record`` counts every
    record handed to the per-record path: the lines sent back, and the one record standing for a
    file that stops being readable; so the file's ``records_in`` is ``columnwise + per_record``."""

    columnwise: int = 0
    per_record: int = 0


PreparedChunk = tuple[np.ndarray, set[int], list[tuple[str, list[DecodedPiece]]]]
PlannedChunk = tuple[np.ndarray, set[int], list[tuple[str, np.ndarray, PieceRows]]]


class NdjsonFastPath:
    """Column-wise ingestion of NDJSON files for one batch run (see the package docstring)."""

    def __init__(self, run: PerRecordPath, learn_record: LearnRecord) -> None:
        """``learn_record``: the per-record path's way of registering a Patient, so that both
        paths learn the same subjects in the same order."""
        self.run = run
        self._learn_record = learn_record
        run.seen.expect_columns()
        self.context = run.context
        self.decoder = ShapeDecoder()
        self.rows = RowMaker(run.context, run.seen)
        self._lines: dict[str, LineCounts] = {}

    def line_counts(self) -> dict[str, LineCounts]:
        """Per file key, the lines of the second pass handled column-wise and sent back."""
        return {key: LineCounts(c.columnwise, c.per_record) for key, c in self._lines.items()}

    # first pass ----------------------------------------------------------------------------------
    def learn_file(self, path: Path, name: str) -> None:
        """Register the file's Patients, as the per-record first pass does, in line order."""
        for chunk in read_chunks(path):
            if chunk is None:
                return
            candidates = chunk.holding(b'"Patient"').tolist()  # the lines parsed one by one
            if not candidates:
                continue
            picked = chunk.subset(candidates)
            blank, fit = screen(picked, numbers=True)
            registrations: list[tuple[int, str, Subject | None]] = []
            pieces, failed = decode(picked, np.flatnonzero(fit), LEARN_SCHEMA, "ignore")
            failed += [int(i) for i in np.flatnonzero(~fit & ~blank)]
            for part, table in pieces:
                registrations += self._learn_piece(part, table)
            registrations += [(i, "", None) for i in failed]
            for i, remapped, subject in sorted(registrations, key=lambda r: r[0]):
                if subject is None:  # one by one, in its turn
                    self._learn_record(
                        self.context,
                        RawRecord(name, chunk.first + candidates[i], picked.line(i)),
                    )
                else:
                    self.context.subjects[remapped] = subject

    def _learn_piece(self, part: np.ndarray, table: pa.Table) -> list[tuple]:
        """(line index, remapped id, subject) of the Patients of one decoded piece, as
        register_patient makes them: the first identifier of a national system (in the
        provider's order) that is a valid NIR, else a provider-scoped pseudonym of the id.
        Subject None: a Patient to learn one by one (no id)."""
        context = self.context
        key = context.pseudonymiser.key
        patients = (
            pl.from_arrow(table)
            .with_columns(_i=pl.Series(part))
            .filter(pl.col("resourceType") == "Patient")
        )
        if not patients.height:
            return []
        systems = list(context.national_systems)
        carried = (
            patients.select("_i", "identifier")
            .with_columns(_pos=pl.int_ranges(0, pl.col("identifier").list.len()))
            .explode("identifier", "_pos")
            .drop_nulls("identifier")
            .unnest("identifier")
            .filter((pl.col("system") != "") & (pl.col("value") != ""))
        )
        found = carried.filter(pl.col("system").is_in(systems))
        values = found["value"].unique().to_list()
        pseudonyms = dict(zip(values, subject_pseudonyms(key, values), strict=True))
        national = (
            found.with_columns(
                _pseudonym=pl.col("value").replace_strict(pseudonyms, return_dtype=pl.String),
                _rank=pl.col("system").replace_strict(
                    {s: r for r, s in reversed(list(enumerate(systems)))}, return_dtype=pl.Int64
                ),
            )
            .drop_nulls("_pseudonym")
            .sort("_i", "_rank", "_pos")
            .unique("_i", keep="first", maintain_order=True)
        )
        chosen = dict(zip(national["_i"].to_list(), national["_pseudonym"].to_list(), strict=True))
        out, local = [], []
        for i, resource_id in zip(patients["_i"].to_list(), patients["id"].to_list(), strict=True):
            if not resource_id:
                out.append((i, "", None))
            elif i in chosen:
                out.append((i, resource_id, Subject(chosen[i], "national")))
            else:
                out.append((i, resource_id, "provider"))
                local.append(f"Patient/{resource_id}")
        scoped = iter(provider_pseudonyms(key, context.provider, local)) if local else iter(())
        out = [
            (i, rid, Subject(next(scoped), "provider") if s == "provider" else s)
            for i, rid, s in out
        ]
        self._remember(out, found, pseudonyms, carried.filter(~pl.col("system").is_in(systems)))
        remapped = iter(context.remap_many([r[1] for r in out if r[2] is not None]))
        return [(i, next(remapped) if s is not None else "", s) for i, _, s in out]

    def _remember(
        self, out: list[tuple], national: pl.DataFrame, pseudonyms: dict, local: pl.DataFrame
    ) -> None:
        """The identifiers these Patients carry, indexed as register_patient indexes them, so
        that references by identifier resolve alike on both paths."""
        subjects = {i: s for i, _, s in out if s is not None}
        for i, value in national.select("_i", "value").rows():
            if i in subjects and pseudonyms.get(value):
                self.context.remember(national_key(pseudonyms[value]), subjects[i])
        for i, system, value in local.select("_i", "system", "value").rows():
            if i in subjects:
                self.context.remember(local_key(system, value), subjects[i])

    # second pass ---------------------------------------------------------------------------------
    def ingest_file(self, path: Path, name: str) -> None:
        """Chunk after chunk. With PREFETCH, the next chunk is read, screened and decoded in a
        thread (pyarrow works without the GIL) while this one is pseudonymised and flattened."""
        run = self.run
        key = run.key_of(name)
        number = run.locate(path, name)
        self._lines.setdefault(key, LineCounts())
        chunks = read_chunks(path)
        if not PREFETCH:
            for chunk in chunks:
                if chunk is None:
                    self._send_back(RawRecord(name, 0, None, error="unreadable"), key)
                    break
                self._finish(name, key, number, *self._prepare(iter([chunk])))
            return
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(self._prepare, chunks)
            while True:
                chunk, prepared = pending.result()
                if chunk is _END:
                    break
                if chunk is None:
                    self._send_back(RawRecord(name, 0, None, error="unreadable"), key)
                    break
                pending = pool.submit(self._prepare, chunks)
                self._finish(name, key, number, chunk, prepared)

    def _send_back(self, record: RawRecord, key: str) -> None:
        """One record for the per-record path, counted as such."""
        self._lines[key].per_record += 1
        self.run.process(record, key)

    def _back(self, name: str, key: str, chunk: Chunk, lines: range) -> None:
        """Lines read one by one, in order (blank lines are no records)."""
        for i in lines:
            line = chunk.line(i)
            if line.strip():
                self._send_back(RawRecord(name, chunk.first + i, line), key)

    @staticmethod
    def _guarded(step: Callable[..., Result], *args: object) -> Result | None:
        """``step(*args)``, or None if it failed: what it was doing is then done one by one."""
        try:
            return step(*args)
        except Exception:
            return None

    def _prepare(self, chunks: Iterator[Chunk | None]) -> tuple[object, PreparedChunk | None]:
        """Read, screen and decode the next chunk: (chunk, (blank, back, pieces per type)), or
        (chunk, None) if that failed unexpectedly."""
        chunk = next(chunks, _END)
        if chunk is None or chunk is _END:
            return chunk, None
        return chunk, self._guarded(self._decoded, chunk)

    def _decoded(self, chunk: Chunk) -> PreparedChunk:
        blank, fit = screen(chunk)
        back = {int(i) for i in np.flatnonzero(~fit & ~blank)}
        decoded = []
        for rtype, indices in lines_by_type(chunk, fit).items():
            if rtype not in SCHEMAS:
                back.update(int(i) for i in indices)
                continue
            pieces, failed = self.decoder.decode_type(rtype, chunk, indices)
            back.update(failed)
            decoded.append((rtype, pieces))
        return blank, back, decoded

    def _finish(
        self, name: str, key: str, number: int, chunk: Chunk, prepared: PreparedChunk | None
    ) -> None:
        """Pseudonymise and flatten a decoded chunk, then hand back the lines not vouched for.
        Nothing is committed before every row is computed: should that fail unexpectedly, the
        whole chunk is read one by one."""
        planned = self._guarded(self._plan, chunk, prepared) if prepared is not None else None
        if planned is None:
            self._back(name, key, chunk, range(len(chunk)))
            return
        blank, back, results = planned
        for _, part, result in results:
            self._commit(part, result, key, number, chunk.first)
        columnwise = int(np.count_nonzero(~blank)) - len(back)
        self.run.count_records_in(key, columnwise)
        self._lines[key].columnwise += columnwise
        for i in sorted(back):
            self._send_back(RawRecord(name, chunk.first + i, chunk.line(i)), key)

    def _plan(self, chunk: Chunk, prepared: PreparedChunk) -> PlannedChunk:
        """(blank lines, lines going back, rows per decoded piece) of one chunk."""
        blank, back, decoded = prepared
        back = set(back)
        results = []
        for rtype, pieces in decoded:
            for piece in pieces:
                results.append((rtype, piece.part, self.rows.rows_of(rtype, piece)))
        # an identity (type, id) met twice in the chunk, or on a line going back, sends all its
        # lines back: one by one, in line order, the first is ingested and the others compared
        for _, part, result in results:
            back.update(int(i) for i in part[~result.fast])
        if not any(result.fast.any() for _, _, result in results):
            back.update(int(i) for _, part, _ in results for i in part)
            results = []  # nothing column-wise here: no identity to compare
        claimed = []
        if results:
            claimed = [c for c in (_claim(chunk.line(i)) for i in back) if c is not None]
        keys = [
            pl.DataFrame(
                {"t": [t for t, _ in claimed], "i": [i for _, i in claimed]},
                schema={"t": pl.String, "i": pl.String},
            ).with_columns(n=pl.lit(-1, pl.Int64), row=pl.lit(-1, pl.Int64))
        ]
        for n, (rtype, _, result) in enumerate(results):
            rows = np.flatnonzero(result.fast)
            keys.append(
                pl.DataFrame(
                    {"i": result.raw_ids.gather(rows), "row": rows.astype(np.int64)}
                ).select(pl.lit(rtype).alias("t"), "i", pl.lit(n, pl.Int64).alias("n"), "row")
            )
        keys = pl.concat(keys, how="vertical")
        twice = keys.filter(pl.struct("t", "i").is_duplicated() & (pl.col("n") >= 0))
        for (n,), rows in twice.group_by(["n"]):
            _, part, result = results[n]
            rows = rows["row"].to_numpy()
            result.fast[rows] = False
            back.update(int(i) for i in part[rows])
        return blank, back, results

    def _commit(
        self, part: np.ndarray, result: PieceRows, key: str, number: int, first: int
    ) -> None:
        """Rows of resources new to the lake go to the tables; those of resources an earlier
        batch holds wait to be compared with its rows, at the end of the batch."""
        run = self.run
        fast = result.fast
        if not fast.any():
            return
        plain, held = fast & ~result.earlier, fast & result.earlier
        if plain.any():
            run.add_frames(key, result.frames(np.flatnonzero(plain)), int(np.count_nonzero(plain)))
        if held.any():
            run.hold(key, result.identities[held], frames=result.frames(np.flatnonzero(held)))
        lines = part[fast] + first
        run.seen.add_located(
            result.identities[fast], (np.int64(number) << 32) | lines.astype(np.int64)
        )


def _claim(line: bytes) -> tuple[str, str] | None:
    """(type, id) a line read one by one would be known by, if it has a usable id."""
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(resource, dict):
        return None
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if isinstance(rtype, str) and rtype and isinstance(rid, str) and rid:
        return rtype, rid
    return None
