"""How staff sign in to the portal: the OpenID Connect provider (the DPO and the data referents),
or break-glass accounts (the DPO only).

- ``HDH_OIDC_ISSUER`` and ``HDH_OIDC_PORTAL_CLIENT_ID`` / ``_SECRET`` (``auth/settings.py``): the
  provider. Unset issuer: the development provider, once it has been started for this
  ``HDH_HOME`` (its configuration is then under ``HDH_HOME/secrets``); else no provider.
- ``HDH_PORTAL_URL``: the portal's address as browsers reach it, which the provider's redirects
  come back to (``<url>/dpo/auth/callback``). Unset: the address of each request.
- ``HDH_PORTAL_BREAK_GLASS`` (off): ``1`` also accepts the local operator accounts
  (``hdh rights operator add``), for when the provider is down; every such sign-in is audited.

With neither a provider nor break-glass, the staff pages say sign-in is not configured: they
never open without a sign-in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from auth.provider import provider_settings
from auth.settings import OidcSettings

BREAK_GLASS_ENV = "HDH_PORTAL_BREAK_GLASS"
PORTAL_URL_ENV = "HDH_PORTAL_URL"
APP = "portal"
CALLBACK_PATH = "/dpo/auth/callback"
SIGNED_OUT_PATH = "/dpo/signed-out"
PACKAGES_PATH = "/staff/packages"  # the data referents' package reviews
BACKCHANNEL_LOGOUT_PATH = "/dpo/backchannel-logout"
_TRUE = ("1", "true", "yes", "on")


def _no_provider() -> OidcSettings | None:
    return None


@dataclass(frozen=True)
class DpoAuth:
    """The DPO's sign-in options; ``provider`` is asked on each sign-in (None: no provider)."""

    provider: Callable[[], OidcSettings | None] = field(default=_no_provider)
    break_glass: bool = False
    base_url: str | None = None

    @classmethod
    def with_provider(
        cls, settings: OidcSettings, *, break_glass: bool = False, base_url: str | None = None
    ) -> DpoAuth:
        if not settings.issuer:
            raise ValueError("a provider needs an issuer")
        return cls(lambda: settings, break_glass, base_url.rstrip("/") if base_url else None)


def auth_from_env(secrets_dir: Path, environ: Mapping[str, str] | None = None) -> DpoAuth:
    """The sign-in options of a deployment, from its environment."""
    env = os.environ if environ is None else environ
    break_glass = env.get(BREAK_GLASS_ENV, "").strip().lower() in _TRUE
    base_url = env.get(PORTAL_URL_ENV, "").strip().rstrip("/") or None
    return DpoAuth(provider_settings(secrets_dir, env), break_glass, base_url)
