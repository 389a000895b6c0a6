"""The development OpenID Connect provider: ``identity/provider.mjs`` (``oidc-provider``), run
for the tests and ``make ui`` when no ``HDH_OIDC_ISSUER`` is set. Never for production.

Everything it needs is generated once under a secrets folder (normally ``HDH_HOME/secrets``,
mode 0600) and reused, so that what the applications hold stays valid across a restart: the
RSA signing key, the cookie keys, the confidential clients' secrets and the demo accounts'
passwords (``make ui`` prints them from :func:`demo_accounts`). Sessions and grants live in the
provider's memory: a restart signs everyone out, which is what a development provider may do.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from auth.oidc import discovery_url
from auth.settings import APPS, OidcClient, OidcSettings

IDENTITY_DIR = Path(__file__).resolve().parents[1] / "identity"
PROVIDER_SCRIPT = IDENTITY_DIR / "provider.mjs"
DEV_HOST = "127.0.0.1"
DEV_PORT = 3010
EXAMPLE_PROJECT = "cardio-imaging"  # workspaces/projects/cardio-imaging.yaml

KEY_FILE = "oidc-dev-signing-key.json"
COOKIE_KEYS_FILE = "oidc-dev-cookie-keys.json"
CLIENT_SECRETS_FILE = "oidc-dev-client-secrets.json"
ACCOUNTS_FILE = "oidc-dev-accounts.json"
CONFIG_FILE = "oidc-dev-provider.json"
LOG_FILE = "oidc-dev-provider.log"

# Where `make ui` serves each application, and the path its sign-in comes back to.
DEFAULT_APP_URLS = {
    "portal": "http://127.0.0.1:3001",
    "gateway": "http://127.0.0.1:3080",
    "viewer": "http://127.0.0.1:3003",
    "jupyterhub": "http://127.0.0.1:8000",
}
# OHIF's own client comes back to /callback, and renews its token in a hidden frame.
CALLBACK_PATHS = {
    "jupyterhub": "/hub/oauth_callback",
    "viewer": "/callback",
    "portal": "/dpo/auth/callback",
}
EXTRA_REDIRECT_PATHS = {"viewer": ("/silent-refresh.html",)}
POST_LOGOUT_PATHS = {"portal": "/dpo/signed-out"}
# Where a sign-out elsewhere reaches the application (OpenID Connect back-channel logout).
BACKCHANNEL_LOGOUT_PATHS = {
    "portal": "/dpo/backchannel-logout",
    "gateway": "/auth/callback?logout=backchannel",
}
DEFAULT_CALLBACK_PATH = "/auth/callback"
PUBLIC_APPS = frozenset({"viewer"})  # runs in the browser: no secret, PKCE only


class DevProviderError(RuntimeError):
    """The development provider cannot be prepared or started; the message says what to do."""


# Files kept under the secrets folder ---------------------------------------------------------


def _write_new(path: Path, text: str) -> bool:
    """Create ``path`` (0600) with ``text`` unless it exists; False when another process won."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return True


def _stored(path: Path, create: Callable[[], Any]) -> Any:
    """The JSON value kept in ``path``, created by ``create`` on first use."""
    if not path.exists():
        _write_new(path, json.dumps(create(), indent=2))
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise DevProviderError(f"{path} is not JSON: delete it to generate a new one") from None


def _stored_map(path: Path, names: Sequence[str], create: Callable[[str], str]) -> dict[str, str]:
    """A name -> secret map kept in ``path``; names missing from it are added (never changed)."""
    values = _stored(path, dict)
    missing = [name for name in names if name not in values]
    if missing:
        values.update({name: create(name) for name in missing})
        temporary = path.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)
        _write_new(temporary, json.dumps(values, indent=2))
        temporary.replace(path)
    return values


def _b64url_uint(value: int) -> str:
    data = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def generate_rsa_jwk(bits: int = 2048) -> dict[str, str]:
    """A private RSA signing JWK; ``kid`` is its RFC 7638 thumbprint."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private, public = key.private_numbers(), key.public_key().public_numbers()
    jwk = {
        "kty": "RSA",
        "n": _b64url_uint(public.n),
        "e": _b64url_uint(public.e),
        "d": _b64url_uint(private.d),
        "p": _b64url_uint(private.p),
        "q": _b64url_uint(private.q),
        "dp": _b64url_uint(private.dmp1),
        "dq": _b64url_uint(private.dmq1),
        "qi": _b64url_uint(private.iqmp),
    }
    members = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    thumbprint = hashlib.sha256(members.encode()).digest()
    kid = base64.urlsafe_b64encode(thumbprint).rstrip(b"=").decode("ascii")
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def signing_key(secrets_dir: Path) -> dict[str, str]:
    """The provider's private signing JWK, generated once: tokens stay valid across restarts."""
    return _stored(secrets_dir / KEY_FILE, generate_rsa_jwk)


def cookie_keys(secrets_dir: Path) -> list[str]:
    """The keys signing the provider's cookies, generated once: sessions survive a restart."""
    return _stored(secrets_dir / COOKIE_KEYS_FILE, lambda: [secrets.token_urlsafe(32)])


def _new_password(_name: str = "") -> str:
    return secrets.token_urlsafe(12)


def _new_secret(_name: str = "") -> str:
    return secrets.token_urlsafe(32)


# Accounts and clients ------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoAccount:
    """A demo person of the development provider; ``username`` is also the ``sub``."""

    username: str
    name: str
    email: str
    groups: tuple[str, ...]
    password: str = field(repr=False)

    def config(self) -> dict[str, Any]:
        return {
            "sub": self.username,
            "name": self.name,
            "email": self.email,
            "groups": list(self.groups),
            "password": self.password,
        }


def demo_accounts(
    secrets_dir: Path, settings: OidcSettings | None = None
) -> tuple[DemoAccount, ...]:
    """A DPO, a data referent and a member of the example project, with stable passwords."""
    settings = settings or OidcSettings()
    people = (
        ("dpo", "Demo Data Protection Officer", "dpo@hdh.example", settings.dpo_group),
        ("referent", "Demo Data Referent", "referent@hdh.example", settings.referent_group),
        # A member of the example project's spec, so that workspace membership lines up.
        (
            "claire.martin",
            "Claire Martin",
            "claire.martin@chu-exemple.fr",
            settings.project_group_for(EXAMPLE_PROJECT),
        ),
    )
    passwords = _stored_map(secrets_dir / ACCOUNTS_FILE, [p[0] for p in people], _new_password)
    return tuple(
        DemoAccount(username, name, email, (group,), passwords[username])
        for username, name, email, group in people
    )


@dataclass(frozen=True)
class DevClient:
    """A client registered at the development provider (oidc-provider client metadata)."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    backchannel_logout_uri: str | None = None
    name: str | None = None

    def metadata(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "client_id": self.client_id,
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
        }
        if self.client_secret:
            data["client_secret"] = self.client_secret
            data["token_endpoint_auth_method"] = "client_secret_basic"
        else:
            data["token_endpoint_auth_method"] = "none"
        if self.backchannel_logout_uri:
            data["backchannel_logout_uri"] = self.backchannel_logout_uri
            data["backchannel_logout_session_required"] = True
        if self.name:
            data["client_name"] = self.name
        return data


def client_secrets(secrets_dir: Path) -> dict[str, str]:
    """Generated secrets of the confidential platform applications (not the public viewer)."""
    confidential = [app for app in APPS if app not in PUBLIC_APPS]
    return _stored_map(secrets_dir / CLIENT_SECRETS_FILE, confidential, _new_secret)


def dev_settings(
    secrets_dir: Path, issuer: str, settings: OidcSettings | None = None
) -> OidcSettings:
    """``settings`` pointed at the development provider, generated secrets filled in."""
    settings = settings or OidcSettings.from_env()
    generated = client_secrets(secrets_dir)
    clients = {
        app: OidcClient(
            settings.client(app).client_id,
            None
            if app in PUBLIC_APPS
            else settings.client(app).client_secret or generated.get(app),
        )
        for app in APPS
    }
    return dataclasses.replace(settings, issuer=issuer, clients=clients)


def platform_clients(
    settings: OidcSettings, app_urls: Mapping[str, str] | None = None
) -> list[DevClient]:
    """The platform's applications as clients, at the addresses ``make ui`` serves them."""
    urls = {**DEFAULT_APP_URLS, **(app_urls or {})}
    clients = []
    for app in APPS:
        base = urls[app].rstrip("/")
        registered = settings.client(app)
        clients.append(
            DevClient(
                client_id=registered.client_id,
                client_secret=None if app in PUBLIC_APPS else registered.client_secret,
                redirect_uris=tuple(
                    base + path
                    for path in (
                        CALLBACK_PATHS.get(app, DEFAULT_CALLBACK_PATH),
                        *EXTRA_REDIRECT_PATHS.get(app, ()),
                    )
                ),
                post_logout_redirect_uris=(base + POST_LOGOUT_PATHS.get(app, "/"),),
                backchannel_logout_uri=(
                    base + BACKCHANNEL_LOGOUT_PATHS[app]
                    if app in BACKCHANNEL_LOGOUT_PATHS
                    else None
                ),
                name=f"HDH {app}",
            )
        )
    return clients


# Configuration and process --------------------------------------------------------------------


def render_config(
    secrets_dir: Path,
    *,
    port: int = DEV_PORT,
    host: str = DEV_HOST,
    settings: OidcSettings | None = None,
    clients: Sequence[DevClient] | None = None,
    extra_clients: Sequence[DevClient] = (),
    app_urls: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON ``identity/provider.mjs`` reads, for a provider at ``http://host:port``.

    ``clients`` replaces the platform's applications; ``extra_clients`` adds to them.
    """
    issuer = f"http://{host}:{port}"
    settings = dev_settings(secrets_dir, issuer, settings)
    registered = list(clients) if clients is not None else platform_clients(settings, app_urls)
    registered += list(extra_clients)
    ids = [client.client_id for client in registered]
    if len(ids) != len(set(ids)):
        raise DevProviderError(f"client ids must be unique: {sorted(ids)}")
    return {
        "development": True,
        "issuer": issuer,
        "host": host,
        "port": port,
        "clients": [client.metadata() for client in registered],
        "accounts": [account.config() for account in demo_accounts(secrets_dir, settings)],
        "resources": [settings.dicomweb_audience],
        "cookie_keys": cookie_keys(secrets_dir),
        "jwks": {"keys": [signing_key(secrets_dir)]},
        "clock_tolerance": settings.clock_skew_seconds,
    }


def check_installed() -> None:
    """Node.js and ``identity/node_modules`` are there, else say how to get them."""
    if shutil.which("node") is None:
        raise DevProviderError("Node.js (20 or later) is needed for the development provider")
    if not (IDENTITY_DIR / "node_modules" / "oidc-provider").is_dir():
        raise DevProviderError(
            f"{IDENTITY_DIR / 'node_modules'} is missing: make identity-deps installs it"
        )


class DevProvider:
    """A running development provider; :meth:`stop` ends the process it started, by its pid."""

    def __init__(self, process: subprocess.Popen, issuer: str, config_path: Path, log_path: Path):
        self.process = process
        self.issuer = issuer
        self.config_path = config_path
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the started pid, SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def __enter__(self) -> DevProvider:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start(
    secrets_dir: Path,
    *,
    port: int = DEV_PORT,
    host: str = DEV_HOST,
    settings: OidcSettings | None = None,
    clients: Sequence[DevClient] | None = None,
    extra_clients: Sequence[DevClient] = (),
    app_urls: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> DevProvider:
    """Render the configuration, start ``node identity/provider.mjs`` and wait for discovery."""
    check_installed()
    config = render_config(
        secrets_dir,
        port=port,
        host=host,
        settings=settings,
        clients=clients,
        extra_clients=extra_clients,
        app_urls=app_urls,
    )
    config_path = secrets_dir / CONFIG_FILE
    config_path.unlink(missing_ok=True)  # it holds the demo passwords: recreated 0600
    _write_new(config_path, json.dumps(config, indent=2))
    log_path = secrets_dir / LOG_FILE
    log_path.unlink(missing_ok=True)
    _write_new(log_path, "")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["node", str(PROVIDER_SCRIPT), str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=IDENTITY_DIR,
        )
    provider = DevProvider(process, config["issuer"], config_path, log_path)
    try:
        _wait_for_discovery(provider, timeout)
    except BaseException:
        provider.stop()
        raise
    return provider


def _wait_for_discovery(provider: DevProvider, timeout: float) -> None:
    url = discovery_url(provider.issuer)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if not provider.running():
                raise DevProviderError(
                    f"the development provider exited with {provider.process.returncode}:\n"
                    + provider.log_tail()
                )
            # Its own "ready" line first: another process on the port must not pass for it.
            if f"ready {provider.issuer}" in provider.log_tail():
                try:
                    if http.get(url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
    raise DevProviderError(
        f"the development provider did not answer {url} within {timeout:.0f} s:\n"
        + provider.log_tail()
    )
