"""The Dagster instance under HDH_HOME, with the profile chosen by ``HDH_DAGSTER_PROFILE``."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterInstance

from hdh_assets.files import atomic_write_bytes, exclusive_lock
from resources.home import HdhHome

PROFILES_DIR = Path(__file__).resolve().parents[1] / "deploy" / "dagster"
DEFAULT_PROFILE = "sqlite"
PG_URL_ENV = "HDH_DAGSTER_PG_URL"
# dagster-postgres speaks psycopg2 (its NOTIFY does not work through psycopg 3, which SQLAlchemy
# 2.1 picks for a bare postgresql:// URL).
PG_DRIVER_SCHEME = "postgresql+psycopg2://"
# Held while a process writes dagster.yaml and opens the instance: Dagster creates its storage
# (tables, alembic stamps) on first open without guarding against a concurrent creator.
INIT_LOCK = ".instance-init.lock"


def with_psycopg2_driver(url: str) -> str:
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return PG_DRIVER_SCHEME + url[len(bare) :]
    return url


def profile_path(name: str) -> Path:
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.exists():
        available = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ValueError(f"HDH_DAGSTER_PROFILE '{name}' is not one of {available}")
    return path


def prepare_dagster_home(home: HdhHome) -> Path:
    """DAGSTER_HOME ready for other processes (``dagster dev``): dagster.yaml and storage created."""
    platform_instance(home).dispose()
    return Path(os.environ["DAGSTER_HOME"])


def platform_instance(home: HdhHome) -> DagsterInstance:
    """The instance under ``DAGSTER_HOME`` (HDH_HOME/dagster unless exported), storage created.

    One process at a time writes dagster.yaml and opens the instance, reading from every storage
    so that its tables exist before the next one looks: two commands started together on a
    fresh HDH_HOME would otherwise both create them and one would crash.
    """
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home.dagster_home)))
    if PG_URL_ENV in os.environ:
        os.environ[PG_URL_ENV] = with_psycopg2_driver(os.environ[PG_URL_ENV])
    dagster_home.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(dagster_home / INIT_LOCK):
        config = dagster_home / "dagster.yaml"
        if not config.exists():
            profile = os.environ.get("HDH_DAGSTER_PROFILE", DEFAULT_PROFILE)
            atomic_write_bytes(config, profile_path(profile).read_bytes())
        instance = DagsterInstance.get()
        try:
            instance.get_runs_count()  # run storage (daemon cursors live there too)
            instance.get_asset_keys(limit=1)  # event log storage and its index
            instance.all_instigator_state()  # schedule storage
        except BaseException:
            instance.dispose()
            raise
    return instance
