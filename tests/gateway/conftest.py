"""The gateway's test pieces: settings pointed at a provider, Apache's presence, and a tiny
upstream that answers with the headers it received (what the gateway passes on)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from auth.settings import OidcClient, OidcSettings
from gateway import server


@pytest.fixture(scope="session")
def apache_ready() -> None:
    """Debian's apache2 and mod_auth_openidc; a skip locally, a failure in CI (no silent skip)."""
    try:
        server.check_installed()
    except server.GatewayError as error:
        pytest.skip(str(error))


@pytest.fixture
def gateway_settings() -> OidcSettings:
    """The documented defaults, an issuer and a gateway secret: what a deployment sets."""
    settings = OidcSettings(issuer="https://sso.example.org/realms/hdh")
    clients = {**settings.clients, "gateway": OidcClient("hdh-gateway", "s3cret-gateway-value")}
    return dataclasses.replace(settings, clients=clients)


class _Echo(BaseHTTPRequestHandler):
    """Answers any request with the path and headers it received, as JSON."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        if length:
            self.rfile.read(length)
        body = json.dumps({"path": self.path, "headers": self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="session")
def echo_upstream() -> Iterator[str]:
    """The base URL of a header-echoing upstream (it stands in for any backend)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
