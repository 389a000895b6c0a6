"""The Dagster instance under HDH_HOME, with the profile chosen by ``HDH_DAGSTER_PROFILE``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dagster import DagsterInstance

from resources.home import HdhHome

PROFILES_DIR = Path(__file__).resolve().parents[1] / "deploy" / "dagster"
DEFAULT_PROFILE = "sqlite"
PG_URL_ENV = "HDH_DAGSTER_PG_URL"
# dagster-postgres speaks psycopg2 (its NOTIFY does not work through psycopg 3, which SQLAlchemy
# 2.1 picks for a bare postgresql:// URL).
PG_DRIVER_SCHEME = "postgresql+psycopg2://"


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
    """Point ``DAGSTER_HOME`` at HDH_HOME/dagster (unless exported) and give it a dagster.yaml."""
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home.dagster_home)))
    if PG_URL_ENV in os.environ:
        os.environ[PG_URL_ENV] = with_psycopg2_driver(os.environ[PG_URL_ENV])
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        profile = os.environ.get("HDH_DAGSTER_PROFILE", DEFAULT_PROFILE)
        shutil.copyfile(profile_path(profile), config)
    return dagster_home


def platform_instance(home: HdhHome) -> DagsterInstance:
    prepare_dagster_home(home)
    return DagsterInstance.get()
