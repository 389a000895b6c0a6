"""A file's lines in chunks, and what byte operations can tell of them before any decoding.

Bounded memory whatever the file: it is read in chunks of about CHUNK_BYTES, each one buffer with
the offsets of its lines, exactly the lines the per-record reader yields one by one (gzip, a line
longer than a chunk, a file that stops being readable). Screening a chunk with byte operations
sets aside what must go back one by one before pyarrow sees it: a line that does not start with
``{``, holds ``null`` or NUL, is not UTF-8 or is nested deep enough to crash pyarrow.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

CHUNK_BYTES = 16 << 20  # lines read per chunk: bounded memory, whatever the file
SAFE_LINE = 4096  # shorter lines nest at most 2048 deep: pyarrow crashes near 10 000
MAX_OPENERS = 2048  # a long line with more ``{`` and ``[`` than this may nest too deep
_TYPE_PREFIX = re.compile(rb'\{\s*"resourceType"\s*:\s*"([A-Za-z]{1,64})"')
_NEEDLES = (b"null", b"\x00")
_NUMBERS = (b"NaN", b"Infinity")


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


class Chunk:
    """Consecutive lines of a file, as one buffer and the offsets of each line."""

    __slots__ = ("_ends", "_starts", "buffer", "first")

    def __init__(self, first: int, buffer: bytes):
        self.first = first  # number of the first line in the file
        self.buffer = buffer
        self._ends = self._starts = None

    @property
    def ends(self) -> np.ndarray:
        if self._ends is None:
            ends = np.flatnonzero(np.frombuffer(self.buffer, np.uint8) == 10) + 1
            if not self.buffer.endswith(b"\n"):
                ends = np.append(ends, len(self.buffer))
            self._ends = ends.astype(np.int64)
        return self._ends

    @property
    def starts(self) -> np.ndarray:
        if self._starts is None:
            self._starts = np.concatenate(([0], self.ends[:-1])).astype(np.int64)
        return self._starts

    def __len__(self) -> int:
        return len(self.ends)

    def line(self, i: int) -> bytes:
        return self.buffer[self.starts[i] : self.ends[i]]

    def data(self, part: np.ndarray) -> bytes:
        """The lines at ``part`` (ascending), each ending with a newline: what pyarrow reads."""
        if part[-1] - part[0] + 1 == len(part):  # consecutive lines: one slice
            data = self.buffer[self.starts[part[0]] : self.ends[part[-1]]]
        else:
            keep = np.zeros(len(self), bool)
            keep[part] = True
            data = np.frombuffer(self.buffer, np.uint8)[
                np.repeat(keep, self.ends - self.starts)
            ].tobytes()
        return data if data.endswith(b"\n") else data + b"\n"

    def holding(self, needle: bytes) -> np.ndarray:
        """Indices of the lines that hold ``needle``."""
        if self.buffer.find(needle) < 0:
            return np.zeros(0, np.int64)
        lines = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(),
            len(self),
            [None, pa.py_buffer(np.concatenate(([0], self.ends))), pa.py_buffer(self.buffer)],
        )
        return np.flatnonzero(pl.from_arrow(lines).bin.contains(needle).to_numpy())

    def subset(self, indices: list[int]) -> Chunk:
        """The lines at ``indices`` as a chunk of their own (their numbers are not kept)."""
        return Chunk(0, self.data(np.array(indices, np.int64)))


def read_chunks(path: Path) -> Iterator[Chunk | None]:
    """The file's lines in chunks of about CHUNK_BYTES, exactly the lines the reader yields one
    by one; ``None`` last when the file stops being readable (the reader's ``unreadable``). After
    a read error the file is read again line by line, as the reader does, past what was read."""
    done = 0
    try:
        with _open(path) as handle:
            carry = b""
            while block := handle.read(CHUNK_BYTES):
                data = carry + block if carry else block
                cut = data.rfind(b"\n") + 1
                if not cut:  # a line longer than a block
                    carry = data
                    continue
                carry = data[cut:]
                chunk = Chunk(done + 1, data[:cut])
                yield chunk
                done += len(chunk)
            if carry:
                yield Chunk(done + 1, carry)
    except (OSError, EOFError, gzip.BadGzipFile):
        yield from _line_by_line(path, done)


def _line_by_line(path: Path, done: int) -> Iterator[Chunk | None]:
    """The lines after the first ``done``, read as the per-record reader reads them, in chunks;
    ``None`` last if the file stops being readable again."""
    lines: list[bytes] = []
    size, first = 0, done + 1
    try:
        with _open(path) as handle:
            for number, line in enumerate(handle, start=1):
                if number <= done:
                    continue
                lines.append(line)
                size += len(line)
                if size >= CHUNK_BYTES:
                    yield Chunk(first, b"".join(lines))
                    lines, size, first = [], 0, number + 1
    except (OSError, EOFError, gzip.BadGzipFile):
        if lines:
            yield Chunk(first, b"".join(lines))
        yield None
        return
    if lines:
        yield Chunk(first, b"".join(lines))


def screen(chunk: Chunk, numbers: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(blank, fit): blank lines are no records; fit ones may be decoded column-wise.
    ``numbers``: also refuse lines holding ``NaN`` or ``Infinity`` (else caught after decoding,
    where pyarrow reads them as floats)."""
    buffer, starts, ends = chunk.buffer, chunk.starts, chunk.ends
    fit = np.frombuffer(buffer, np.uint8)[starts] == ord("{")
    blank = np.zeros(len(chunk), bool)
    for i in np.flatnonzero(~fit):
        blank[i] = not chunk.line(i).strip()
    try:
        buffer.decode("utf-8")
    except UnicodeDecodeError:
        for i in np.flatnonzero(fit):
            try:
                chunk.line(i).decode("utf-8")
            except UnicodeDecodeError:
                fit[i] = False
    for needle in _NEEDLES + (_NUMBERS if numbers else ()):
        fit[chunk.holding(needle)] = False
    for i in np.flatnonzero(ends - starts >= SAFE_LINE):
        line = chunk.line(i)
        if line.count(b"{") + line.count(b"[") > MAX_OPENERS:
            fit[i] = False
    return blank, fit


def lines_by_type(chunk: Chunk, fit: np.ndarray) -> dict[str, np.ndarray]:
    """Fit lines by resource type, read from the line's start (``{"resourceType":"X"``);
    lines that do not start so are decoded with the chunk's main type and checked after."""
    indices = np.flatnonzero(fit)
    if not len(indices):
        return {}
    match = _TYPE_PREFIX.match(chunk.line(indices[0]))
    found: dict[str, list[int]] = {}
    unknown = []
    rest = indices
    if match is not None:
        prefix = np.frombuffer(match.group(0), np.uint8)
        starts = chunk.starts[indices]
        long_enough = chunk.ends[indices] - starts > len(prefix)
        at = np.minimum(starts[:, None] + np.arange(len(prefix)), len(chunk.buffer) - 1)
        same = long_enough & (np.frombuffer(chunk.buffer, np.uint8)[at] == prefix).all(1)
        found[match.group(1).decode()] = indices[same].tolist()
        rest = indices[~same]
    for i in rest:
        match = _TYPE_PREFIX.match(chunk.line(i))
        if match is None:
            unknown.append(int(i))
        else:
            found.setdefault(match.group(1).decode(), []).append(int(i))
    if unknown:
        main = max(found, key=lambda t: len(found[t])) if found else "Observation"
        found.setdefault(main, []).extend(unknown)
    return {t: np.array(sorted(v), np.int64) for t, v in found.items()}
