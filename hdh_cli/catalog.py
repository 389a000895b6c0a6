"""The code location as the command line sees it: loaded to execute runs, or read from a snapshot.

Loading the code location imports every domain (Spark, pydicom, polars, jsonschema...) and takes
seconds. Read-only commands (``hdh status``, ``hdh products list``) need only the asset graph's
shape: keys, groups, partitions, checks and plain metadata. Whenever a command loads the code
location, that shape is written to ``HDH_HOME/cache/asset-catalog.json`` with a fingerprint of
the code location's files; a read-only command uses the snapshot while the fingerprint still
matches, and loads the code location (and writes a new snapshot) otherwise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resources.home import HdhHome

if TYPE_CHECKING:
    import dagster as dg

CATALOG_FORMAT = 1
CATALOG_FILE = Path("cache") / "asset-catalog.json"
DEFINITIONS_MODULE = "hdh_assets.definitions"
# What the definitions are built from when the platform is installed, not checked out; in a
# checkout every package beside hdh_assets counts. The SQL models' folder is added from
# HDH_SQL_DIR.
CODE_PACKAGES = ("hdh_assets", "resources", "sensors", "jobs", "synthetic", "portal")
NOT_CODE_LOCATION = {"hdh_cli", "tests", "benchmarks"}
# An upgrade rewrites these files: their sizes and times date the libraries shaping the graph.
DEPENDENCY_FILES = (("dagster", "version.py"),)
SKIPPED_FOLDERS = {"__pycache__", ".pytest_cache", ".ruff_cache"}


@dataclass(frozen=True)
class CatalogAsset:
    """One asset of the graph, as much as a read-only command needs of it."""

    name: str  # the asset key's user string, e.g. claims/events
    path: tuple[str, ...]
    group: str
    materializable: bool
    checks: tuple[str, ...] = ()
    partitions: str | None = None  # Dagster's serialised partitions snapshot
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-valued entries only

    @property
    def partitioned(self) -> bool:
        return self.partitions is not None

    def partitions_def(self) -> dg.PartitionsDefinition | None:
        if self.partitions is None:
            return None
        from dagster._core.definitions.partitions.snap import PartitionsSnap
        from dagster._serdes import deserialize_value

        return deserialize_value(self.partitions, PartitionsSnap).get_partitions_definition()

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "path": list(self.path), "checks": list(self.checks)}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> CatalogAsset:
        return cls(**{**value, "path": tuple(value["path"]), "checks": tuple(value["checks"])})


@dataclass(frozen=True)
class AssetCatalog:
    assets: tuple[CatalogAsset, ...]
    product_group: str  # the group of the data products (``hdh products``)

    def names(self) -> list[str]:
        return [a.name for a in self.assets]

    def groups(self) -> list[str]:
        return sorted({a.group for a in self.assets})

    @classmethod
    def from_definitions(cls, defs: dg.Definitions) -> AssetCatalog:
        from dagster._core.definitions.partitions.snap import PartitionsSnap
        from dagster._serdes import serialize_value

        from hdh_assets.products.assets import GROUP

        graph = defs.resolve_asset_graph()
        assets = []
        for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
            node = graph.get(key)
            partitions = node.partitions_def
            assets.append(
                CatalogAsset(
                    name=key.to_user_string(),
                    path=tuple(key.path),
                    group=node.group_name or "default",
                    materializable=node.is_materializable,
                    checks=tuple(sorted(c.name for c in node.check_keys)),
                    partitions=(
                        serialize_value(PartitionsSnap.from_def(partitions)) if partitions else None
                    ),
                    metadata=_plain_metadata(node.metadata),
                )
            )
        return cls(tuple(assets), GROUP)

    def to_json(self) -> dict[str, Any]:
        return {
            "product_group": self.product_group,
            "assets": [a.to_json() for a in self.assets],
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> AssetCatalog:
        assets = tuple(CatalogAsset.from_json(a) for a in value["assets"])
        return cls(assets, value["product_group"])


def _plain_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Entries whose value is a string, number, boolean or null: what listings print."""
    plain = {}
    for name, entry in metadata.items():
        value = getattr(entry, "value", entry)
        if value is None or isinstance(value, str | int | float | bool):
            plain[name] = value
    return plain


def _package_folder(name: str) -> Path | None:
    """Where a top-level package lives, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _code_folders() -> list[Path]:
    """The packages of the checkout (a package added to it counts at once), or the installed
    code location's packages when hdh_assets lives among the other libraries."""
    anchor = _package_folder("hdh_assets")
    if anchor is None:
        return []
    root = anchor.parent
    if root.name in ("site-packages", "dist-packages"):
        found = (_package_folder(name) for name in CODE_PACKAGES)
        return [folder for folder in found if folder is not None]
    return sorted(
        folder
        for folder in root.iterdir()
        if folder.name not in NOT_CODE_LOCATION and (folder / "__init__.py").is_file()
    )


def _files(folder: Path) -> Iterator[Path]:
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(f for f in folders if f not in SKIPPED_FOLDERS)
        for name in sorted(files):
            if not name.endswith(".pyc"):
                yield Path(root) / name


def code_fingerprint() -> str:
    """Path, size and modification time of every file the definitions are built from, and the
    versions of the libraries that shape them: any edit, pull or upgrade changes it."""
    from hdh_assets.products.models import sql_dir_from_env

    files: list[Path] = []
    for package, name in DEPENDENCY_FILES:
        folder = _package_folder(package)
        files += [folder / name] if folder is not None else []
    for folder in [*_code_folders(), sql_dir_from_env()]:
        files += _files(folder) if folder.is_dir() else []
    digest = hashlib.sha256(f"{CATALOG_FORMAT} {sys.version}\n".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def catalog_path(home: HdhHome) -> Path:
    return home.root / CATALOG_FILE


def _read(home: HdhHome, fingerprint: str) -> AssetCatalog | None:
    try:
        saved = json.loads(catalog_path(home).read_text(encoding="utf-8"))
        if saved.get("format") != CATALOG_FORMAT or saved.get("fingerprint") != fingerprint:
            return None
        return AssetCatalog.from_json(saved["catalog"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, half-written by an older version, or unreadable: rebuild it


def save_catalog(home: HdhHome, catalog: AssetCatalog, fingerprint: str) -> None:
    """Write the snapshot atomically; a home that cannot be written only loses the speed-up."""
    path = catalog_path(home)
    payload = {"format": CATALOG_FORMAT, "fingerprint": fingerprint, "catalog": catalog.to_json()}
    partial: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        partial = Path(name)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, ensure_ascii=False)
        os.replace(partial, path)
    except OSError:
        if partial is not None:
            partial.unlink(missing_ok=True)


def load_definitions(home: HdhHome) -> dg.Definitions:
    """The code location, for the commands that execute runs in this process."""
    from hdh_assets.definitions import build_definitions

    return build_definitions(home)


def remember_loaded_definitions(home: HdhHome) -> None:
    """After a command that loaded the code location: keep its shape for the read-only ones.

    Cheap then (the modules are imported); nothing is imported when the command did not load it.
    """
    if DEFINITIONS_MODULE not in sys.modules:
        return
    fingerprint = code_fingerprint()
    if _read(home, fingerprint) is None:
        save_catalog(home, AssetCatalog.from_definitions(load_definitions(home)), fingerprint)


def asset_catalog(home: HdhHome) -> AssetCatalog:
    """The snapshot when it matches the code; otherwise the code location, loaded once."""
    fingerprint = code_fingerprint()
    catalog = _read(home, fingerprint)
    if catalog is None:
        catalog = AssetCatalog.from_definitions(load_definitions(home))
        save_catalog(home, catalog, fingerprint)
    return catalog
