"""The viewer's server without a browser: the proxy adds the token and forwards reads and STOW-RS
posts only, app-config.js is the platform's, and client routes fall back to index.html."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from dicomweb.stow import boundary_of, split_parts
from viewer.server import DIST, TokenSource, create_app

UPSTREAM = "http://dicomweb.internal:8042/dicom-web"
BOUNDARY = "hdh-test-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


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


def stow_payload(size: int) -> bytes:
    return b"DICM" + bytes(range(256)) * (size // 256) + b"\x00" * (size % 256)


def stow_body(size: int) -> bytes:
    """A multipart/related body of one application/dicom part of ``size`` payload bytes (no
    DICOM inside: the proxy leaves it as it is, and the service would refuse it)."""
    return (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + stow_payload(size)
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def forwarded_parts(request: httpx.Request) -> list[bytes]:
    """The parts the upstream received (the proxy writes a body of its own, new boundary)."""
    return split_parts(request.content, boundary_of(request.headers["content-type"]))


@pytest.fixture
def client(dist: Path, seen: list[httpx.Request]) -> TestClient:
    yield from viewer_client(dist, seen)


def viewer_client(dist: Path, seen: list[httpx.Request], **options):
    """A test client of the viewer whose upstream records each request, its body read."""

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
        UPSTREAM,
        TokenSource(issue, "cohort-a"),
        dist=dist,
        transport=httpx.MockTransport(answer),
        **options,
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


def test_only_stow_posts_are_forwarded_besides_reads(client, seen):
    body = stow_body(100)
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        response = client.request(
            method, "/dicom-web/studies", content=body, headers={"Content-Type": STOW_TYPE}
        )
        assert response.status_code == 405, method
    for path in (
        "/dicom-web",
        "/dicom-web/",
        "/dicom-web/studies/",
        "/dicom-web/series",
        "/dicom-web/instances",
        "/dicom-web/studies/1.2.3/series",
        "/dicom-web/studies/1.2.3/series/4.5.6",
        "/dicom-web/studies/1.2.3/series/4.5.6/instances",
        "/dicom-web/studies/abc",
        "/dicom-web/studies/1.2.3%2Fseries",
        "/dicom-web/studies/" + "1" * 65,
        "/dicom-web/health",
    ):
        response = client.post(path, content=body, headers={"Content-Type": STOW_TYPE})
        assert response.status_code == 405, path
    assert seen == []


@pytest.mark.parametrize("path", ["/dicom-web/studies", "/dicom-web/studies/2.25.1234"])
def test_a_stow_post_is_forwarded_with_its_body_and_the_project_token(client, seen, path):
    body = stow_body(70_000)
    response = client.post(
        path + "?ignored=1",
        content=body,
        headers={
            "Content-Type": STOW_TYPE,
            "Accept": "application/dicom+json",
            "Authorization": "Bearer from-the-browser",
            "Cookie": "session=1",
            "X-Other": "dropped",
        },
    )
    assert response.status_code == 200
    assert response.json()[0]["0020000D"]["Value"] == ["1.2.3"]
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == UPSTREAM + path.removeprefix("/dicom-web")
    assert request.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    assert request.headers["content-length"] == str(len(request.content))
    assert "transfer-encoding" not in request.headers
    assert request.headers["authorization"] == "Bearer token-cohort-a-1"
    assert request.headers["accept"] == "application/dicom+json"
    assert request.headers["host"] == "viewer.test:3002"
    assert "cookie" not in request.headers and "x-other" not in request.headers
    assert forwarded_parts(request) == [stow_payload(70_000)]


def test_a_chunked_stow_body_is_received_whole_and_forwarded_with_its_length(client, seen):
    body = stow_body(300_000)
    chunks = [body[i : i + 65_536] for i in range(0, len(body), 65_536)]
    response = client.post(
        "/dicom-web/studies", content=iter(chunks), headers={"Content-Type": STOW_TYPE}
    )
    assert response.status_code == 200
    (request,) = seen
    assert request.headers["content-length"] == str(len(request.content))
    assert "transfer-encoding" not in request.headers
    assert forwarded_parts(request) == [stow_payload(300_000)]


def test_stow_bodies_past_the_cap_are_refused(dist, seen):
    cap = 100_000
    for client in viewer_client(dist, seen, max_stow_bytes=cap):
        declared = client.post(
            "/dicom-web/studies", content=stow_body(cap), headers={"Content-Type": STOW_TYPE}
        )
        assert declared.status_code == 413
        body = stow_body(cap)
        streamed = client.post(
            "/dicom-web/studies",
            content=iter([body[:60_000], body[60_000:]]),  # no Content-Length: counted
            headers={"Content-Type": STOW_TYPE},
        )
        assert streamed.status_code == 413
        assert seen == []  # the upstream never got a request it could act on
        small = client.post(
            "/dicom-web/studies", content=stow_body(cap // 2), headers={"Content-Type": STOW_TYPE}
        )
        assert small.status_code == 200 and len(seen) == 1


def test_a_stow_post_needs_a_multipart_body(client, seen):
    for content_type in ("application/dicom", "application/json", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = client.post("/dicom-web/studies", content=b"DICM", headers=headers)
        assert response.status_code == 415, content_type
    response = client.post(
        "/dicom-web/studies",
        content=stow_body(10),
        headers={"Content-Type": STOW_TYPE, "Content-Length": "ten"},
    )
    assert response.status_code == 400
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
