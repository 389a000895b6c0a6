"""The DICOMweb application: QIDO-RS and WADO-RS under ``/dicom-web``, behind bearer tokens.

Every route needs a valid token (401 otherwise): the platform's own (``tokens.py``), or an
access token of the single sign-on provider when one is configured (``provider_tokens.py``). A
study the token may not see answers exactly
as an unknown one (404), so a token never learns what exists beyond its grants. Request counts
per route kind and status class are kept for operators at ``/dicom-web/health``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dicomweb import wado
from dicomweb.access import Access
from dicomweb.attributes import Level
from dicomweb.errors import DicomWebError, not_found
from dicomweb.headers import StoredFiles, bulk_value, dataset_json
from dicomweb.index import IndexSource, IndexView
from dicomweb.media import Offer, choose, multipart_chunks, multipart_type, new_boundary, part_type
from dicomweb.provider_tokens import NoAccess, ProviderTokens, is_jwt
from dicomweb.qido import MAX_RESULTS, Searcher, parse_query
from dicomweb.stow import MAX_BODY_BYTES, Stower, boundary_of
from dicomweb.tokens import Claims, InvalidToken, Tokens
from resources.home import HdhHome

log = logging.getLogger("hdh.dicomweb")
ROOT = "/dicom-web"
DICOM_JSON = "application/dicom+json"
STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"


@dataclass
class Context:
    """What a handler needs: the caller, the index view, and the studies it may see."""

    request: Request
    claims: Claims
    view: IndexView
    visible: frozenset[str] | None
    base_url: str

    def instances(self) -> pl.DataFrame:
        """Visible instances under the path's study, series and instance; 404 when none."""
        params = self.request.path_params
        study = params.get("study")
        if self.visible is not None and study not in self.visible:
            raise not_found("study")
        frame = self.view.instances.filter(pl.col("StudyInstanceUID") == study)
        if frame.is_empty():
            raise not_found("study")
        for key, keyword in (("series", "SeriesInstanceUID"), ("instance", "SOPInstanceUID")):
            if key in params:
                frame = frame.filter(pl.col(keyword) == params[key])
                if frame.is_empty():
                    raise not_found(key)
        return frame

    def instance_url(self, row: dict) -> str:
        return (
            f"{self.base_url}/studies/{row['StudyInstanceUID']}/series/"
            f"{row['SeriesInstanceUID']}/instances/{row['SOPInstanceUID']}"
        )

    def bulk_uri(self, row: dict) -> Callable[[str], str]:
        prefix = f"{self.instance_url(row)}/bulk/"
        return lambda path: prefix + path


def _error(error: DicomWebError, headers: dict | None = None) -> Response:
    return JSONResponse(error.body(), error.status, headers, media_type=DICOM_JSON)


def _json(items: list[dict], headers: dict | None = None) -> Response:
    return JSONResponse(items, 200, headers, media_type=DICOM_JSON)


def base_url_of(request: Request, public_url: str | None) -> str:
    """Where this service's URLs start: ``public_url`` when configured (behind a proxy),
    else the request's host. dicomweb-client sends ``Host`` without the port, so a host
    without one gets the port the connection arrived on, unless it is the scheme's default."""
    if public_url:
        return public_url.rstrip("/") + ROOT
    url = request.base_url
    server = request.scope.get("server")
    default = 443 if url.scheme == "https" else 80
    if url.port is None and server and server[1] and server[1] != default:
        url = url.replace(port=server[1])
    return str(url).rstrip("/") + ROOT


def create_app(
    home: HdhHome,
    tokens: Tokens | None = None,
    max_results: int = MAX_RESULTS,
    public_url: str | None = None,
    provider: ProviderTokens | bool | None = True,
) -> Starlette:
    """``provider``: the single sign-on provider's tokens, accepted beside the platform's
    (``True``: ``HDH_OIDC_ISSUER``'s provider, or the development provider once it runs for
    this home; ``None``: never)."""
    tokens = tokens or Tokens.for_home(home)
    provider = ProviderTokens.for_home(home) if provider is True else provider

    def verify(token: str) -> Claims:
        if provider is not None and is_jwt(token):
            return provider.verify(token)
        return tokens.verify(token)

    index = IndexSource(home)
    files = StoredFiles(home.store / "dicom")
    access = Access(home)
    stower = Stower(home, index, files)
    counts: Counter[tuple[str, str]] = Counter()
    counts_lock = threading.Lock()

    def context(request: Request) -> Context:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise DicomWebError(401, "a bearer token is required")
        try:
            claims = verify(token)
        except NoAccess as error:
            raise DicomWebError(403, str(error)) from None
        except InvalidToken as error:
            raise DicomWebError(401, f"invalid token: {error}") from None
        view = index.current()
        base_url = base_url_of(request, public_url)
        return Context(request, claims, view, access.visible(claims, view), base_url)

    def route(kind: str, handler: Callable[[Context], Response]):
        async def endpoint(request: Request) -> Response:
            try:
                response = await run_in_threadpool(lambda: handler(context(request)))
            except DicomWebError as error:
                headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
                response = _error(error, headers)
            except Exception:
                log.exception("%s request failed", kind)  # the path holds UIDs only
                response = _error(DicomWebError(500, "internal error"))
            with counts_lock:
                counts[(kind, f"{response.status_code // 100}xx")] += 1
            return response

        return endpoint

    def qido(level: Level) -> Callable[[Context], Response]:
        def handler(ctx: Context) -> Response:
            wado.metadata_offer(ctx.request.headers.get("accept"))  # DICOM JSON, or 406
            scope = {}
            if "study" in ctx.request.path_params:
                ctx.instances()  # 404 for an unknown or invisible study or series
                scope["StudyInstanceUID"] = ctx.request.path_params["study"]
            if "series" in ctx.request.path_params:
                scope["SeriesInstanceUID"] = ctx.request.path_params["series"]
            query = parse_query(list(ctx.request.query_params.multi_items()), level)
            result = Searcher(ctx.view, files, ctx.base_url).search(
                query, scope, ctx.visible, max_results
            )
            return _json(result.items, {"Warning": result.warning} if result.warning else None)

        return handler

    def retrieve(ctx: Context) -> Response:
        rows = list(ctx.instances().iter_rows(named=True))
        offer = wado.choose_instances(
            ctx.request.headers.get("accept"), {r["transfer_syntax_uid"] for r in rows}
        )
        boundary = new_boundary()

        def parts():
            for row in rows:
                data = files.raw(row["store_path"])
                if data is not None:
                    media = f"application/dicom; transfer-syntax={row['transfer_syntax_uid']}"
                    yield media, data, None

        return StreamingResponse(
            multipart_chunks(parts(), boundary), media_type=multipart_type(offer, boundary)
        )

    def metadata(ctx: Context) -> Response:
        rows = list(ctx.instances().iter_rows(named=True))
        wado.metadata_offer(ctx.request.headers.get("accept"))
        items = []
        for row in rows:
            dataset = files.dataset(row["store_path"])
            if dataset is not None:
                items.append(dataset_json(dataset, ctx.bulk_uri(row)))
        return _json(items)

    def instance_dataset(ctx: Context):
        (row,) = ctx.instances().iter_rows(named=True)
        dataset = files.dataset(row["store_path"])
        if dataset is None:
            raise not_found("instance")
        return row, dataset

    def frames(ctx: Context) -> Response:
        row, dataset = instance_dataset(ctx)
        if "PixelData" not in dataset:
            raise not_found("frame (the instance holds no pixel data)")
        numbers = wado.frame_numbers(ctx.request.path_params["frames"], wado.frame_count(dataset))
        offer = choose(ctx.request.headers.get("accept"), wado.frame_offers(dataset))
        location = f"{ctx.instance_url(row)}/frames/"
        boundary = new_boundary()
        chunks = multipart_chunks(
            (
                (part_type(offer), data, f"{location}{n}")
                for n, data in zip(numbers, wado.frames(dataset, numbers, offer), strict=True)
            ),
            boundary,
        )
        return Response(b"".join(chunks), media_type=multipart_type(offer, boundary))

    def rendered(ctx: Context) -> Response:
        _, dataset = instance_dataset(ctx)
        params = dict(ctx.request.query_params)
        offer = wado.rendered_offer(ctx.request.headers.get("accept"), params)
        text = ctx.request.path_params.get("frame", "1")
        (number,) = wado.frame_numbers(text, wado.frame_count(dataset))
        return Response(wado.render(dataset, number, offer.media, params), media_type=offer.media)

    def bulk(ctx: Context) -> Response:
        _, dataset = instance_dataset(ctx)
        data = bulk_value(dataset, ctx.request.path_params["path"])
        if data is None:
            raise not_found("bulk data")
        offer = choose(ctx.request.headers.get("accept"), [Offer("application/octet-stream", True)])
        boundary = new_boundary()
        body = b"".join(multipart_chunks([(offer.media, data, None)], boundary))
        return Response(body, media_type=multipart_type(offer, boundary))

    def health(ctx: Context) -> Response:
        if not ctx.claims.all:
            raise DicomWebError(403, "the health page is for operators (an all-studies token)")
        with counts_lock:
            requests: dict[str, dict[str, int]] = {}
            for (kind, status), count in sorted(counts.items()):
                requests.setdefault(kind, {})[status] = count
        return JSONResponse(
            {
                "status": "ok",
                "studies": ctx.view.studies.height,
                "instances": ctx.view.instances.height,
                "excluded_subjects": len(ctx.view.excluded),
                "requests": requests,
            }
        )

    def stow(ctx: Context) -> Response:
        study = ctx.request.path_params.get("study")
        outcome = stower.store(
            ctx.request.state.stow_body,
            ctx.request.headers.get("content-type"),
            ctx.claims,
            ctx.view,
            ctx.visible,
            ctx.base_url,
            study,
        )
        return JSONResponse(outcome.body, outcome.status, media_type=DICOM_JSON)

    stow_handler = route("stow", stow)

    async def stow_endpoint(request: Request) -> Response:
        """STOW-RS (``stow.py``): the body is read here, the handler runs in the thread pool.
        Nothing is read for a request the handler will refuse anyway (no valid token, or not a
        multipart/related body of application/dicom): it answers 401 or 415 as for any route."""
        body = bytearray()
        request.state.stow_body = b""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise InvalidToken("no bearer token")
            verify(token)
            boundary_of(request.headers.get("content-type"))
        except (InvalidToken, DicomWebError):
            return await stow_handler(request)  # answers the 401 or 415 without the body
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _error(DicomWebError(413, "the request body is too large"))
        request.state.stow_body = bytes(body)
        return await stow_handler(request)

    routes = [
        ("health", "/health", health),
        ("qido", "/studies", qido(Level.STUDY)),
        ("qido", "/series", qido(Level.SERIES)),
        ("qido", "/instances", qido(Level.INSTANCE)),
        ("qido", STUDY + "/series", qido(Level.SERIES)),
        ("qido", STUDY + "/instances", qido(Level.INSTANCE)),
        ("qido", SERIES + "/instances", qido(Level.INSTANCE)),
        ("retrieve", STUDY, retrieve),
        ("retrieve", SERIES, retrieve),
        ("retrieve", INSTANCE, retrieve),
        ("metadata", STUDY + "/metadata", metadata),
        ("metadata", SERIES + "/metadata", metadata),
        ("metadata", INSTANCE + "/metadata", metadata),
        ("frames", INSTANCE + "/frames/{frames}", frames),
        ("rendered", INSTANCE + "/rendered", rendered),
        ("rendered", INSTANCE + "/frames/{frame}/rendered", rendered),
        ("bulk", INSTANCE + "/bulk/{path:path}", bulk),
    ]
    stow_routes = [
        Route(ROOT + path, stow_endpoint, methods=["POST"]) for path in ("/studies", STUDY)
    ]
    return Starlette(
        routes=[Route(ROOT + path, route(kind, handler)) for kind, path, handler in routes]
        + stow_routes
    )


def serve(
    home: HdhHome, host: str = "127.0.0.1", port: int = 8042, public_url: str | None = None
) -> None:
    """Run the service with uvicorn until interrupted (the ``hdh dicomweb`` command's body);
    ``public_url`` is the address clients use when a proxy stands in front."""
    import uvicorn

    uvicorn.run(create_app(home, public_url=public_url), host=host, port=port, log_level="info")
