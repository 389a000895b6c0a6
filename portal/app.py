"""The rights portal: a server-rendered Starlette application, in French and English.

A request is stored durably in the registry before its receipt is shown. Nothing the person
types reaches a log line: the portal logs tracking numbers and outcomes only, and forms are
posted, so no identifier appears in a URL or an access log. Behind one staff sign-in: the DPO's
pages (``dpo``, under ``/dpo``) and the data referents' package reviews (``package_pages``,
under ``/staff``), each checking its own role.

In front of every route: the trusted proxies' forwarded address and scheme (only from the
proxies configured; by default none, so the socket peer is the client the limits count), one
middleware for the security headers, and the allowed host names. The demo secrets are refused
unless the portal is told it serves a demo.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from hdh_assets.gdpr.rights import InvalidRequest, RequestType, Status, validate_submission
from portal.dpo import DpoPages
from portal.dpo_auth import PORTAL_URL_ENV, DpoAuth, auth_from_env
from portal.fields import screen
from portal.i18n import LANGUAGES, TEXT, field_message, pick_language
from portal.package_pages import PackagePages
from portal.security import (
    CSRF_FIELD,
    CsrfTokens,
    FormRefused,
    RateLimiter,
    SecurityHeadersMiddleware,
    client_address,
    read_form_body,
)
from resources.home import HdhHome
from resources.pseudonymisation import PseudonymisationKeyResource, load_demo_key
from resources.rights_registry import RIGHTS_KEY_ENV, RightsRegistry

log = logging.getLogger("hdh.portal")
TEMPLATES = Path(__file__).parent / "templates"
MAX_BODY_BYTES = 16 * 1024
FORM_FIELDS = (
    "type",
    "family_name",
    "given_names",
    "birth_date",
    "nir",
    "email",
    "project",
    "free_text",
)
PORTAL_SECRET_ENV = "HDH_PORTAL_SECRET"
TRUSTED_PROXIES_ENV = "HDH_PORTAL_TRUSTED_PROXIES"
ALLOWED_HOSTS_ENV = "HDH_PORTAL_ALLOWED_HOSTS"
HTTPS_ENV = "HDH_PORTAL_HTTPS"
DEMO_ENV = "HDH_PORTAL_DEMO"
PSEUDONYM_KEY_ENV = "HDH_PSEUDONYM_KEY"
# Local use and the test client; a deployment adds its names (HDH_PORTAL_ALLOWED_HOSTS, and the
# host of HDH_PORTAL_URL).
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]", "testserver")
_TRUE = ("1", "true", "yes", "on")


class DemoSecretsRefused(RuntimeError):
    """The portal would run on the generated demo secrets without being told it is a demo."""


@dataclass
class PortalSettings:
    submissions_per_minute: int = 10
    status_checks_per_minute: int = 30
    operator_logins_per_minute: int = 10
    operator_session_hours: int = 8  # the DPO's sessions, provider or break-glass
    sign_ins_per_minute: int = 30
    max_body_bytes: int = MAX_BODY_BYTES
    max_form_fields: int = 50
    # Per account name, whatever the address: this many failed break-glass sign-ins are free,
    # then the account waits, doubling from the base up to the maximum.
    failed_sign_ins_before_backoff: int = 5
    sign_in_backoff_seconds: int = 60
    sign_in_backoff_max_seconds: int = 900
    # Addresses or networks of the reverse proxies whose X-Forwarded-For and X-Forwarded-Proto
    # are believed; none by default: the socket peer is the client.
    trusted_proxies: tuple[str, ...] = ()
    # Host names served besides DEFAULT_HOSTS; anything else gets a 400.
    allowed_hosts: tuple[str, ...] = ()
    # Served over https whatever the scheme says (a proxy that sends no X-Forwarded-Proto).
    https: bool = False


def _words(text: str | None) -> tuple[str, ...]:
    return tuple(w for w in (text or "").replace(",", " ").split() if w)


def settings_from_env(environ: Mapping[str, str] | None = None) -> PortalSettings:
    """The deployment's proxy settings: trusted proxies, allowed host names (the host of
    ``HDH_PORTAL_URL`` included), and https (forced by ``HDH_PORTAL_HTTPS`` or an https
    ``HDH_PORTAL_URL``)."""
    env = os.environ if environ is None else environ
    url = urlsplit(env.get(PORTAL_URL_ENV, "").strip())
    hosts = _words(env.get(ALLOWED_HOSTS_ENV)) + ((url.hostname,) if url.hostname else ())
    return PortalSettings(
        trusted_proxies=_words(env.get(TRUSTED_PROXIES_ENV)),
        allowed_hosts=hosts,
        https=env.get(HTTPS_ENV, "").strip().lower() in _TRUE or url.scheme == "https",
    )


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))


def create_app(
    registry: RightsRegistry,
    pseudonym_of: Callable[[str], str],
    secret: bytes,
    settings: PortalSettings | None = None,
    auth: DpoAuth | None = None,
    packages_home: HdhHome | None = None,
) -> Starlette:
    """The portal; ``auth`` says how staff sign in (default: no way in, the pages stay shut);
    ``packages_home`` holds the package manager the referents review (None: not set up)."""
    settings = settings or PortalSettings()
    templates = _environment()
    csrf = CsrfTokens(secret, https=settings.https)
    submissions = RateLimiter(settings.submissions_per_minute)
    status_checks = RateLimiter(settings.status_checks_per_minute)

    def page(request: Request, name: str, lang: str, status_code: int = 200, **values) -> Response:
        """A public page; its forms carry the token of the browser's CSRF session."""
        binding, new = csrf.browser_session(request)
        html = templates.get_template(name).render(
            t=TEXT[lang],
            lang=lang,
            other="en" if lang == "fr" else "fr",
            types=[k.value for k in RequestType],
            csrf_field=CSRF_FIELD,
            csrf=csrf.for_browser(binding),
            **values,
        )
        response = HTMLResponse(html, status_code=status_code)
        if new:
            csrf.set_cookie(response, request, binding)
        return response

    def language(request: Request) -> str | None:
        lang = request.path_params.get("lang")
        return lang if lang in LANGUAGES else None

    async def read_form(
        request: Request, allowed: tuple[str, ...] = (*FORM_FIELDS, "id", "token")
    ) -> dict[str, str]:
        """The posted fields; raises :class:`FormRefused` (400 or 413) for a body not read."""
        return await read_form_body(
            request, allowed, settings.max_body_bytes, settings.max_form_fields
        )

    async def home(request: Request) -> Response:
        return RedirectResponse(
            f"/{pick_language(request.headers.get('accept-language'))}/request", 303
        )

    async def form(request: Request) -> Response:
        lang = language(request)
        if lang is None:
            return Response("not found", 404)
        return page(request, "form.html", lang, values={}, errors={})

    async def guarded_post(request: Request, limiter: RateLimiter, expired_page):
        """What every form post goes through: language, rate limit, size limit, CSRF. Returns
        (lang, fields, None), or (lang, None, the response to send instead)."""
        lang = language(request)
        if lang is None:
            return None, None, Response("not found", 404)
        wait = limiter.wait(client_address(request))
        if wait:
            log.warning("portal: rate limit reached")
            refused = page(request, "message.html", lang, 429, message=TEXT[lang]["too_many"])
            refused.headers["Retry-After"] = str(wait)
            return lang, None, refused
        try:
            fields = await read_form(request)
        except FormRefused as refused:
            log.info("portal: a body refused (%s)", refused.reason)
            text = TEXT[lang]["too_large" if refused.status_code == 413 else "bad_form"]
            return (
                lang,
                None,
                page(request, "message.html", lang, refused.status_code, message=text),
            )
        if not csrf.valid_request(request, fields.get(CSRF_FIELD)):
            return lang, None, expired_page(request, lang, fields)
        return lang, fields, None

    async def submit(request: Request) -> Response:
        lang, fields, refused = await guarded_post(
            request,
            submissions,
            lambda request, lang, fields: page(
                request,
                "form.html",
                lang,
                403,
                values=_refill(fields),
                errors={},
                notice=TEXT[lang]["expired"],
            ),
        )
        if refused is not None:
            return refused
        fields, screened = screen({k: v for k, v in fields.items() if k in FORM_FIELDS})
        try:
            kind, identity = validate_submission(
                fields.get("type", ""),
                fields.get("family_name", ""),
                fields.get("given_names", ""),
                fields.get("birth_date", ""),
                fields.get("nir", ""),
                fields.get("email", ""),
                fields.get("free_text", ""),
            )
            problems = screened
        except InvalidRequest as error:
            problems = {**error.errors, **screened}
        if problems:
            errors = {f: field_message(m, lang) for f, m in problems.items()}
            log.info("portal: submission refused (fields: %s)", ", ".join(sorted(errors)))
            return page(
                request,
                "form.html",
                lang,
                422,
                values=_refill(fields),
                errors=errors,
                notice=TEXT[lang]["fix"],
            )
        project = (fields.get("project") or "").strip()[:100] or None
        request_id, token = registry.submit(
            kind, identity, pseudonym_of(identity.nir), fields.get("free_text", ""), project
        )
        log.info("portal: request %s received (%s)", request_id, kind.value)
        return page(request, "receipt.html", lang, 201, request_id=request_id, token=token)

    async def status_form(request: Request) -> Response:
        lang = language(request)
        if lang is None:
            return Response("not found", 404)
        return page(request, "status.html", lang, request_view=None, unknown=False)

    async def status(request: Request) -> Response:
        lang, fields, refused = await guarded_post(
            request,
            status_checks,
            lambda request, lang, fields: page(
                request,
                "status.html",
                lang,
                403,
                request_view=None,
                unknown=False,
                notice=TEXT[lang]["expired"],
            ),
        )
        if refused is not None:
            return refused
        found = registry.status_for(
            fields.get("id", "").strip().upper()[:24], fields.get("token", "").strip()[:64]
        )
        if found is None:
            return page(request, "status.html", lang, 404, request_view=None, unknown=True)
        report = found.report or {}
        view = {
            "id": found.id,
            "type": TEXT[lang][found.type.value],
            "status": found.status.value,
            "status_text": TEXT[lang][f"{found.status.value}_state"],
            "received_at": f"{found.received_at:%Y-%m-%d}",
            "deadline": f"{found.deadline:%Y-%m-%d}",
            "extended": found.extension_reason,
            "rejection_reason": found.rejection_reason,
            "completed": found.status is Status.COMPLETED,
            "assets": len(report.get("assets", [])),
        }
        return page(request, "status.html", lang, request_view=view, unknown=False)

    dpo = DpoPages(registry, templates, csrf, read_form, settings, auth)
    packages = PackagePages(dpo, packages_home)
    return Starlette(
        routes=[
            *dpo.routes(),
            *packages.routes(),
            Route("/", home),
            Route("/{lang}/request", form, methods=["GET"]),
            Route("/{lang}/request", submit, methods=["POST"]),
            Route("/{lang}/status", status_form, methods=["GET"]),
            Route("/{lang}/status", status, methods=["POST"]),
        ],
        middleware=middleware(settings),
        exception_handlers={FormRefused: _form_refused},
    )


def middleware(settings: PortalSettings) -> list[Middleware]:
    """Outermost first: the trusted proxies' client and scheme (so that the headers, cookies
    and limits see them), the security headers (on everything below, errors included), then
    the allowed host names."""
    return [
        Middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies)),
        Middleware(SecurityHeadersMiddleware, https=settings.https),
        Middleware(
            TrustedHostMiddleware,
            allowed_hosts=[*DEFAULT_HOSTS, *settings.allowed_hosts],
            www_redirect=False,
        ),
    ]


async def _form_refused(request: Request, refused: Exception) -> Response:
    """A body the staff pages do not read: its status, no traceback."""
    assert isinstance(refused, FormRefused)
    log.info("portal: a body refused (%s)", refused.reason)
    return PlainTextResponse(f"This request was refused: {refused.reason}.", refused.status_code)


def _refill(fields: dict[str, str]) -> dict[str, str]:
    """Values shown again after an error; the number is not echoed back into the page."""
    return {k: v for k, v in fields.items() if k in FORM_FIELDS and k != "nir"}


def demo_secrets() -> list[str]:
    """The secrets left unset, for which ``app_from_env`` would use the generated demo ones."""
    unset = [name for name in (PORTAL_SECRET_ENV, RIGHTS_KEY_ENV) if not os.environ.get(name)]
    if PseudonymisationKeyResource().uses_demo_key:
        unset.append(PSEUDONYM_KEY_ENV)
    return unset


def app_from_env(home: HdhHome | None = None, demo: bool | None = None) -> Starlette:
    """The portal of a deployment. Without its secrets it would run on demo ones, which
    protect nothing: refused unless ``demo`` (or ``HDH_PORTAL_DEMO=1``) says it is a demo."""
    demo = os.environ.get(DEMO_ENV, "").strip().lower() in _TRUE if demo is None else demo
    unset = demo_secrets()
    if unset and not demo:
        raise DemoSecretsRefused(
            f"{', '.join(unset)} not set: the portal would run on demo secrets. Set them, or "
            f"say this is a demo ({DEMO_ENV}=1, hdh portal --demo)."
        )
    if unset:
        log.warning("portal: DEMO secrets in use (%s unset); never for real data", ", ".join(unset))
    home = home or HdhHome.from_env()
    home.ensure()
    secret = os.environ.get(PORTAL_SECRET_ENV)
    pseudonymiser = PseudonymisationKeyResource().pseudonymiser()
    return create_app(
        RightsRegistry.from_env(home),
        pseudonymiser.subject_pseudonym,
        secret.encode() if secret else load_demo_key(home, "portal-demo.key"),
        settings_from_env(),
        auth=auth_from_env(home.secrets),
        packages_home=home,
    )
