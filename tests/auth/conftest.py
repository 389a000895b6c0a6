"""One real development provider (``identity/provider.mjs``) for the whole session, and a tiny
HTTP server standing in for a relying party's back-channel logout endpoint."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from auth import dev_provider
from auth.dev_provider import DevClient, DevProvider
from auth.oidc import KeySet, ProviderMetadata, fetch_metadata
from auth.settings import OidcClient, OidcSettings
from tests.dicomweb.servers import free_port

PORTAL = OidcClient("test-portal", "test-portal-secret")
VIEWER = OidcClient("test-viewer")  # public: PKCE only


class _Receiver(BaseHTTPRequestHandler):
    """Takes the provider's back-channel logout POSTs; answers 200 as the spec asks."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = parse_qs(self.rfile.read(length).decode())
        self.server.logout_tokens.put(form.get("logout_token", [""])[0])  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@dataclass(frozen=True)
class RelyingParty:
    """Where the test clients' browser redirects and back-channel calls go."""

    base: str
    logout_tokens: queue.Queue

    @property
    def redirect_uri(self) -> str:
        return f"{self.base}/callback"

    @property
    def post_logout_redirect_uri(self) -> str:
        return f"{self.base}/signed-out"


@pytest.fixture(scope="session")
def relying_party() -> Iterator[RelyingParty]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.logout_tokens = queue.Queue()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield RelyingParty(f"http://{host}:{port}", server.logout_tokens)  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def settings() -> OidcSettings:
    return OidcSettings()  # the documented defaults, whatever the environment says


@pytest.fixture(scope="session")
def provider_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oidc") / "secrets"


@pytest.fixture(scope="session")
def node_ready() -> None:
    """Node.js and identity/node_modules; a skip locally, a failure in CI (no silent skip)."""
    try:
        dev_provider.check_installed()
    except dev_provider.DevProviderError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def provider(
    node_ready: None, provider_secrets: Path, relying_party: RelyingParty, settings: OidcSettings
) -> Iterator[DevProvider]:
    clients = [
        DevClient(
            PORTAL.client_id,
            PORTAL.client_secret,
            redirect_uris=(relying_party.redirect_uri,),
            post_logout_redirect_uris=(relying_party.post_logout_redirect_uri,),
            backchannel_logout_uri=f"{relying_party.base}/backchannel",
            name="Test portal",
        ),
        DevClient(
            VIEWER.client_id,
            redirect_uris=(relying_party.redirect_uri,),
            post_logout_redirect_uris=(relying_party.post_logout_redirect_uri,),
            name="Test viewer",
        ),
    ]
    running = dev_provider.start(
        provider_secrets, port=free_port(), settings=settings, clients=clients
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def metadata(provider: DevProvider) -> ProviderMetadata:
    return fetch_metadata(provider.issuer)


@pytest.fixture(scope="session")
def keys(metadata: ProviderMetadata) -> KeySet:
    return KeySet(metadata.jwks_uri)


@pytest.fixture(scope="session")
def accounts(provider_secrets: Path, settings: OidcSettings, provider: DevProvider) -> dict:
    """Demo accounts by username, with the passwords the running provider checks."""
    return {a.username: a for a in dev_provider.demo_accounts(provider_secrets, settings)}
