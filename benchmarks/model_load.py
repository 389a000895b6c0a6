"""What SQL models add to loading the definitions: N generated models against none.

    .venv/bin/python benchmarks/model_load.py [--models 500] [--repeat 3]

Each measurement is a fresh interpreter that imports ``hdh_assets.definitions`` (so parsing,
compiling, column lineage, checks and asset creation are all counted) and resolves the asset
graph, as ``dagster dev`` does. The baseline is the same import with an empty models folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

SOURCES = [
    ("claims", "events", "subject_pseudonym", "amount_eur", "event_date"),
    ("clinical", "observations", "subject_pseudonym", "value_quantity", "effective_at"),
    ("clinical", "conditions", "subject_pseudonym", "code", "onset_at"),
    ("imaging", "dicom_series", "subject_pseudonym", "instances", "study_date"),
]

PROBE = textwrap.dedent(
    """
    import json, time
    start = time.perf_counter()
    from hdh_assets.definitions import PRODUCT_ASSETS, defs
    defs.resolve_asset_graph()
    print(json.dumps({"seconds": time.perf_counter() - start, "products": sum(len(a.keys) for a in PRODUCT_ASSETS)}))
    """
)


def write_models(folder: Path, count: int) -> None:
    """Realistic models: CTEs, joins, windows; each refs a source and most an earlier model."""
    domain = folder / "bench"
    domain.mkdir(parents=True)
    entries = []
    for i in range(count):
        group, asset, subject, value, when = SOURCES[i % len(SOURCES)]
        upstream = f"m{(i * 7) % i:04d}" if i >= 4 else None
        joined = (
            f"JOIN {{{{ ref('{upstream}') }}}} AS u ON u.subject_pseudonym = s.subject_pseudonym"
            if upstream
            else ""
        )
        sql = f"""
            WITH s AS (
                SELECT {subject} AS subject_pseudonym, {value} AS value, {when} AS at
                FROM {{{{ source('{group}', '{asset}') }}}}
                WHERE {subject} IS NOT NULL
            )
            SELECT
                s.subject_pseudonym,
                COUNT(*) AS n,
                MIN(s.at) AS first_at,
                MAX(s.at) AS last_at,
                COUNT(DISTINCT s.value) AS distinct_values
            FROM s
            {joined}
            GROUP BY s.subject_pseudonym
        """
        (domain / f"m{i:04d}.sql").write_text(textwrap.dedent(sql))
        entries.append(
            {
                "name": f"m{i:04d}",
                "description": f"benchmark model {i}",
                "owner": "team:data-referents",
                "config": {"subject_column": "subject_pseudonym"},
                "columns": [
                    {"name": "subject_pseudonym", "tests": ["not_null", "unique"]},
                    {"name": "n", "tests": [{"expression": {"expression": "n > 0"}}]},
                ],
            }
        )
    (domain / "_models.yml").write_text(json.dumps({"version": 2, "models": entries}))


def load_seconds(sql_dir: Path, home: Path) -> tuple[float, int]:
    env = {
        **os.environ,
        "HDH_SQL_DIR": str(sql_dir),
        "HDH_HOME": str(home),
        "PYTHONWARNINGS": "ignore",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], result["products"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty, full = Path(tmp) / "empty", Path(tmp) / "full"
        empty.mkdir()
        write_models(full, args.models)
        home = Path(tmp) / "home"
        load_seconds(empty, home)  # warm the file cache once
        base, with_models = [], []
        for _ in range(args.repeat):
            base.append(load_seconds(empty, home)[0])
            seconds, products = load_seconds(full, home)
            with_models.append(seconds)
            assert products == args.models, products
    b, m = statistics.median(base), statistics.median(with_models)
    print(f"definitions load without models: {b:.2f} s (median of {args.repeat})")
    print(f"definitions load with {args.models} models: {m:.2f} s")
    print(
        f"added by the models: {m - b:.2f} s ({(m - b) / args.models * 1000:.1f} ms per model); "
        f"ratio {m / b:.2f}"
    )


if __name__ == "__main__":
    main()
