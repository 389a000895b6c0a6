"""``hdh products``: list data products, release a materialisation, verify releases.

``list`` and ``releases`` are read-only: the first reads the asset catalog, the second the
release manifests, and neither loads the code location.
"""

from __future__ import annotations

from typing import Any

import click

from hdh_cli.console import console, platform_home, print_json, table_console


@click.group()
def products() -> None:
    """Data products: list them, release a materialisation, verify releases."""


@products.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def products_list(as_json: bool) -> None:
    """Every product with its engine, partitioning, declared release and released versions."""
    from rich.table import Table

    from hdh_assets.products.releases import ReleaseStore
    from hdh_cli.catalog import asset_catalog

    home = platform_home()
    catalog = asset_catalog(home)
    store = ReleaseStore(home.releases)
    rows: list[dict[str, Any]] = []
    for asset in catalog.assets:
        if asset.group != catalog.product_group:
            continue
        meta = asset.metadata
        rows.append(
            {
                "product": asset.path[-1],
                "engine": meta.get("engine", "python"),
                "partitioned": asset.partitioned,
                "subject_column": meta.get("subject_column"),
                "aggregate_only": bool(meta.get("aggregate_only")),
                "declared_release": meta.get("release"),
                "released": [r.version for r in store.releases(asset.path[-1])],
                "checks": sorted(asset.checks),
            }
        )
    if as_json:
        print_json({"products": rows})
        return
    table = Table("product", "engine", "partitioned", "rows are", "declared", "released", "checks")
    for r in rows:
        table.add_row(
            r["product"],
            r["engine"],
            "monthly" if r["partitioned"] else "-",
            "aggregates" if r["aggregate_only"] else (r["subject_column"] or "-"),
            r["declared_release"] or "-",
            ", ".join(r["released"]) or "-",
            str(len(r["checks"])),
        )
    table_console.print(table)


@products.command("release")
@click.argument("name")
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def products_release(name: str, version: str | None, as_json: bool) -> None:
    """Freeze the latest materialisation of products/NAME as VERSION (default: its YAML release)."""
    from hdh_assets.products.publishing import release_product
    from hdh_assets.products.releases import ReleaseError
    from hdh_cli.catalog import load_definitions
    from hdh_cli.instance import platform_instance

    home = platform_home().ensure()
    try:
        graph = load_definitions(home).resolve_asset_graph()
        release = release_product(home, graph, platform_instance(home), name, version)
    except ReleaseError as error:
        raise click.ClickException(str(error)) from None
    manifest = release.manifest
    if as_json:
        print_json(manifest)
        return
    console.print(
        f"[green]released[/] products/{name} {release.version}: {manifest['rows']} rows in "
        f"{len(manifest['files'])} files, {len(manifest['checks'])} checks passed -> {release.path}"
    )


@products.command("releases")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def products_releases(name: str | None, as_json: bool) -> None:
    """Released snapshots (of NAME, or of every product)."""
    from rich.table import Table

    from hdh_assets.products.releases import ReleaseStore

    releases = ReleaseStore(platform_home().releases).releases(name)
    payload = [
        {
            "product": r.product,
            "version": r.version,
            "rows": r.manifest["rows"],
            "released_at": r.manifest["released_at"],
            "code_version": r.manifest["code_version"],
            "path": str(r.path),
        }
        for r in releases
    ]
    if as_json:
        print_json({"releases": payload})
        return
    table = Table("product", "version", "rows", "released at", "code version")
    for r in payload:
        table.add_row(
            r["product"], r["version"], str(r["rows"]), r["released_at"], r["code_version"] or "-"
        )
    table_console.print(table)


@products.command("verify")
@click.argument("name")
@click.argument("version")
def products_verify(name: str, version: str) -> None:
    """Check that a released snapshot is still exactly what its manifest lists."""
    from hdh_assets.products.releases import ReleaseError, ReleaseStore

    try:
        problems = ReleaseStore(platform_home().releases).verify(name, version)
    except ReleaseError as error:
        raise click.ClickException(str(error)) from None
    if problems:
        raise click.ClickException(f"products/{name} {version} was altered: {'; '.join(problems)}")
    console.print(f"[green]intact[/]: products/{name} {version}")


@products.command("delete")
@click.argument("name")
@click.argument("version")
def products_delete(name: str, version: str) -> None:
    """Refused: released snapshots are immutable (listed so that the refusal is explicit)."""
    from hdh_assets.products.releases import ReleaseError, ReleaseStore

    try:
        ReleaseStore(platform_home().releases).delete(name, version)
    except ReleaseError as error:
        raise click.ClickException(str(error)) from None
