"""``hdh portal``: the individuals' rights portal, served here."""

from __future__ import annotations

import os

import click

from hdh_cli.console import console, platform_home


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3001, show_default=True)
@click.option(
    "--demo",
    is_flag=True,
    envvar="HDH_PORTAL_DEMO",
    help="A demo: run on the generated demo secrets when HDH_PORTAL_SECRET, HDH_RIGHTS_KEY or "
    "HDH_PSEUDONYM_KEY is unset (refused otherwise).",
)
def portal(host: str, port: int, demo: bool) -> None:
    """The individuals' rights portal (form and status page), French and English."""
    import uvicorn

    from portal.app import DemoSecretsRefused, app_from_env

    home = platform_home().ensure()
    if host not in ("0.0.0.0", "::"):
        # The DPO's sign-in returns here: the address the provider has registered, whatever
        # name a browser used to reach the portal. Behind a proxy, HDH_PORTAL_URL says it.
        os.environ.setdefault("HDH_PORTAL_URL", f"http://{host}:{port}")
    try:
        app = app_from_env(home, demo=demo)
    except DemoSecretsRefused as refused:
        raise click.ClickException(str(refused)) from None
    console.print(f"Rights portal on http://{host}:{port}/fr/request (HDH_HOME={home.root})")
    # Access logs hold method and path only: every form is posted, so no identifier is in them.
    # Forwarded headers are the application's to read, from HDH_PORTAL_TRUSTED_PROXIES only:
    # uvicorn's own reading (which trusts 127.0.0.1 by default) is off.
    uvicorn.run(
        app, host=host, port=port, log_level="info", proxy_headers=False, server_header=False
    )
