"""The viewer's server: OHIF's prebuilt files, the platform's app-config.js, and a same-origin
proxy to the DICOMweb service that holds the project's token.

- ``/app-config.js`` is rendered by ``config.render_app_config`` (the bundled one is never sent);
- ``/dicom-web/...`` (GET and HEAD) is forwarded to the DICOMweb service with
  ``Authorization: Bearer <token of the project>`` added here: the browser never sees a token,
  and the viewer and its data are one origin (no CORS). The browser's ``Host`` is passed on, so
  the URLs the service writes into its answers (bulk data, retrieve URLs) point back here. Any
  other path, a dot segment or another method is refused before anything is forwarded;
- every other path is a file of ``@ohif/app``'s ``dist/``, or ``index.html`` for the viewer's
  client routes (``/viewer?StudyInstanceUIDs=...``): OHIF's index.html and bundle load from
  ``/``, so the viewer needs the root of its own host and port.

One server serves one project (``project=None``: an operator's all-studies token).
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from viewer.config import ViewerOptions, render_app_config

VIEWER_DIR = Path(__file__).resolve().parent
DIST = VIEWER_DIR / "node_modules" / "@ohif" / "app" / "dist"
PROXY_ROOT = "/dicom-web"
TOKEN_TTL = 3600
RENEW_BEFORE = 300
# What the browser may ask of the service, and what comes back; nothing else crosses.
FORWARDED_REQUEST = ("accept", "accept-encoding", "range", "if-none-match", "if-modified-since")
FORWARDED_RESPONSE = (
    "content-type",
    "content-length",
    "content-encoding",
    "content-range",
    "accept-ranges",
    "etag",
    "last-modified",
    "cache-control",
    "warning",
)
MISSING_DIST = (
    "The OHIF viewer is not installed: {0} is missing. `make viewer-deps` installs it "
    "(npm ci --prefix viewer)."
)


class TokenSource:
    """The project's bearer token, issued on first use and renewed before it expires."""

    def __init__(self, issue, project: str | None, ttl: int = TOKEN_TTL):
        self._issue, self._project, self._ttl = issue, project, ttl
        self._token, self._expires = "", 0.0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            now = time.time()
            if now > self._expires - RENEW_BEFORE:
                self._token = self._issue(self._project, self._ttl)
                self._expires = now + self._ttl
            return self._token


class ViewerFiles(StaticFiles):
    """dist/ as static files; a path that is no file is a client route: index.html."""

    async def get_response(self, path: str, scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as error:
            if error.status_code != 404:
                raise
            response = None
        if response is None or response.status_code == 404:
            if Path(path).suffix in (".js", ".css", ".wasm", ".map", ".json", ".png", ".ico"):
                return PlainTextResponse("not found", 404)  # a missing asset, not a route
            return FileResponse(Path(self.directory) / "index.html", media_type="text/html")
        return response


def _refused(path: str) -> bool:
    segments = unquote(path).replace("\\", "/").split("/")
    return any(s in (".", "..") for s in segments) or "\x00" in path


def create_app(
    dicomweb_url: str,
    token: callable,
    title: str = "HDH imaging",
    options: ViewerOptions | None = None,
    dist: Path = DIST,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """``dicomweb_url``: the service's root (``http://host:port/dicom-web``); ``token()``: the
    bearer token to add (see ``TokenSource``)."""
    if not (dist / "index.html").is_file():
        raise FileNotFoundError(MISSING_DIST.format(dist))
    upstream_root = dicomweb_url.rstrip("/")
    app_config = render_app_config(PROXY_ROOT, title, options)
    client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(120, connect=10))

    async def config_js(request: Request) -> Response:
        return Response(
            app_config,
            media_type="application/javascript",
            headers={"Cache-Control": "no-store"},
        )

    async def proxy(request: Request) -> Response:
        rest = request.path_params.get("rest", "")
        raw_path = request.scope.get("raw_path", b"").decode("latin-1")
        if _refused(rest) or _refused(raw_path):
            return PlainTextResponse("refused: a dot segment", 400)
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("the viewer proxy is read only", 405)
        url = f"{upstream_root}/{rest}" if rest else upstream_root
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED_REQUEST}
        headers["authorization"] = f"Bearer {token()}"
        headers["host"] = request.headers.get("host", "")
        headers["x-forwarded-proto"] = request.url.scheme
        upstream = client.build_request(
            request.method, url, params=request.query_params.multi_items(), headers=headers
        )
        try:
            answer = await client.send(upstream, stream=True)
        except httpx.HTTPError as error:
            return PlainTextResponse(f"the DICOMweb service did not answer: {error}", 502)
        kept = {k: v for k, v in answer.headers.items() if k in FORWARDED_RESPONSE}
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers=kept,
            background=BackgroundTask(answer.aclose),
        )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await client.aclose()

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    app = Starlette(
        routes=[
            Route("/app-config.js", config_js),
            Route(PROXY_ROOT, proxy, methods=methods, name="proxy-root"),
            Route(PROXY_ROOT + "/{rest:path}", proxy, methods=methods),
            Mount("/", ViewerFiles(directory=dist, html=True, check_dir=True)),
        ],
        lifespan=lifespan,
    )
    return app


def serve(
    home,
    project: str | None,
    host: str = "127.0.0.1",
    port: int = 3003,
    dicomweb_url: str = "http://127.0.0.1:3002/dicom-web",
    title: str | None = None,
) -> None:
    """Run the viewer for ``project`` with uvicorn until interrupted."""
    import uvicorn

    from dicomweb.tokens import Tokens

    tokens = Tokens.for_home(home)
    title = title or (f"HDH imaging: {project}" if project else "HDH imaging")
    app = create_app(dicomweb_url, TokenSource(tokens.issue, project), title)
    uvicorn.run(app, host=host, port=port, log_level="info")
