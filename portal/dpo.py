"""The DPO's pages: local operator accounts, the request list, one request, its decisions.

An operator signs in with a local account (``hdh rights operator add``); the session is a signed,
dated cookie scoped to ``/dpo``. Every decision posts a form with a CSRF token and lands in the
registry's audit log as ``dpo:<operator>``. The identity the person gave is decrypted only on an
explicit request, and that read is audited too. Nothing identifying reaches a log line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from hdh_assets.gdpr.rights import TransitionRefused
from portal.security import CSRF_COOKIE, CSRF_FIELD, SECURITY_HEADERS, CsrfTokens, RateLimiter
from resources.rights_registry import RightsRegistry, UnknownRequest

log = logging.getLogger("hdh.portal.dpo")
SESSION_COOKIE = "hdh_dpo"
DPO_FIELDS = ("username", "password", "reason")
ACTIONS = ("verify", "reject", "extend", "retry", "identity")


class OperatorSessions:
    """``operator:expiry:signature``, signed with the portal's secret (a separate domain from
    the CSRF tokens, so one can never stand for the other) and with the account's stamp (a
    digest of its password hash): a new password or a removed account ends every session."""

    def __init__(self, secret: bytes, hours: int, stamp_of: Callable[[str], str | None]):
        self._secret, self.max_age, self._stamp_of = secret, hours * 3600, stamp_of

    def _sign(self, operator: str, expiry: int, stamp: str) -> str:
        message = f"dpo-session|{operator}|{expiry}|{stamp}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def issue(self, operator: str, now: float | None = None) -> str:
        expiry = int((now or time.time()) + self.max_age)
        stamp = self._stamp_of(operator) or ""
        return f"{operator}:{expiry}:{self._sign(operator, expiry, stamp)}"

    def operator(self, cookie: str | None, now: float | None = None) -> str | None:
        try:
            operator, expiry, signature = (cookie or "").split(":")
            valid_until = int(expiry)
        except ValueError:
            return None
        if (now or time.time()) >= valid_until:
            return None
        stamp = self._stamp_of(operator)
        if stamp is None:  # the account is gone
            return None
        if not hmac.compare_digest(signature, self._sign(operator, valid_until, stamp)):
            return None
        return operator


class DpoPages:
    def __init__(
        self,
        registry: RightsRegistry,
        templates: Environment,
        csrf: CsrfTokens,
        read_form: Callable[[Request, tuple[str, ...]], Awaitable[dict[str, str] | None]],
        secret: bytes,
        settings,
    ):
        self.registry, self.templates, self.csrf = registry, templates, csrf
        self.read_form = read_form
        self.sessions = OperatorSessions(
            secret, settings.operator_session_hours, registry.operator_stamp
        )
        self.logins = RateLimiter(settings.operator_logins_per_minute)

    def routes(self) -> list[Route]:
        return [
            Route("/dpo", self.requests_page, methods=["GET"]),
            Route("/dpo/login", self.login_page, methods=["GET"]),
            Route("/dpo/login", self.login, methods=["POST"]),
            Route("/dpo/logout", self.logout, methods=["POST"]),
            Route("/dpo/requests/{request_id}", self.request_page, methods=["GET"]),
            Route("/dpo/requests/{request_id}/{action}", self.decide, methods=["POST"]),
        ]

    # -- rendering -----------------------------------------------------------------------
    def page(self, name: str, status_code: int = 200, **values) -> Response:
        token = self.csrf.issue()
        html = self.templates.get_template(name).render(csrf_field=CSRF_FIELD, csrf=token, **values)
        response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
        response.set_cookie(
            CSRF_COOKIE, token, httponly=True, samesite="strict", max_age=self.csrf.max_age
        )
        return response

    def signed_in(self, request: Request) -> str | None:
        return self.sessions.operator(request.cookies.get(SESSION_COOKIE))

    async def posted(self, request: Request) -> dict[str, str] | None:
        """The form's fields when its CSRF token holds, else None."""
        fields = await self.read_form(request, DPO_FIELDS)
        if fields is None or not self.csrf.valid(
            request.cookies.get(CSRF_COOKIE), fields.get(CSRF_FIELD)
        ):
            return None
        return fields

    # -- signing in and out --------------------------------------------------------------
    async def login_page(self, request: Request) -> Response:
        return self.page("dpo_login.html")

    async def login(self, request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        if not self.logins.allow(client):
            log.warning("dpo: sign-in rate limit reached")
            return self.page("dpo_login.html", 429, error="Too many attempts; wait a minute.")
        fields = await self.posted(request)
        if fields is None:
            return self.page("dpo_login.html", 403, error="The form expired; sign in again.")
        username = fields.get("username", "").strip().lower()
        if not self.registry.check_operator(username, fields.get("password", "")):
            log.info("dpo: sign-in refused")
            return self.page("dpo_login.html", 401, error="Unknown operator or wrong password.")
        log.info("dpo: operator signed in")
        response = RedirectResponse("/dpo", 303, headers=SECURITY_HEADERS)
        response.set_cookie(
            SESSION_COOKIE,
            self.sessions.issue(username),
            httponly=True,
            samesite="strict",
            path="/dpo",
            max_age=self.sessions.max_age,
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/dpo/login", 303, headers=SECURITY_HEADERS)
        response.delete_cookie(SESSION_COOKIE, path="/dpo")
        return response

    # -- the requests --------------------------------------------------------------------
    async def requests_page(self, request: Request) -> Response:
        operator = self.signed_in(request)
        if operator is None:
            return RedirectResponse("/dpo/login", 303)
        now = dt.datetime.now(dt.UTC)
        rows = [
            {**r.to_json(), "urgency": r.urgency(now) or ""}
            for r in sorted(self.registry.list(), key=lambda r: r.deadline)
        ]
        return self.page("dpo_requests.html", operator=operator, rows=rows)

    async def request_page(self, request: Request, **shown) -> Response:
        operator = self.signed_in(request)
        if operator is None:
            return RedirectResponse("/dpo/login", 303)
        request_id = request.path_params["request_id"]
        try:
            found = self.registry.get(request_id)
        except UnknownRequest:
            return self.page("dpo_message.html", 404, operator=operator, message="No such request.")
        return self.page(
            "dpo_request.html",
            shown.pop("status_code", 200),
            operator=operator,
            request_view=found.to_json(),
            audit=self.registry.audit(request_id),
            **shown,
        )

    async def decide(self, request: Request) -> Response:
        operator = self.signed_in(request)
        if operator is None:
            return RedirectResponse("/dpo/login", 303)
        action, request_id = request.path_params["action"], request.path_params["request_id"]
        if action not in ACTIONS:
            return Response("not found", 404)
        fields = await self.posted(request)
        if fields is None:
            return await self.request_page(
                request, status_code=403, error="The form expired; try again."
            )
        actor = f"dpo:{operator}"
        reason = fields.get("reason", "").strip()[:500]
        try:
            if action == "identity":
                identity = self.registry.identity(request_id, actor)
                return await self.request_page(request, identity=identity)
            if action == "verify":
                self.registry.verify(request_id, actor)
            elif action == "retry":
                self.registry.retry(request_id, actor)
            elif action == "reject":
                self.registry.reject(request_id, reason, actor)
            else:
                self.registry.extend(request_id, reason, actor)
        except UnknownRequest:
            return self.page("dpo_message.html", 404, operator=operator, message="No such request.")
        except (TransitionRefused, ValueError) as refused:
            return await self.request_page(request, status_code=409, error=str(refused))
        log.info("dpo: %s on %s by an operator", action, request_id)
        return RedirectResponse(f"/dpo/requests/{request_id}", 303, headers=SECURITY_HEADERS)
