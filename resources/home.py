"""The HDH_HOME layout: one folder that holds everything a running platform owns.

Every command, resource and sensor resolves its paths here, so that an exported ``HDH_HOME``
moves the whole platform (landing zone, lake, store, quarantine, Dagster instance, secrets).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".hdh"


@dataclass(frozen=True)
class HdhHome:
    """Paths under ``HDH_HOME``; ``root`` is absolute."""

    root: Path

    @classmethod
    def from_env(cls) -> HdhHome:
        return cls(Path(os.environ.get("HDH_HOME", DEFAULT_HOME)).expanduser().resolve())

    @property
    def landing(self) -> Path:
        """Where providers drop files: ``landing/<source>/<batch>/``."""
        return self.root / "landing"

    @property
    def lake(self) -> Path:
        """Pseudonymised Parquet tables, one folder per asset key."""
        return self.root / "lake"

    @property
    def store(self) -> Path:
        """Pseudonymised objects that are not tables (DICOM files, previews, releases)."""
        return self.root / "store"

    @property
    def quarantine(self) -> Path:
        """Originals that could not be ingested, for operators only; never part of the lake."""
        return self.root / "quarantine"

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance (``DAGSTER_HOME``); SQLite storage unless a profile says otherwise."""
        return self.root / "dagster"

    @property
    def secrets(self) -> Path:
        """Demo secrets generated on first use; production keys come from configuration."""
        return self.root / "secrets"

    @property
    def rights(self) -> Path:
        """The GDPR rights registry (SQLite by default; identities encrypted inside)."""
        return self.root / "rights"

    @property
    def releases(self) -> Path:
        """Released data products: immutable snapshots with their manifests."""
        return self.store / "releases"

    @property
    def sample(self) -> Path:
        """What the synthetic generator records for tests and demonstrations only."""
        return self.root / "sample"

    def access_export(self, request_id: str) -> Path:
        """The archive of a right-of-access request, for the DPO to send (mode 0600)."""
        return self.root / "exports" / f"{request_id}.zip"

    @property
    def workspaces(self) -> Path:
        """Project storage areas: ``workspaces/<project>/grants/`` holds the read-only extracts
        of the releases a project is granted (what its workspace mounts)."""
        return self.root / "workspaces"

    @property
    def gitops(self) -> Path:
        """The GitOps repository the workspace manifests are delivered to (one folder a project)."""
        return self.root / "gitops"

    @property
    def packages(self) -> Path:
        """The package manager: requests, closures, vetted archives, decisions and the
        project indexes' data (``files/`` holds each vetted archive once, by its sha256)."""
        return self.root / "packages"

    def landing_for(self, source: str) -> Path:
        return self.landing / source

    def ensure(self) -> HdhHome:
        for folder in (self.landing, self.lake, self.store, self.quarantine, self.dagster_home):
            folder.mkdir(parents=True, exist_ok=True)
        self.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self
