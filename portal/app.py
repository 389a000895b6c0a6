"""The rights portal: a server-rendered Starlette application, in French and English.

A request is stored durably in the registry before its receipt is shown. Nothing the person
types reaches a log line: the portal logs tracking numbers and outcomes only, and forms are
posted, so no identifier appears in a URL or an access log. Behind one staff sign-in: the DPO's
pages (``dpo``, under ``/dpo``) and the data referents' package reviews (``package_pages``,
under ``/staff``), each checking its own role.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from hdh_assets.gdpr.rights import InvalidRequest, RequestType, Status, validate_submission
from portal.dpo import DpoPages
from portal.dpo_auth import DpoAuth, auth_from_env
from portal.i18n import LANGUAGES, TEXT, field_message, pick_language
from portal.package_pages import PackagePages
from portal.security import CSRF_COOKIE, CSRF_FIELD, SECURITY_HEADERS, CsrfTokens, RateLimiter
from resources.home import HdhHome
from resources.pseudonymisation import PseudonymisationKeyResource, load_demo_key
from resources.rights_registry import RightsRegistry

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


@dataclass
class PortalSettings:
    submissions_per_minute: int = 10
    status_checks_per_minute: int = 30
    operator_logins_per_minute: int = 10
    operator_session_hours: int = 8  # the DPO's sessions, provider or break-glass
    sign_ins_per_minute: int = 30
    max_body_bytes: int = MAX_BODY_BYTES


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
    csrf = CsrfTokens(secret)
    submissions = RateLimiter(settings.submissions_per_minute)
    status_checks = RateLimiter(settings.status_checks_per_minute)

    def page(name: str, lang: str, status_code: int = 200, **values) -> Response:
        token = csrf.issue()
        html = templates.get_template(name).render(
            t=TEXT[lang],
            lang=lang,
            other="en" if lang == "fr" else "fr",
            types=[k.value for k in RequestType],
            csrf_field=CSRF_FIELD,
            csrf=token,
            **values,
        )
        response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
        response.set_cookie(
            CSRF_COOKIE, token, httponly=True, samesite="strict", max_age=csrf.max_age
        )
        return response

    def language(request: Request) -> str | None:
        lang = request.path_params.get("lang")
        return lang if lang in LANGUAGES else None

    async def read_form(
        request: Request, allowed: tuple[str, ...] = (*FORM_FIELDS, "id", "token")
    ) -> dict[str, str] | None:
        """The posted fields, or None when the body is too large or not a form."""
        declared = request.headers.get("content-length")
        if declared and (not declared.isdigit() or int(declared) > settings.max_body_bytes):
            return None
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                return None
        from urllib.parse import parse_qs

        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return {}
        parsed = parse_qs(text, keep_blank_values=True, max_num_fields=50)
        return {k: v[0] for k, v in parsed.items() if k in (*allowed, CSRF_FIELD)}

    async def home(request: Request) -> Response:
        return RedirectResponse(
            f"/{pick_language(request.headers.get('accept-language'))}/request", 303
        )

    async def form(request: Request) -> Response:
        lang = language(request)
        if lang is None:
            return Response("not found", 404)
        return page("form.html", lang, values={}, errors={})

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    async def guarded_post(request: Request, limiter: RateLimiter, expired_page):
        """What every form post goes through: language, rate limit, size limit, CSRF. Returns
        (lang, fields, None), or (lang, None, the response to send instead)."""
        lang = language(request)
        if lang is None:
            return None, None, Response("not found", 404)
        if not limiter.allow(client_of(request)):
            log.warning("portal: rate limit reached")
            return lang, None, page("message.html", lang, 429, message=TEXT[lang]["too_many"])
        fields = await read_form(request)
        if fields is None:
            return lang, None, page("message.html", lang, 413, message=TEXT[lang]["too_large"])
        if not csrf.valid(request.cookies.get(CSRF_COOKIE), fields.get(CSRF_FIELD)):
            return lang, None, expired_page(lang, fields)
        return lang, fields, None

    async def submit(request: Request) -> Response:
        lang, fields, refused = await guarded_post(
            request,
            submissions,
            lambda lang, fields: page(
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
        except InvalidRequest as error:
            errors = {f: field_message(m, lang) for f, m in error.errors.items()}
            log.info("portal: submission refused (fields: %s)", ", ".join(sorted(errors)))
            return page(
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
        return page("receipt.html", lang, 201, request_id=request_id, token=token)

    async def status_form(request: Request) -> Response:
        lang = language(request)
        if lang is None:
            return Response("not found", 404)
        return page("status.html", lang, request_view=None, unknown=False)

    async def status(request: Request) -> Response:
        lang, fields, refused = await guarded_post(
            request,
            status_checks,
            lambda lang, fields: page(
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
            return page("status.html", lang, 404, request_view=None, unknown=True)
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
        return page("status.html", lang, request_view=view, unknown=False)

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
        ]
    )


def _refill(fields: dict[str, str]) -> dict[str, str]:
    """Values shown again after an error; the number is not echoed back into the page."""
    return {k: v for k, v in fields.items() if k in FORM_FIELDS and k != "nir"}


def app_from_env(home: HdhHome | None = None) -> Starlette:
    home = home or HdhHome.from_env()
    home.ensure()
    secret = os.environ.get(PORTAL_SECRET_ENV)
    pseudonymiser = PseudonymisationKeyResource().pseudonymiser()
    return create_app(
        RightsRegistry.from_env(home),
        pseudonymiser.subject_pseudonym,
        secret.encode() if secret else load_demo_key(home, "portal-demo.key"),
        auth=auth_from_env(home.secrets),
        packages_home=home,
    )
