"""The viewer's server without a browser: the proxy adds the token and forwards nothing else,
app-config.js is the platform's, and client routes fall back to index.html."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from viewer.server import DIST, TokenSource, create_app

UPSTREAM = "http://dicomweb.internal:8042/dicom-web"


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    root.mkdir()
    (root / "index.html").write_text("<html>the viewer</html>")
    (root / "app-config.js").write_text("window.config = {bundled: true};")
    (root / "app.bundle.js").write_text("console.log('bundle')")
    return root


@pytest.fixture
def seen() -> list[httpx.Request]:
    return []


@pytest.fixture
def client(dist: Path, seen: list[httpx.Request]) -> TestClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.dumps([{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]).encode()
        return httpx.Response(
            200,
            stream=httpx.ByteStream(body),  # streamed, as the real service answers
            headers={"content-type": "application/dicom+json", "set-cookie": "x=1"},
        )

    issued = []

    def issue(project, ttl):
        issued.append((project, ttl))
        return f"token-{project}-{len(issued)}"

    app = create_app(
        UPSTREAM, TokenSource(issue, "cohort-a"), dist=dist, transport=httpx.MockTransport(answer)
    )
    with TestClient(app, base_url="http://viewer.test:3002") as test_client:
        yield test_client


def test_the_proxy_adds_the_project_token_and_keeps_the_browser_host(client, seen):
    response = client.get(
        "/dicom-web/studies?PatientID=abc&limit=25",
        headers={"Accept": "application/dicom+json", "Authorization": "Bearer from-the-browser"},
    )
    assert response.status_code == 200
    assert response.json()[0]["0020000D"]["Value"] == ["1.2.3"]
    assert "set-cookie" not in response.headers
    (request,) = seen
    assert str(request.url) == f"{UPSTREAM}/studies?PatientID=abc&limit=25"
    assert request.headers["authorization"] == "Bearer token-cohort-a-1"
    assert request.headers["host"] == "viewer.test:3002"
    assert request.headers["accept"] == "application/dicom+json"
    client.get("/dicom-web/studies/1.2.3/series")
    assert seen[1].headers["authorization"] == "Bearer token-cohort-a-1"  # reused, not reissued


@pytest.mark.parametrize(
    "path",
    [
        "/dicom-web/../secrets",
        "/dicom-web/%2e%2e/secrets",
        "/dicom-web/studies/%2E%2E/%2E%2E/admin",
        "/dicom-web/./studies",
    ],
)
def test_dot_segments_are_refused_before_anything_is_forwarded(client, seen, path):
    # httpx would normalise a literal "..": send the raw path as a browser could.
    response = client.request(
        "GET", httpx.URL(path.replace("..", "%2e%2e").replace("/./", "/%2e/"))
    )
    assert response.status_code in (400, 404)
    assert seen == []


def test_paths_outside_dicom_web_never_reach_the_service(client, seen):
    for path in ("/admin", "/dicom-webx/studies", "/api/dicom-web/studies", "/studies"):
        response = client.get(path)
        assert response.text == "<html>the viewer</html>"  # a client route at most
    assert seen == []


def test_the_proxy_is_read_only(client, seen):
    for method in ("POST", "PUT", "DELETE"):
        assert client.request(method, "/dicom-web/studies").status_code == 405
    assert seen == []


def test_app_config_is_the_platforms_and_client_routes_get_index_html(client):
    config = client.get("/app-config.js")
    assert config.headers["content-type"].startswith("application/javascript")
    assert "bundled" not in config.text and "qidoRoot" in config.text
    assert client.get("/app.bundle.js").text == "console.log('bundle')"
    for route in ("/", "/viewer?StudyInstanceUIDs=1.2.3", "/segmentation", "/local"):
        response = client.get(route)
        assert response.status_code == 200 and response.text == "<html>the viewer</html>"
    assert client.get("/missing.bundle.js").status_code == 404


def test_tokens_are_renewed_before_they_expire(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("viewer.server.time.time", lambda: now[0])
    issued = []
    source = TokenSource(lambda project, ttl: issued.append(ttl) or f"t{len(issued)}", None, 3600)
    assert source() == "t1" and source() == "t1"
    now[0] += 3600 - 299
    assert source() == "t2"


def test_the_installed_viewer_is_complete():
    if not (DIST / "index.html").is_file():
        pytest.fail(f"{DIST} is missing: run `make viewer-deps`")
    index = (DIST / "index.html").read_text()
    assert 'src="/app-config.js"' in index
    bundles = [p for p in DIST.glob("app.bundle.*.js")]
    assert bundles and any(DIST.glob("*.wasm"))
