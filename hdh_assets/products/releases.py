"""Released data products: immutable snapshots with a manifest, that projects are granted.

A release copies the product's lake files into ``store/releases/<product>/<version>/data/``,
records a manifest (schema, rows, files with SHA-256, check results, source lineage, code
version) and makes everything read-only. The store refuses to overwrite or delete a release;
``verify`` proves a snapshot is still what its manifest says.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hdh_assets.files import file_sha256, make_read_only, make_writable
from hdh_assets.products.models import VERSION_PATTERN

MANIFEST = "manifest.json"
DATA = "data"


class ReleaseError(RuntimeError):
    """A release that cannot be made, changed or removed; the message says why."""


def next_patch(version: str) -> str:
    major, minor, patch = version_key(version)
    return f"{major}.{minor}.{patch + 1}"


def version_key(version: str) -> tuple[int, int, int]:
    if not VERSION_PATTERN.match(version):
        raise ReleaseError(f"'{version}' is not a release version (MAJOR.MINOR.PATCH, e.g. 1.0.0)")
    major, minor, patch = (int(p) for p in version.split("."))
    return major, minor, patch


def data_files(folder: Path) -> list[Path]:
    """Parquet data files of a lake table (Spark's .crc and _SUCCESS files are not data)."""
    return sorted(
        p
        for p in folder.rglob("*.parquet")
        if p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)
    )


def table_summary(files: Iterable[Path], root: Path) -> dict:
    """Rows, schema and per-file hashes of the files, relative to ``root``."""
    import pyarrow.parquet as pq  # here: listing releases reads manifests only

    files = list(files)
    rows, schema, listed = 0, None, []
    for file in files:
        parquet = pq.ParquetFile(file)
        rows += parquet.metadata.num_rows
        schema = schema or [{"name": f.name, "type": str(f.type)} for f in parquet.schema_arrow]
        listed.append(
            {
                "path": file.relative_to(root).as_posix(),
                "rows": parquet.metadata.num_rows,
                "bytes": file.stat().st_size,
                "sha256": file_sha256(file),
            }
        )
    return {"rows": rows, "schema": schema or [], "files": listed}


@dataclass(frozen=True)
class Release:
    product: str
    version: str
    path: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.path / MANIFEST).read_text())

    @property
    def data(self) -> Path:
        return self.path / DATA


class ReleaseStore:
    def __init__(self, root: Path):
        self.root = root

    def _folder(self, product: str, version: str) -> Path:
        version_key(version)
        if "/" in product or product.startswith("."):
            raise ReleaseError(f"'{product}' is not a product name")
        return self.root / product / version

    def releases(self, product: str | None = None) -> list[Release]:
        products = (
            [product] if product else sorted(p.name for p in self.root.glob("*") if p.is_dir())
        )
        found = []
        for name in products:
            folder = self.root / name
            versions = [v.name for v in folder.glob("*") if (v / MANIFEST).exists()]
            for version in sorted(versions, key=version_key):
                found.append(Release(name, version, folder / version))
        return found

    def get(self, product: str, version: str) -> Release:
        folder = self._folder(product, version)
        if not (folder / MANIFEST).exists():
            raise ReleaseError(f"products/{product} has no release {version}")
        return Release(product, version, folder)

    def create(self, product: str, version: str, source: Path, manifest: dict) -> Release:
        """Snapshot the lake folder ``source`` as ``product`` ``version``; refuse what exists."""
        folder = self._folder(product, version)
        existing = self.releases(product)
        if folder.exists():
            raise ReleaseError(
                f"products/{product} {version} is released already and releases are immutable: "
                "release a new version"
            )
        newer = [r.version for r in existing if version_key(r.version) >= version_key(version)]
        if newer:
            raise ReleaseError(
                f"products/{product} {version} must be newer than the released {max(newer, key=version_key)}"
            )
        files = data_files(source)
        if not files:
            raise ReleaseError(f"products/{product} has no data in the lake: materialise it first")
        staging = folder.parent / f".{version}.partial"
        if staging.exists():
            make_writable(staging)
            shutil.rmtree(staging)
        (staging / DATA).mkdir(parents=True)
        for file in files:
            target = staging / DATA / file.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)
        summary = table_summary(data_files(staging / DATA), staging / DATA)
        full = {
            "product": product,
            "version": version,
            "released_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **manifest,
            **summary,
        }
        (staging / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        make_read_only(staging)
        os.rename(staging, folder)  # the release appears whole or not at all
        return Release(product, version, folder)

    def holding(self, pseudonym: str) -> list[Release]:
        """Live releases whose rows include the person (their subject column says where)."""
        import pyarrow.parquet as pq

        found = []
        for release in self.releases():
            manifest = release.manifest
            column = manifest.get("subject_column")
            if not column or manifest.get("purged") or not release.data.exists():
                continue
            files = data_files(release.data)
            if any(
                pq.read_table(f, columns=[column]).column(column).to_pylist().count(pseudonym)
                for f in files
            ):
                found.append(release)
        return found

    def purge(self, product: str, version: str, request_id: str, superseded_by: str) -> None:
        """The one change a release accepts: a GDPR erasure removes its data. The manifest
        stays, marked purged, so grants can tell projects to move to the patch release."""
        release = self.get(product, version)
        manifest = release.manifest
        make_writable(release.path)
        shutil.rmtree(release.data)
        manifest["purged"] = {
            "request": request_id,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "superseded_by": superseded_by,
        }
        (release.path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        make_read_only(release.path)

    def delete(self, product: str, version: str) -> None:
        self.get(product, version)
        raise ReleaseError(
            f"products/{product} {version} is a released snapshot and cannot be deleted; projects "
            "may hold it. Only a GDPR erasure re-issues it, as a patch release."
        )

    def verify(self, product: str, version: str) -> list[str]:
        """Differences between the snapshot and its manifest; empty when intact."""
        release = self.get(product, version)
        manifest = release.manifest
        if manifest.get("purged"):
            return []  # its data was removed on purpose; the manifest says by which request
        expected = {f["path"]: f["sha256"] for f in manifest["files"]}
        present = {p.relative_to(release.data).as_posix(): p for p in data_files(release.data)}
        problems = [f"missing {p}" for p in sorted(set(expected) - set(present))]
        problems += [f"unexpected {p}" for p in sorted(set(present) - set(expected))]
        problems += [
            f"changed {p}"
            for p in sorted(set(expected) & set(present))
            if file_sha256(present[p]) != expected[p]
        ]
        return problems
