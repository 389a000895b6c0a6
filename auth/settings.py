"""The single sign-on settings of a deployment, read from the environment once.

Every value has a documented default so that a development home works with nothing set; a
production deployment sets at least ``HDH_OIDC_ISSUER`` and the confidential clients' secrets.

- ``HDH_OIDC_ISSUER``: the provider's issuer URL, exactly as its tokens' ``iss`` says it.
  Unset: the development provider (``auth/dev_provider.py``).
- ``HDH_OIDC_SCOPES`` (``openid profile email groups``): what every application asks for.
- ``HDH_OIDC_GROUPS_CLAIM`` (``groups``): the claim holding the user's groups, a list of strings.
- ``HDH_OIDC_DPO_GROUP`` (``dpo``), ``HDH_OIDC_REFERENT_GROUP`` (``data-referent``),
  ``HDH_OIDC_OPERATOR_GROUP`` (``operator``): the groups of the platform's roles.
- ``HDH_OIDC_PROJECT_GROUP`` (``project:{project}:member``): a project's member group.
- ``HDH_OIDC_<APP>_CLIENT_ID`` (``hdh-<app>``) and ``HDH_OIDC_<APP>_CLIENT_SECRET`` (unset: a
  public client, PKCE only), APP one of PORTAL, GATEWAY, VIEWER, JUPYTERHUB.
- ``HDH_OIDC_DICOMWEB_AUDIENCE`` (``http://127.0.0.1:3002/dicom-web``, where ``make ui`` serves
  it): the DICOMweb service's resource indicator, the ``aud`` of its access tokens.
- ``HDH_OIDC_CLOCK_SKEW_SECONDS`` (``60``): leeway on ``exp``, ``iat`` and ``nbf``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

APPS = ("portal", "gateway", "viewer", "jupyterhub")
PROJECT_PLACEHOLDER = "{project}"
DEFAULT_SCOPES = ("openid", "profile", "email", "groups")
DEFAULT_DICOMWEB_AUDIENCE = "http://127.0.0.1:3002/dicom-web"  # where `make ui` serves it
DEFAULT_CLOCK_SKEW_SECONDS = 60


class OidcSettingsError(ValueError):
    """A variable is set to something the platform cannot use; the message names it."""


@dataclass(frozen=True)
class OidcClient:
    """One application's registration at the provider; no secret means a public client."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)

    @property
    def public(self) -> bool:
        """Public clients prove themselves with PKCE only (a browser cannot keep a secret)."""
        return not self.client_secret


@dataclass(frozen=True)
class OidcSettings:
    """What the platform needs to know about its OpenID Connect provider."""

    issuer: str | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    groups_claim: str = "groups"
    dpo_group: str = "dpo"
    referent_group: str = "data-referent"
    operator_group: str = "operator"
    project_group: str = "project:{project}:member"
    clients: Mapping[str, OidcClient] = field(
        default_factory=lambda: {app: OidcClient(f"hdh-{app}") for app in APPS}, hash=False
    )
    dicomweb_audience: str = DEFAULT_DICOMWEB_AUDIENCE
    clock_skew_seconds: int = DEFAULT_CLOCK_SKEW_SECONDS

    def __post_init__(self) -> None:
        # Read-only, as the rest: settings are shared between requests and threads.
        object.__setattr__(self, "clients", MappingProxyType(dict(self.clients)))
        if self.project_group.count(PROJECT_PLACEHOLDER) != 1:
            raise OidcSettingsError(
                f"HDH_OIDC_PROJECT_GROUP must contain {PROJECT_PLACEHOLDER} exactly once"
            )
        if self.clock_skew_seconds < 0:
            raise OidcSettingsError("HDH_OIDC_CLOCK_SKEW_SECONDS must not be negative")
        if self.issuer is not None and not self.issuer.startswith(("https://", "http://")):
            raise OidcSettingsError("HDH_OIDC_ISSUER must be an http(s) URL")
        if "openid" not in self.scopes:
            raise OidcSettingsError("HDH_OIDC_SCOPES must include openid")

    @property
    def development(self) -> bool:
        """No issuer configured: the development provider stands in."""
        return self.issuer is None

    def client(self, app: str) -> OidcClient:
        """The registration of ``app`` (one of :data:`APPS`)."""
        try:
            return self.clients[app]
        except KeyError:
            raise OidcSettingsError(f"unknown application {app!r}; one of {APPS}") from None

    def project_group_for(self, project: str) -> str:
        """The group whose members belong to ``project``."""
        return self.project_group.replace(PROJECT_PLACEHOLDER, project)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OidcSettings:
        """The settings from ``environ`` (default ``os.environ``); empty values count as unset."""
        env = os.environ if environ is None else environ

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name, "").strip()
            return value or default

        skew_text = get("HDH_OIDC_CLOCK_SKEW_SECONDS", str(DEFAULT_CLOCK_SKEW_SECONDS))
        try:
            skew = int(skew_text)
        except ValueError:
            raise OidcSettingsError(
                f"HDH_OIDC_CLOCK_SKEW_SECONDS must be a whole number of seconds, not {skew_text!r}"
            ) from None
        clients = {
            app: OidcClient(
                get(f"HDH_OIDC_{app.upper()}_CLIENT_ID", f"hdh-{app}"),
                get(f"HDH_OIDC_{app.upper()}_CLIENT_SECRET"),
            )
            for app in APPS
        }
        issuer = get("HDH_OIDC_ISSUER")
        return cls(
            issuer=issuer,  # kept as written: ``iss`` is compared exactly, slash included
            scopes=tuple(get("HDH_OIDC_SCOPES", " ".join(DEFAULT_SCOPES)).split()),
            groups_claim=get("HDH_OIDC_GROUPS_CLAIM", "groups"),
            dpo_group=get("HDH_OIDC_DPO_GROUP", "dpo"),
            referent_group=get("HDH_OIDC_REFERENT_GROUP", "data-referent"),
            operator_group=get("HDH_OIDC_OPERATOR_GROUP", "operator"),
            project_group=get("HDH_OIDC_PROJECT_GROUP", "project:{project}:member"),
            clients=clients,
            dicomweb_audience=get("HDH_OIDC_DICOMWEB_AUDIENCE", DEFAULT_DICOMWEB_AUDIENCE),
            clock_skew_seconds=skew,
        )
