"""Which studies a token may see: everything not excluded for operators, a project's grants for
a project.

A project sees imaging through the releases its workspace is granted, as extracted under
``HDH_HOME/workspaces/<project>/grants/`` (the manifest lists each grant, its data folder and
subject column; extracts are already without excluded people). The rule, decided from what the
released data holds:

- when a granted release carries ``study_instance_uid`` (an imaging product such as
  ``imaging_clinical_linkage``), the project sees exactly those studies: the release names what
  was approved, and a study of the same person that the release left out stays out;
- when none does (``diabetes-outcomes``: clinical and claims products only), the project sees
  the studies of the subjects its granted releases contain, read from each grant's subject
  column: the authorisation covers those people, and the images are theirs;
- an aggregate release (no subject column, no study column, e.g.
  ``studies_per_modality_month``) grants no study.

A project without grants sees nothing. Excluded people are removed by the index view whatever
the grants say, since grants are only rebuilt after an exclusion's re-materialisations.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import polars as pl

from dicomweb.index import IndexView
from dicomweb.tokens import Claims
from resources.home import HdhHome

STUDY_COLUMN = "study_instance_uid"
GRANTS = "grants"
MANIFEST = "manifest.json"


def _data_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)
    )


def granted_values(grants_root: Path) -> tuple[set[str], set[str]]:
    """(study UIDs, subject pseudonyms) held by a project's granted extracts."""
    manifest_path = grants_root / MANIFEST
    if not manifest_path.is_file():
        return set(), set()
    studies: set[str] = set()
    subjects: set[str] = set()
    for grant in json.loads(manifest_path.read_text()).get("grants", []):
        folder = grants_root / grant["product"] / grant["granted_version"] / "data"
        subject_column = grant.get("subject_column")
        for file in _data_files(folder):
            names = pl.read_parquet_schema(file).names()
            if STUDY_COLUMN in names:
                studies |= set(pl.read_parquet(file, columns=[STUDY_COLUMN])[STUDY_COLUMN])
            if subject_column and subject_column in names:
                subjects |= set(pl.read_parquet(file, columns=[subject_column])[subject_column])
    return studies - {None}, subjects - {None}


def project_studies(grants_root: Path, view: IndexView) -> frozenset[str]:
    """The studies of the index a project's grants let it see (rule in the module docstring)."""
    studies, subjects = granted_values(grants_root)
    if studies:
        return frozenset(studies & view.study_uids())
    return frozenset(view.studies_of_subjects(subjects))


class Access:
    """Visible studies per token, recomputed when the grants' manifest or the index changes."""

    def __init__(self, home: HdhHome):
        self.home = home
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple, IndexView, frozenset[str]]] = {}

    def grants_root(self, project: str) -> Path:
        return self.home.workspaces / project / GRANTS

    def visible(self, claims: Claims, view: IndexView) -> frozenset[str] | None:
        """None for an operator (every study of the view), else the studies of the caller's
        projects (several for a person who belongs to several)."""
        if claims.all:
            return None
        return frozenset().union(*(self.project_visible(p, view) for p in claims.projects))

    def project_visible(self, project: str, view: IndexView) -> frozenset[str]:
        root = self.grants_root(project)
        manifest = root / MANIFEST
        stamp = (manifest.stat().st_mtime_ns, manifest.stat().st_size) if manifest.is_file() else ()
        with self._lock:
            cached = self._cache.get(project)
            if cached and cached[0] == stamp and cached[1] is view:
                return cached[2]
        studies = project_studies(root, view)
        with self._lock:
            self._cache[project] = (stamp, view, studies)
        return studies
