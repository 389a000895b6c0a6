"""The viewer's server: OHIF's prebuilt files, the platform's app-config.js, and a same-origin
proxy to the DICOMweb service that holds the project's token, or passes on the person's.

- ``/app-config.js`` is rendered by ``config.render_app_config`` (the bundled one is never sent);
- ``/dicom-web/...`` (GET and HEAD) is forwarded to the DICOMweb service with
  ``Authorization: Bearer <token of the project>`` added here: the browser never sees a token,
  and the viewer and its data are one origin (no CORS). The browser's ``Host`` is passed on, so
  the URLs the service writes into its answers (bulk data, retrieve URLs) point back here;
- ``POST /dicom-web/studies`` and ``POST /dicom-web/studies/{study}`` (STOW-RS: a segmentation
  the viewer saves) are forwarded the same way (no query), once received whole (at most
  ``MAX_STOW_BYTES``, 413 beyond, counted as it arrives when it declares no length) and
  cleaned of the viewer's free text (``saving.py``). The service decides what it stores
  (``dicomweb/stow.py``); the proxy only narrows what may reach it. Any other path, a dot
  segment or another method is refused before anything is forwarded;
- every other path is a file of ``@ohif/app``'s ``dist/``, or ``index.html`` for the viewer's
  client routes (``/viewer?StudyInstanceUIDs=...``): OHIF's index.html and bundle load from
  ``/``, so the viewer needs the root of its own host and port.

One server serves one project (``project=None``: an operator's all-studies token).

Sign-in mode (``sign_in``): no token is held here. OHIF signs the person in at the provider
(``config.SignIn``) and sends ``Authorization: Bearer <their access token>`` to ``/dicom-web``;
the proxy passes that header on, and only that one (a Bearer credential, once), and answers 401
without forwarding anything when it is missing. The service verifies the token and decides what
the person sees (``dicomweb/provider_tokens.py``). STOW bodies are cleaned in both modes.
``/silent-refresh.html`` is then served here: the one in ``dist/`` is written for the legacy
client OHIF no longer uses with the code flow, and loads a script from a CDN.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import unquote

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from auth.dev_provider import DEV_HOST, DEV_PORT
from auth.settings import OidcSettings
from dicomweb.errors import DicomWebError
from viewer.config import SILENT_RENEW_PATH, SignIn, ViewerOptions, render_app_config
from viewer.saving import clean_body

VIEWER_DIR = Path(__file__).resolve().parent
DIST = VIEWER_DIR / "node_modules" / "@ohif" / "app" / "dist"
PROXY_ROOT = "/dicom-web"
TOKEN_TTL = 3600
RENEW_BEFORE = 300
# What the browser may ask of the service, and what comes back; nothing else crosses.
FORWARDED_REQUEST = ("accept", "accept-encoding", "range", "if-none-match", "if-modified-since")
# STOW-RS targets: all studies, or one study named by a DICOM UID (digits and dots, 64 at most).
STOW_PATH = re.compile(r"studies(/[0-9][0-9.]{0,63})?")
MAX_STOW_BYTES = 512 * 1024**2
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
# What oidc-client-ts's own silent callback does: hand the provider's answer (the URL of the
# frame) to the viewer's window, which checks its state and exchanges the code.
SILENT_RENEW_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Signing in</title></head><body><script>
window.parent.postMessage(
  { source: "oidc-client", url: window.location.href, keepOpen: false },
  window.location.origin
);
</script></body></html>
"""
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


class TooLarge(Exception):
    """A STOW body went past the cap while it was streamed (no or a false Content-Length)."""


async def _capped(chunks: AsyncIterator[bytes], cap: int) -> AsyncIterator[bytes]:
    """The body as it arrives, stopped once it passes ``cap`` bytes: a declared length is
    checked before forwarding, this catches a body without one (chunked) or longer than it."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > cap:
            raise TooLarge
        yield chunk


def _stow_refusal(request: Request, cap: int) -> Response | None:
    """Why a STOW request is not forwarded at all: no multipart body, or one declared too long."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/related"):
        return PlainTextResponse("STOW-RS takes a multipart/related body", 415)
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        return PlainTextResponse("Content-Length is not a number", 400)
    if length is not None and int(length) > cap:
        return PlainTextResponse(f"a STOW body is {cap} bytes at most", 413)
    return None


def browser_bearer(request: Request) -> str | None:
    """The browser's own access token: exactly one ``Authorization: Bearer <token>`` header,
    else None (another scheme, such as Basic, is never passed on)."""
    values = request.headers.getlist("authorization")
    if len(values) != 1:
        return None
    scheme, _, credentials = values[0].strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials or any(c.isspace() for c in credentials):
        return None
    return credentials


def create_app(
    dicomweb_url: str,
    token: Callable[[], str] | None,
    title: str = "HDH imaging",
    options: ViewerOptions | None = None,
    dist: Path = DIST,
    transport: httpx.AsyncBaseTransport | None = None,
    max_stow_bytes: int = MAX_STOW_BYTES,
    sign_in: SignIn | None = None,
) -> Starlette:
    """``dicomweb_url``: the service's root (``http://host:port/dicom-web``); ``token()``: the
    bearer token to add (see ``TokenSource``), or None with ``sign_in``: the person's token,
    sent by the viewer, is passed on instead."""
    if (token is None) == (sign_in is None):
        raise ValueError("either a token source or a sign-in, not both, not neither")
    if not (dist / "index.html").is_file():
        raise FileNotFoundError(MISSING_DIST.format(dist))
    upstream_root = dicomweb_url.rstrip("/")
    app_config = render_app_config(PROXY_ROOT, title, options, sign_in)
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
        stow = request.method == "POST"
        if stow and not STOW_PATH.fullmatch(rest):
            return PlainTextResponse("the viewer proxy stores to /studies[/{study}] only", 405)
        if request.method not in ("GET", "HEAD", "POST"):
            return PlainTextResponse("the viewer proxy reads and stores only", 405)
        if token is None:
            bearer = browser_bearer(request)
            if bearer is None:
                return PlainTextResponse(
                    "sign in first: the viewer sends your access token",
                    401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        else:
            bearer = token()
        url = f"{upstream_root}/{rest}" if rest else upstream_root
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED_REQUEST}
        body = None
        if stow:
            refusal = _stow_refusal(request, max_stow_bytes)
            if refusal is not None:
                return refusal
            try:
                received = b"".join([c async for c in _capped(request.stream(), max_stow_bytes)])
                body, media = await run_in_threadpool(
                    clean_body, received, request.headers.get("content-type")
                )
            except TooLarge:
                return PlainTextResponse(f"a STOW body is {max_stow_bytes} bytes at most", 413)
            except DicomWebError as error:
                return PlainTextResponse(error.message, error.status)
            headers.update({"content-type": media, "content-length": str(len(body))})
        headers["authorization"] = f"Bearer {bearer}"
        headers["host"] = request.headers.get("host", "")
        headers["x-forwarded-proto"] = request.url.scheme
        params = None if stow else request.query_params.multi_items()
        upstream = client.build_request(
            request.method, url, params=params, headers=headers, content=body
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

    async def silent_renew(request: Request) -> Response:
        # Framed by the viewer only: its URL carries an authorization code.
        headers = {
            "Cache-Control": "no-store",
            "Content-Security-Policy": "frame-ancestors 'self'",
            "Referrer-Policy": "no-referrer",
        }
        return HTMLResponse(SILENT_RENEW_PAGE, headers=headers)

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    signing_in = [Route(SILENT_RENEW_PATH, silent_renew)] if sign_in else []
    app = Starlette(
        routes=[
            Route("/app-config.js", config_js),
            *signing_in,
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
    sign_in: bool = False,
    issuer: str | None = None,
    client_id: str | None = None,
    audience: str | None = None,
) -> None:
    """Run the viewer for ``project`` with uvicorn until interrupted. ``sign_in``: people sign
    in at the provider and see what their own token grants (``project`` names the tab only);
    ``issuer``, ``client_id`` and ``audience`` default to the deployment's settings
    (``HDH_OIDC_*``; no issuer set: the development provider)."""
    import uvicorn

    title = title or (f"HDH imaging: {project}" if project else "HDH imaging")
    if sign_in:
        app = create_app(
            dicomweb_url,
            None,
            title,
            sign_in=sign_in_settings(issuer, client_id, audience, home.secrets),
        )
    else:
        from dicomweb.tokens import Tokens

        tokens = Tokens.for_home(home)
        app = create_app(dicomweb_url, TokenSource(tokens.issue, project), title)
    uvicorn.run(app, host=host, port=port, log_level="info")


def sign_in_settings(
    issuer: str | None = None,
    client_id: str | None = None,
    audience: str | None = None,
    secrets_dir: Path | None = None,
) -> SignIn:
    """What the viewer signs in with: the arguments, else the deployment's ``HDH_OIDC_*``
    settings, else the development provider running for this home (``secrets_dir``), else the
    development provider's default address."""
    settings = OidcSettings.from_env()
    if not settings.issuer and secrets_dir is not None:
        from auth.provider import provider_settings

        settings = provider_settings(secrets_dir)() or settings
    return SignIn(
        issuer=issuer or settings.issuer or f"http://{DEV_HOST}:{DEV_PORT}",
        client_id=client_id or settings.client("viewer").client_id,
        audience=audience or settings.dicomweb_audience,
    )
