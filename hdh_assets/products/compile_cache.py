"""Partial parsing, as dbt does it: analyses of unchanged models are reused across loads.

Every Dagster process (webserver, daemon, each run) loads the definitions; with hundreds of
models, re-parsing each time would dominate. Entries are keyed by a fingerprint of the rendered
SQL, its upstream columns and the sqlglot version, so a stale entry is never used.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hdh_assets.products.compiler import Analysis

CACHE_FILE = "sql-models.json"


def load(folder: Path | None) -> dict[str, Analysis]:
    if folder is None:
        return {}
    try:
        raw = json.loads((folder / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or an unreadable one: compile from scratch
    entries = {}
    for fingerprint, item in raw.items():
        try:
            entries[fingerprint] = Analysis(
                sql=item["sql"],
                output_columns=tuple(item["output_columns"]),
                engine_sql=dict(item["engine_sql"]),
                lineage={c: tuple(tuple(d) for d in deps) for c, deps in item["lineage"].items()},
            )
        except (KeyError, TypeError):
            continue
    return entries


def save(folder: Path | None, entries: dict[str, Analysis], used: set[str]) -> None:
    """Keep the entries this load used; replace the file atomically (several processes load)."""
    if folder is None:
        return
    payload = {
        fingerprint: {
            "sql": a.sql,
            "output_columns": list(a.output_columns),
            "engine_sql": dict(a.engine_sql),
            "lineage": {c: [list(d) for d in deps] for c, deps in a.lineage.items()},
        }
        for fingerprint, a in entries.items()
        if fingerprint in used
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".sql-models-", suffix=".json")
        with os.fdopen(handle, "w") as out:
            json.dump(payload, out)
        os.replace(temporary, folder / CACHE_FILE)
    except OSError:
        pass  # a read-only home only loses the speed-up
