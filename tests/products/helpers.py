"""Writing small model folders for tests."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from hdh_assets.claims.events import EVENT_SCHEMA

EVENTS = dg.AssetKey(["claims", "events"])
EVENT_COLUMNS = list(EVENT_SCHEMA)


def entry(name: str, **overrides) -> dict:
    base = {
        "name": name,
        "description": f"test model {name}",
        "owner": "team:data-referents",
        "config": {"subject_column": "subject_pseudonym"},
    }
    base.update(overrides)
    return base


def write_models(root: Path, models: dict[str, tuple[str, dict]], domain: str = "test") -> Path:
    """``models``: name -> (sql, YAML entry); one ``_models.yml`` per domain, as in dbt."""
    folder = root / domain
    folder.mkdir(parents=True, exist_ok=True)
    for name, (sql, _) in models.items():
        (folder / f"{name}.sql").write_text(sql)
    (folder / "_models.yml").write_text(
        yaml.safe_dump({"version": 2, "models": [e for _, e in models.values()]}, sort_keys=False)
    )
    return root
