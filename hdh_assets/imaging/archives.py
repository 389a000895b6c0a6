"""The files of a landed batch, archives opened: zip, tar (.tar, .tar.gz, .tgz) and single .gz.

Each member is yielded as a landed file of its own, named ``archive!member``; nothing is extracted
to disk. Unsafe members (absolute paths, ``..``, links, devices) and members past the size limit are
reported as bad, never followed. An archive that cannot be opened is one bad file.
"""

from __future__ import annotations

import gzip
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hdh_assets.landing.batches import is_control_file

MAX_MEMBER_BYTES = 2 * 1024**3  # a single DICOM instance larger than this is not plausible


@dataclass(frozen=True)
class LandedFile:
    """One file to classify: its name inside the batch and a way to read its bytes."""

    name: str
    path: Path  # the file on disk (the archive, for a member)
    member: str | None = None
    error: str = ""  # set when the archive or member cannot be read safely

    def read(self) -> bytes:
        if self.error:
            raise ValueError(self.error)
        if self.member is None:
            return self.path.read_bytes()
        return read_member(self.path, self.member)


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar" if name.endswith((".tar.gz", ".tgz")) else "gz"
    if name.endswith(".tar"):
        return "tar"
    return None


def _safe(member: str) -> bool:
    pure = PurePosixPath(member)
    return not pure.is_absolute() and ".." not in pure.parts and member.strip() != ""


def read_member(archive: Path, member: str) -> bytes:
    kind = _kind(archive)
    if kind == "zip":
        with zipfile.ZipFile(archive) as handle:
            info = handle.getinfo(member)
            if info.file_size > MAX_MEMBER_BYTES:
                raise ValueError("archive member larger than the size limit")
            return handle.read(info)
    if kind == "tar":
        with tarfile.open(archive) as handle:
            extracted = handle.extractfile(handle.getmember(member))
            if extracted is None:
                raise ValueError("archive member is not a regular file")
            return extracted.read(MAX_MEMBER_BYTES + 1)
    if kind == "gz":
        with gzip.open(archive) as handle:
            return handle.read(MAX_MEMBER_BYTES + 1)
    raise ValueError("not an archive")


def _members(path: Path, kind: str, name: str) -> Iterator[LandedFile]:
    if kind == "zip":
        with zipfile.ZipFile(path) as handle:
            for info in handle.infolist():
                if info.is_dir():
                    continue
                error = "" if _safe(info.filename) else "unsafe member path"
                if info.file_size > MAX_MEMBER_BYTES:
                    error = "archive member larger than the size limit"
                yield LandedFile(f"{name}!{info.filename}", path, info.filename, error)
    elif kind == "tar":
        with tarfile.open(path) as handle:
            for info in handle.getmembers():
                if info.isdir():
                    continue
                error = ""
                if not info.isfile():
                    error = "archive member is a link or device, not a file"
                elif not _safe(info.name):
                    error = "unsafe member path"
                elif info.size > MAX_MEMBER_BYTES:
                    error = "archive member larger than the size limit"
                yield LandedFile(f"{name}!{info.name}", path, info.name, error)
    else:
        yield LandedFile(f"{name}!{path.name.removesuffix('.gz')}", path, path.name)


def landed_files(batch: Path) -> Iterator[LandedFile]:
    """Every file of the batch in name order, archive members in place of their archives."""
    for path in sorted(p for p in batch.rglob("*") if p.is_file()):
        relative = path.relative_to(batch).as_posix()
        if is_control_file(batch, path):
            continue
        kind = _kind(path)
        if kind is None:
            yield LandedFile(relative, path)
            continue
        try:
            yield from list(_members(path, kind, relative))
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, gzip.BadGzipFile):
            yield LandedFile(relative, path, None, "the archive cannot be opened")
