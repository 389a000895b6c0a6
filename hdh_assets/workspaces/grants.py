"""Data grants: read-only extracts of exactly the releases a project is granted.

A project never reads the release store: it mounts ``HDH_HOME/workspaces/<project>/grants/``,
which holds a copy of each granted release (``<product>/<version>/data/``) and a manifest saying
what was granted, what was delivered and with which hashes. A grant of a release that a GDPR
erasure purged is delivered from the patch release that superseded it, as the purged manifest
records; people excluded since (objection, erasure) are left out of every extract whatever the
release holds, so an erasure reaches a project as soon as its grants are rebuilt.

The ledger (project, product, version, subject pseudonym, rows) is what the lake keeps: the
subject index reads it, so an erasure knows which projects' grants to rebuild.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from hdh_assets.files import file_sha256, make_read_only, remove_tree
from hdh_assets.products.releases import ReleaseError, ReleaseStore, data_files

GRANTS = "grants"
MANIFEST = "manifest.json"
LEDGER_SCHEMA = {
    "project": pl.String,
    "product": pl.String,
    "version": pl.String,
    "subject_pseudonym": pl.String,
    "rows": pl.Int64,
}


@dataclass(frozen=True)
class Grant:
    product: str
    version: str


@dataclass
class GrantsResult:
    manifest: dict
    ledger: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=LEDGER_SCHEMA))


def resolve_release(store: ReleaseStore, product: str, version: str):
    """The release to deliver for a grant: the one granted, or the patch release a GDPR erasure
    re-issued in its place (followed along the chain)."""
    release = store.get(product, version)
    seen = {version}
    while purged := release.manifest.get("purged"):
        successor = purged.get("superseded_by")
        if not successor or successor in seen:
            raise ReleaseError(f"products/{product} {version} was purged without a successor")
        seen.add(successor)
        release = store.get(product, successor)
    return release


def _extract(release, target: Path, excluded: set[str]) -> tuple[dict, pl.DataFrame]:
    """Copy the release's data into ``target``, without excluded people; return the grant's
    manifest entry and the rows per subject."""
    manifest = release.manifest
    column = manifest.get("subject_column")
    files, removed, per_subject = [], 0, []
    for source in data_files(release.data):
        relative = source.relative_to(release.data)
        destination = target / "data" / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        if column and excluded:  # filtered: read once, counted, written
            frame = pl.read_parquet(source)
            kept = frame.filter(~pl.col(column).is_in(sorted(excluded)))
            removed += frame.height - kept.height
            kept.write_parquet(destination)
        else:  # the release's own bytes, so the extract's hash is the release's
            shutil.copy2(source, destination)
            kept = pl.read_parquet(source, columns=[column]) if column else None
        if kept is not None:
            per_subject.append(kept.group_by(column).len().rename({column: "subject_pseudonym"}))
        rows = kept.height if kept is not None else pq.read_metadata(destination).num_rows
        files.append(
            {"path": relative.as_posix(), "rows": rows, "sha256": file_sha256(destination)}
        )
    counts = (
        pl.concat(per_subject).group_by("subject_pseudonym").agg(pl.col("len").sum().alias("rows"))
        if per_subject
        else pl.DataFrame(schema={"subject_pseudonym": pl.String, "rows": pl.Int64})
    )
    entry = {
        "product": release.product,
        "delivered_version": release.version,
        "release_manifest_sha256": file_sha256(release.path / "manifest.json"),
        "subject_column": column,
        "rows": sum(f["rows"] for f in files),
        "rows_left_out_for_gdpr": removed,
        "files": files,
    }
    return entry, counts.with_columns(pl.col("rows").cast(pl.Int64))


def extract_grants(
    store: ReleaseStore,
    project_root: Path,
    project: str,
    grants: list[Grant],
    excluded: set[str],
    authorisation: str | None = None,
) -> GrantsResult:
    """Rebuild ``project_root/grants`` as exactly the granted releases, then swap it in whole:
    a project never sees half an extract, and a grant withdrawn from its spec disappears."""
    project_root.mkdir(parents=True, exist_ok=True)
    staging = project_root / f".{GRANTS}.partial"
    remove_tree(staging)
    staging.mkdir()
    entries, ledgers = [], []
    for grant in sorted(grants, key=lambda g: (g.product, g.version)):
        release = resolve_release(store, grant.product, grant.version)
        entry, counts = _extract(release, staging / grant.product / grant.version, excluded)
        entries.append({"granted_version": grant.version, **entry})
        ledgers.append(
            counts.with_columns(
                project=pl.lit(project),
                product=pl.lit(grant.product),
                version=pl.lit(grant.version),
            ).select(list(LEDGER_SCHEMA))
        )
    manifest = {
        "project": project,
        "authorisation": authorisation,
        "extracted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "grants": entries,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    make_read_only(staging)
    _swap(staging, project_root / GRANTS)
    ledger = (pl.concat(ledgers) if ledgers else pl.DataFrame(schema=LEDGER_SCHEMA)).sort(
        "product", "version", "subject_pseudonym"
    )
    return GrantsResult(manifest, ledger)


def remove_grants(project_root: Path) -> bool:
    """A decommissioned project keeps nothing; True when something was removed."""
    return remove_tree(project_root / GRANTS)


def _swap(staging: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    remove_tree(old)
    if target.exists():
        os.rename(target, old)
    os.rename(staging, target)
    remove_tree(old)


def extracts_holding(project_root: Path, pseudonyms: set[str]) -> list[str]:
    """Files of a project's extracts that still hold one of ``pseudonyms`` (the proof)."""
    root = project_root / GRANTS
    manifest_path = root / MANIFEST
    if not pseudonyms or not manifest_path.exists():
        return []
    found = []
    for entry in json.loads(manifest_path.read_text())["grants"]:
        column = entry.get("subject_column")
        if not column:
            continue
        folder = root / entry["product"] / entry["granted_version"] / "data"
        for file in data_files(folder):
            values = pl.read_parquet(file, columns=[column])[column]
            if values.is_in(sorted(pseudonyms)).any():
                found.append(file.relative_to(root).as_posix())
    return found
