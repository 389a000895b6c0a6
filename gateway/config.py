"""The gateway's Apache configuration, rendered from the single sign-on settings: a pure function
of its inputs, so that it can be read, diffed and syntax-checked without starting anything.

One standalone ``httpd.conf`` (no Debian ``/etc/apache2`` include): mod_auth_openidc signs the
user in against ``settings.issuer`` as the ``gateway`` client, and each :class:`Application` is a
``<Location>`` proxied to its upstream, open to the members of its groups only. Without a
session a page gets a redirect to the provider, while an API call (its paths, or anything an
XHR, a ``fetch`` or a WebSocket asks) gets 401: a script cannot follow a sign-in page. A user
without the group gets 403. The backends receive the user's name in ``X-Forwarded-User``; any
such header from the client is dropped first, and no token or claim reaches them.

The configuration holds no secret: the client secret and the session crypto passphrase are
``${...}`` references that Apache fills from its environment (see :func:`secret_environment`).
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from auth.oidc import discovery_url
from auth.settings import OidcSettings

DEBIAN_MODULES = Path("/usr/lib/apache2/modules")
# Compiled into Debian's apache2 binary (core, so, http_core, log_config, logio, unixd...) are
# not loaded again; these are the rest the configuration uses.
MODULES = (
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authn_core_module", "mod_authn_core.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_user_module", "mod_authz_user.so"),
    ("auth_openidc_module", "mod_auth_openidc.so"),
    ("proxy_module", "mod_proxy.so"),
    ("proxy_http_module", "mod_proxy_http.so"),
    ("headers_module", "mod_headers.so"),
    ("alias_module", "mod_alias.so"),
    ("dir_module", "mod_dir.so"),
    ("mime_module", "mod_mime.so"),
)
CLIENT_SECRET_ENV = "HDH_GATEWAY_CLIENT_SECRET"
PASSPHRASE_ENV = "HDH_GATEWAY_CRYPTO_PASSPHRASE"
CALLBACK_PATH = "/auth/callback"  # the gateway's redirect URI, as auth/dev_provider.py registers
LOGOUT_PATH = "/logout"
USER_HEADER = "X-Forwarded-User"
SESSION_COOKIES = (
    "mod_auth_openidc_session",
    "mod_auth_openidc_session_chunks",
    "mod_auth_openidc_session_0",
    "mod_auth_openidc_session_1",
)
# What a script sends: it cannot follow a redirect to a sign-in page, so it gets 401 instead.
# The XHR, fetch and WebSocket cases of mod_auth_openidc's own detection, written out because
# an explicit expression replaces that detection.
API_REQUEST_EXPR = (
    "%{HTTP:X-Requested-With} == 'XMLHttpRequest'"
    " || %{HTTP_ACCEPT} =~ m#application/json#"
    " || -n %{HTTP:Upgrade}"
    " || ( -n %{HTTP:Sec-Fetch-Mode} && %{HTTP:Sec-Fetch-Mode} != 'navigate' )"
)
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


class GatewayConfigError(ValueError):
    """The gateway cannot be configured from these values; the message says which."""


@dataclass(frozen=True)
class Application:
    """A web application behind the gateway.

    ``upstream`` is the URL that ``prefix`` maps to (the application serves itself under the
    same prefix, e.g. ``dagster-webserver --path-prefix /dagster``, so its links stay right).
    ``api_paths`` (relative to ``prefix``) answer 401 without a session, whatever is asked.
    ``title`` is what the landing page shows.
    """

    name: str
    prefix: str
    upstream: str
    groups: tuple[str, ...]
    websocket: bool = False
    api_paths: tuple[str, ...] = ()
    title: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise GatewayConfigError(
                f"application name {self.name!r}: lowercase letters, digits, -"
            )
        for path in (self.prefix, *(self.prefix + api for api in self.api_paths)):
            if not _PREFIX.match(path) or {".", ".."} & set(path.split("/")):
                raise GatewayConfigError(f"{self.name}: {path!r} is not a plain /path")
        if urlsplit(self.upstream).scheme not in ("http", "https"):
            raise GatewayConfigError(f"{self.name}: upstream {self.upstream!r} is not http(s)")
        if not self.groups:
            raise GatewayConfigError(f"{self.name}: no group may use it; name at least one")
        for group in self.groups:
            if not group or any(c.isspace() for c in group):
                raise GatewayConfigError(f"{self.name}: group {group!r} is empty or has spaces")


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens and keeps its files, and what it serves.

    ``public_url`` is the address browsers use (and the provider redirects back to);
    ``listen_host``/``listen_port`` default to its host and port. ``run_user`` is set when
    Apache starts as root, which it refuses to serve as.
    """

    public_url: str
    run_dir: Path
    applications: tuple[Application, ...]
    listen_host: str | None = None
    listen_port: int | None = None
    run_user: str | None = None
    run_group: str | None = None
    modules_dir: Path = DEBIAN_MODULES
    session_inactivity_seconds: int = 3600
    tunnel_timeout_seconds: int = 3600

    def __post_init__(self) -> None:
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise GatewayConfigError(f"public_url {self.public_url!r} is not an http(s) URL")
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise GatewayConfigError("public_url is the gateway's root: no path, query, fragment")
        prefixes = [app.prefix for app in self.applications]
        names = [app.name for app in self.applications]
        if len(set(prefixes)) != len(prefixes) or len(set(names)) != len(names):
            raise GatewayConfigError(f"application names and prefixes must be unique: {names}")
        reserved = (CALLBACK_PATH, LOGOUT_PATH)
        for prefix in prefixes:
            if any(r == prefix or r.startswith(prefix + "/") for r in reserved):
                raise GatewayConfigError(f"{prefix} would hide the gateway's own {reserved}")

    @property
    def root_url(self) -> str:
        return self.public_url.rstrip("/")

    @property
    def host(self) -> str:
        return self.listen_host or urlsplit(self.public_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.public_url)
        return self.listen_port or parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def conf_path(self) -> Path:
        return self.run_dir / "httpd.conf"

    @property
    def htdocs(self) -> Path:
        return self.run_dir / "htdocs"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "httpd.pid"

    @property
    def error_log(self) -> Path:
        return self.run_dir / "error.log"

    @property
    def access_log(self) -> Path:
        return self.run_dir / "access.log"

    @property
    def stderr_log(self) -> Path:
        return self.run_dir / "stderr.log"


def dagster_application(settings: OidcSettings, webserver_url: str) -> Application:
    """The Dagster UI, run with ``--path-prefix /dagster``: data referents and operators only.

    Its UI subscribes over a WebSocket at ``/dagster/graphql``, also its API path.
    """
    return Application(
        name="dagster",
        prefix="/dagster",
        upstream=webserver_url.rstrip("/") + "/dagster",
        groups=(settings.referent_group, settings.operator_group),
        websocket=True,
        api_paths=("/graphql",),
        title="Dagster (orchestration)",
    )


def redirect_uri(gateway: GatewayConfig) -> str:
    """Where the provider sends the browser back: register exactly this for the client."""
    return gateway.root_url + CALLBACK_PATH


def backchannel_logout_uri(gateway: GatewayConfig) -> str:
    """Where the provider tells the gateway that a user signed out elsewhere (register it)."""
    return redirect_uri(gateway) + "?logout=backchannel"


def post_logout_redirect_uri(gateway: GatewayConfig) -> str:
    """Where the provider sends the browser after its end_session: the gateway's landing page."""
    return gateway.root_url + "/"


def new_passphrase() -> str:
    """A fresh key for the gateway's session cookies and state (a restart signs out of it)."""
    return secrets.token_urlsafe(32)


def secret_environment(settings: OidcSettings, passphrase: str) -> dict[str, str]:
    """The variables the rendered configuration reads its secrets from, for Apache's process."""
    secret = settings.client("gateway").client_secret
    if not secret:
        raise GatewayConfigError(
            "the gateway is a confidential client: set HDH_OIDC_GATEWAY_CLIENT_SECRET"
        )
    for name, value in ((CLIENT_SECRET_ENV, secret), (PASSPHRASE_ENV, passphrase)):
        if _UNSAFE.search(value) or "${" in value:
            raise GatewayConfigError(f"{name} holds a quote, backslash or control character")
    return {CLIENT_SECRET_ENV: secret, PASSPHRASE_ENV: passphrase}


def _q(value: object) -> str:
    """A double-quoted Apache argument; values that could break out of it are refused."""
    text = str(value)
    if _UNSAFE.search(text):
        raise GatewayConfigError(f"{text!r} holds a quote, backslash or control character")
    return f'"{text}"'


def _require(settings: OidcSettings, groups: Sequence[str]) -> list[str]:
    claim = settings.groups_claim
    lines = [f"        Require claim {_q(f'{claim}:{group}')}" for group in groups]
    return ["    <RequireAny>", *lines, "    </RequireAny>"]


def _application(settings: OidcSettings, gateway: GatewayConfig, app: Application) -> list[str]:
    upstream = app.upstream.rstrip("/")
    options = (
        f" upgrade=websocket timeout={gateway.tunnel_timeout_seconds}" if app.websocket else ""
    )
    lines = [
        f"# {app.name}: {upstream}, for {', '.join(app.groups)}",
        f"<Location {_q(app.prefix)}>",
        "    AuthType openid-connect",
        f"    OIDCUnAuthAction 401 {_q(API_REQUEST_EXPR)}",
        "    # Signed in without the group: 403, not Apache's default 401.",
        "    AuthzSendForbiddenOnFailure On",
        *_require(settings, app.groups),
        f"    ProxyPass {_q(upstream)}{options}",
        f"    ProxyPassReverse {_q(upstream)}",
        "</Location>",
    ]
    for api in app.api_paths:
        lines += [
            f"<Location {_q(app.prefix + api)}>",
            "    OIDCUnAuthAction 401 true",
            "</Location>",
        ]
    return lines


def render_httpd_conf(settings: OidcSettings, gateway: GatewayConfig) -> str:
    """The complete ``httpd.conf`` of the gateway (``apache2 -f`` it, secrets in the env)."""
    if settings.issuer is None:
        raise GatewayConfigError("no issuer: set HDH_OIDC_ISSUER or use the development provider")
    client = settings.client("gateway")
    run = gateway.run_dir
    logout_target = f"{CALLBACK_PATH}?logout={quote(post_logout_redirect_uri(gateway), safe='')}"
    modules = [f"LoadModule {name} {_q(gateway.modules_dir / so)}" for name, so in MODULES]
    user = []
    if gateway.run_user:
        user = [
            f"User {_q(gateway.run_user)}",
            f"Group {_q(gateway.run_group or gateway.run_user)}",
        ]
    lines = [
        "# The platform's authenticating gateway, rendered by gateway/config.py: do not edit.",
        f"# Signs users in at {settings.issuer} as client {client.client_id}.",
        f"ServerRoot {_q(run)}",
        f"DefaultRuntimeDir {_q(run)}",
        f"PidFile {_q(gateway.pid_file)}",
        f"Listen {gateway.host}:{gateway.port}",
        f"ServerName {_q(gateway.root_url)}",
        "UseCanonicalName On",
        *modules,
        *user,
        "",
        "StartServers 1",
        "ServerLimit 4",
        "ThreadsPerChild 25",
        "MaxRequestWorkers 100",
        "ServerTokens Prod",
        "ServerSignature Off",
        "TraceEnable Off",
        f"ErrorLog {_q(gateway.error_log)}",
        "LogLevel warn",
        'LogFormat "%h %u %t \\"%r\\" %>s %b %D" gateway',
        f"CustomLog {_q(gateway.access_log)} gateway",
        "TypesConfig /etc/mime.types",
        f"DocumentRoot {_q(gateway.htdocs)}",
        "DirectoryIndex index.html",
        "<Directory />",
        "    AllowOverride None",
        "    Require all denied",
        "</Directory>",
        f"<Directory {_q(gateway.htdocs)}>",
        "    Require all granted",
        "</Directory>",
        "",
        "# The user's name reaches the backends from here only, never from the client.",
        f"RequestHeader unset {USER_HEADER} early",
        f"OIDCAuthNHeader {USER_HEADER}",
        "OIDCPassClaimsAs none",
        f"OIDCStripCookies {' '.join(SESSION_COOKIES)}",
        "",
        f"OIDCProviderMetadataURL {_q(discovery_url(settings.issuer))}",
        f"OIDCClientID {_q(client.client_id)}",
        f'OIDCClientSecret "${{{CLIENT_SECRET_ENV}}}"',
        f'OIDCCryptoPassphrase "${{{PASSPHRASE_ENV}}}"',
        f"OIDCRedirectURI {_q(redirect_uri(gateway))}",
        f"OIDCScope {_q(' '.join(settings.scopes))}",
        "OIDCRemoteUserClaim preferred_username",
        "OIDCPKCEMethod S256",
        "OIDCCookieSameSite On",
        f"OIDCSessionInactivityTimeout {gateway.session_inactivity_seconds}",
        f"OIDCDefaultLoggedOutURL {_q(post_logout_redirect_uri(gateway))}",
        "ProxyRequests Off",
        "ProxyPreserveHost On",
        "",
        f"<Location {_q(CALLBACK_PATH)}>",
        "    AuthType openid-connect",
        "    Require valid-user",
        "</Location>",
        "# Ends the gateway session, then the provider's (its end_session, back to /).",
        f"RedirectMatch 302 ^{re.escape(LOGOUT_PATH)}$ {_q(logout_target)}",
        "",
    ]
    for app in gateway.applications:
        lines += [*_application(settings, gateway, app), ""]
    return "\n".join(lines)


def render_landing_page(gateway: GatewayConfig) -> str:
    """The public page at ``/`` (also where a sign-out ends): links to the applications."""
    items = "\n".join(
        f'<li><a href="{html.escape(app.prefix)}/">{html.escape(app.title or app.name)}</a></li>'
        for app in gateway.applications
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Health data platform</title></head>
<body><h1>Health data platform</h1>
<p>Applications (you will be asked to sign in):</p>
<ul>
{items}
</ul>
<p><a href="{LOGOUT_PATH}">Sign out</a></p>
</body></html>
"""
