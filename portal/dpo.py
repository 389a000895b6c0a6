"""The DPO's pages: sign-in through the OpenID Connect provider, the request list, one request,
its decisions.

Sign-in is the authorization code flow with PKCE, state and nonce (kept server-side, bound to
the browser by a random cookie, used once); the ID token is verified against the provider's keys
and only staff get in: members of the DPO group, and data referents, whose package reviews
(``package_pages``) share this sign-in. The session keeps the roles, and every page checks its
own: these pages need the DPO role. The session is server-side (``dpo_sessions``), so
signing out here, or at the provider through a back-channel logout, ends it at once. Local
operator accounts remain only as a break-glass option for the DPO's pages, off unless
configured, each sign-in audited. Every decision posts a form with a CSRF token and lands in
the registry's audit log as ``dpo:<username>``; its CSRF token is bound to the session (one
per session, so every tab holds a valid one). The identity the person gave, and the free text
they wrote, are decrypted only on an explicit request, and each read is audited too. Failed
break-glass sign-ins make the account wait, longer after each failure. Over https every cookie
is Secure and prefixed (``__Host-`` / ``__Secure-``). Nothing identifying reaches a log line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable, Iterable

import sqlalchemy as sa
from jinja2 import Environment
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from auth.oidc import (
    KeySet,
    OidcError,
    Pkce,
    ProviderMetadata,
    TokenRequestError,
    TokenVerificationError,
    authorization_url,
    discover,
    end_session_url,
    exchange_code,
    new_nonce,
    new_state,
    verify_id_token,
    verify_logout_token,
)
from auth.roles import DATA_REFERENT, DPO, GroupsClaimError, access_for
from auth.settings import OidcSettings
from hdh_assets.gdpr.rights import TransitionRefused
from portal.dpo_auth import APP, CALLBACK_PATH, PACKAGES_PATH, SIGNED_OUT_PATH, DpoAuth
from portal.dpo_sessions import (
    BREAK_GLASS,
    OIDC,
    PENDING_SECONDS,
    DpoSession,
    PendingSignIn,
    SessionStore,
    same_state,
)
from portal.security import (
    CSRF_FIELD,
    CsrfTokens,
    FormRefused,
    RateLimiter,
    client_address,
    cookie_name,
    has_control_characters,
    is_https,
)
from resources.rights_registry import RightsRegistry, UnknownRequest, audit_table

log = logging.getLogger("hdh.portal.dpo")
SESSION_COOKIE = "hdh_dpo"  # Path=/dpo: the DPO's pages, signing in and out
STAFF_SESSION_COOKIE = "hdh_staff"  # Path=/staff: the same session, for the referents' pages
PENDING_COOKIE = "hdh_dpo_sign_in"
DPO_FIELDS = ("username", "password", "reason")
ACTIONS = ("verify", "reject", "extend", "retry", "identity", "free_text")
BREAK_GLASS_ACTOR = "dpo:break-glass"
LOGIN_PATH = "/dpo/login"
STAFF_ROLES = frozenset({DPO, DATA_REFERENT})
# One session, one cookie per staff area, each scoped to its area's path: the DPO's cookie
# stays exactly as it was (never sent to the public pages nor to /staff), and every page checks
# the session's roles, whatever cookie brought it.
SESSION_COOKIES = {SESSION_COOKIE: "/dpo", STAFF_SESSION_COOKIE: "/staff"}
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")
_ROLE_NAMES = {DPO: "DPO", DATA_REFERENT: "data referent"}
_ROLE_PAGES = {
    DPO: "these pages are for the data protection officer only",
    DATA_REFERENT: "the package reviews are for data referents only",
}


def home_of(roles: Iterable[str]) -> str:
    """Where a person lands after sign-in: the DPO's pages if they have the role, else theirs."""
    return "/dpo" if DPO in roles else PACKAGES_PATH


def session_token(request: Request, https: bool = False) -> str | None:
    """The session cookie of the area this request is for (the paths do not overlap)."""
    return request.cookies.get(cookie_name(SESSION_COOKIE, https, "/dpo")) or request.cookies.get(
        cookie_name(STAFF_SESSION_COOKIE, https, "/staff")
    )


def account_audit(registry: RightsRegistry) -> list[dict]:
    """The audit entries tied to no request: break-glass sign-ins, accepted and refused."""
    query = sa.select(audit_table).where(audit_table.c.request_id.is_(None))
    with registry.engine.connect() as db:
        return [
            {
                "at": r.at.replace(tzinfo=dt.UTC).isoformat(timespec="seconds"),
                "actor": r.actor,
                "action": r.action,
                "detail": r.detail,
            }
            for r in db.execute(query.order_by(audit_table.c.id))
        ]


class DpoPages:
    def __init__(
        self,
        registry: RightsRegistry,
        templates: Environment,
        csrf: CsrfTokens,
        read_form: Callable[[Request, tuple[str, ...]], Awaitable[dict[str, str] | None]],
        settings,
        auth: DpoAuth | None = None,
    ):
        self.registry, self.templates, self.csrf = registry, templates, csrf
        self.read_form = read_form
        self.auth = auth or DpoAuth()
        self.sessions = SessionStore(registry.engine, settings.operator_session_hours)
        self.logins = RateLimiter(settings.operator_logins_per_minute)
        self.sign_ins = RateLimiter(settings.sign_ins_per_minute)
        self.backoff = {
            "free": settings.failed_sign_ins_before_backoff,
            "base_seconds": settings.sign_in_backoff_seconds,
            "max_seconds": settings.sign_in_backoff_max_seconds,
        }
        self._keys: dict[str, KeySet] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/dpo", self.requests_page, methods=["GET"]),
            Route("/dpo/login", self.login_page, methods=["GET"]),
            Route("/dpo/login", self.break_glass_login, methods=["POST"]),
            Route("/dpo/auth/start", self.start_sign_in, methods=["GET"]),
            Route(CALLBACK_PATH, self.callback, methods=["GET"]),
            Route("/dpo/logout", self.logout, methods=["POST"]),
            Route(SIGNED_OUT_PATH, self.signed_out, methods=["GET"]),
            Route("/dpo/backchannel-logout", self.backchannel_logout, methods=["POST"]),
            Route("/dpo/requests/{request_id}", self.request_page, methods=["GET"]),
            Route("/dpo/requests/{request_id}/{action}", self.decide, methods=["POST"]),
        ]

    # -- rendering -----------------------------------------------------------------------
    def page(
        self,
        name: str,
        status_code: int = 200,
        session: DpoSession | None = None,
        request: Request | None = None,
        **values,
    ) -> Response:
        """A staff page. Its forms carry the session's CSRF token; without a session (the
        sign-in form) the browser's, when ``request`` is given; else none."""
        binding, new_cookie = self.csrf.browser_session(request) if request else ("", False)
        if session is not None:
            token = self.csrf.for_session(session.key)
        else:
            token = self.csrf.for_browser(binding) if binding else ""
        html = self.templates.get_template(name).render(
            csrf_field=CSRF_FIELD,
            csrf=token,
            operator=session.username if session else None,
            operator_name=session.name if session else None,
            roles=sorted(session.roles) if session else [],
            break_glass_session=bool(session and session.method == BREAK_GLASS),
            **values,
        )
        response = HTMLResponse(html, status_code=status_code)
        if session is None and new_cookie:
            self.csrf.set_cookie(response, request, binding)
        return response

    def message(
        self, status_code: int, message: str, session: DpoSession | None = None, **values
    ) -> Response:
        return self.page("dpo_message.html", status_code, session, message=message, **values)

    def not_configured(self) -> Response:
        return self.message(
            503,
            "Sign-in is not configured: these pages stay closed until an identity provider is "
            "set up for the portal.",
            title="Sign-in is not configured",
        )

    def base_url(self, request: Request) -> str:
        """The portal's address: configured, else the one this request reached."""
        return self.auth.base_url or str(request.base_url).rstrip("/")

    def https(self, request: Request) -> bool:
        """Served over https: the setting, the scheme after the trusted proxies, or the
        configured address says so."""
        configured = (self.auth.base_url or "").startswith("https://")
        return configured or is_https(request, self.csrf.https)

    def cookie(self, request: Request, name: str, path: str) -> str:
        """A cookie's name as this request carries it (prefixed over https)."""
        return cookie_name(name, self.https(request), path)

    def _cookie(
        self, response: Response, request: Request, name: str, value: str, path: str, **kw
    ) -> None:
        response.set_cookie(
            self.cookie(request, name, path),
            value,
            path=path,
            httponly=True,
            samesite="lax",
            secure=self.https(request),
            **kw,
        )

    def _drop_session_cookie(self, response: Response, request: Request, name: str) -> None:
        path = SESSION_COOKIES[name]
        self._cookie(response, request, name, "", path=path, max_age=0, expires=0)

    def signed_in(self, request: Request) -> DpoSession | None:
        """The live session of this browser, any staff role; pages check theirs (``require``)."""
        session = self.sessions.get(session_token(request, self.https(request)))
        if session is None:
            return None
        if session.method == OIDC:  # only while a provider is configured
            return session if self.auth.provider() is not None else None
        # Break-glass: only while it is enabled, and a new password or a removed account ends it.
        if not self.auth.break_glass:
            return None
        if session.stamp is None or session.stamp != self.registry.operator_stamp(session.username):
            return None
        return dataclasses.replace(session, roles=frozenset({DPO}))  # never more than the DPO's

    def require(self, request: Request, role: str) -> DpoSession | Response:
        """The session when it holds ``role``; else what to answer instead: the sign-in page,
        or a 403 naming the role that is missing."""
        session = self.signed_in(request)
        if session is None:
            return RedirectResponse(LOGIN_PATH, 303)
        if not session.has_role(role):
            log.info("staff: a page refused for want of the %s role", role)
            return self.role_needed(role, session)
        return session

    def role_needed(self, role: str, session: DpoSession) -> Response:
        settings = self.auth.provider()
        groups = (
            {DPO: settings.dpo_group, DATA_REFERENT: settings.referent_group} if settings else {}
        )
        name = _ROLE_NAMES[role]
        return self.message(
            403,
            f"Your account does not have the {name} role (group “{groups.get(role, role)}” at "
            f"the identity provider): {_ROLE_PAGES[role]}.",
            session,
            title=f"{name[0].upper()}{name[1:]} role needed",
            missing_role=role,
            home=home_of(session.roles),
        )

    async def posted(
        self,
        request: Request,
        session: DpoSession | None = None,
        allowed: tuple[str, ...] = DPO_FIELDS,
    ) -> dict[str, str] | None:
        """The form's fields when its CSRF token holds (the session's, or without one the
        browser's), else None. A body not read raises ``FormRefused`` (400 or 413)."""
        fields = await self.read_form(request, allowed)
        token = fields.get(CSRF_FIELD)
        if session is not None:
            return fields if self.csrf.valid_for_session(session.key, token) else None
        return fields if self.csrf.valid_request(request, token) else None

    def _start_session(
        self, request: Request, token: str, roles: frozenset[str], method: str = OIDC
    ) -> Response:
        """Set the session's cookies: the DPO's area always (signing out is there), the staff
        area for a provider sign-in, so that someone without the referent role gets a clear
        403 there; break-glass sessions never reach it."""
        self.sessions.end(session_token(request, self.https(request)))  # never two for a browser
        response = RedirectResponse(home_of(roles), 303)
        age = self.sessions.max_age
        self._cookie(response, request, SESSION_COOKIE, token, path="/dpo", max_age=age)
        if method == OIDC:
            self._cookie(response, request, STAFF_SESSION_COOKIE, token, path="/staff", max_age=age)
        else:
            self._drop_session_cookie(response, request, STAFF_SESSION_COOKIE)
        return response

    # -- the provider --------------------------------------------------------------------
    async def _metadata(self, settings: OidcSettings) -> ProviderMetadata:
        return await run_in_threadpool(discover, settings.issuer)

    def _key_set(self, metadata: ProviderMetadata) -> KeySet:
        keys = self._keys.get(metadata.jwks_uri)
        if keys is None:
            keys = self._keys[metadata.jwks_uri] = KeySet(metadata.jwks_uri)
        return keys

    def _unreachable(self) -> Response:
        log.warning("dpo: the identity provider cannot be reached")
        return self.message(503, "The identity provider cannot be reached; try again shortly.")

    # -- signing in ----------------------------------------------------------------------
    async def login_page(self, request: Request) -> Response:
        session = self.signed_in(request)
        if session is not None:
            return RedirectResponse(home_of(session.roles), 303)
        provider = self.auth.provider()
        if provider is None and not self.auth.break_glass:
            return self.not_configured()
        return self.page(
            "dpo_login.html",
            request=request,
            provider=provider is not None,
            break_glass=self.auth.break_glass,
        )

    async def start_sign_in(self, request: Request) -> Response:
        settings = self.auth.provider()
        if settings is None:
            return self.not_configured()
        wait = self.sign_ins.wait(client_address(request))
        if wait:
            log.warning("dpo: sign-in rate limit reached")
            refused = self.message(429, "Too many sign-ins; wait a minute.")
            refused.headers["Retry-After"] = str(wait)
            return refused
        try:
            metadata = await self._metadata(settings)
        except OidcError:
            return self._unreachable()
        state, nonce, pkce = new_state(), new_nonce(), Pkce.create()
        binding = self.sessions.begin_sign_in(PendingSignIn(state, nonce, pkce.verifier))
        url = authorization_url(
            metadata,
            client_id=settings.client(APP).client_id,
            redirect_uri=self.base_url(request) + CALLBACK_PATH,
            state=state,
            nonce=nonce,
            code_challenge=pkce.challenge,
            scopes=settings.scopes,
        )
        response = RedirectResponse(url, 303)
        self._cookie(
            response, request, PENDING_COOKIE, binding, path="/dpo/auth", max_age=PENDING_SECONDS
        )
        return response

    async def callback(self, request: Request) -> Response:
        settings = self.auth.provider()
        if settings is None:
            return self.not_configured()
        pending_cookie = self.cookie(request, PENDING_COOKIE, "/dpo/auth")
        pending = self.sessions.take_sign_in(request.cookies.get(pending_cookie))
        response = await self._finish_sign_in(request, settings, pending)
        response.delete_cookie(
            pending_cookie, path="/dpo/auth", secure=self.https(request), httponly=True
        )
        return response

    async def _finish_sign_in(
        self, request: Request, settings: OidcSettings, pending: PendingSignIn | None
    ) -> Response:
        params = request.query_params
        again = {"again": True}
        if pending is None:
            log.info("dpo: sign-in refused: no pending sign-in for this browser")
            return self.message(400, "This sign-in expired or was already used.", **again)
        if not same_state(pending.state, params.get("state")):
            log.warning("dpo: sign-in refused: state mismatch")
            return self.message(400, "This answer does not belong to your sign-in.", **again)
        error = params.get("error")
        if error:
            code = error if _ERROR_CODE.match(error) else "error"
            log.info("dpo: the provider did not sign in (%s)", code)
            return self.message(
                401, f"The identity provider did not sign you in ({code}).", **again
            )
        try:
            metadata = await self._metadata(settings)
        except OidcError:
            return self._unreachable()
        if params.get("iss") is not None and params.get("iss") != metadata.issuer:
            log.warning("dpo: sign-in refused: the answer names another issuer")
            return self.message(400, "This answer comes from another provider.", **again)
        client = settings.client(APP)
        try:
            tokens = await run_in_threadpool(
                lambda: exchange_code(
                    metadata,
                    client,
                    code=params.get("code", ""),
                    redirect_uri=self.base_url(request) + CALLBACK_PATH,
                    code_verifier=pending.verifier,
                )
            )
            if not tokens.id_token:
                raise TokenVerificationError("malformed", "the token endpoint sent no ID token")
            id_token = tokens.id_token
            claims = await run_in_threadpool(
                lambda: verify_id_token(
                    id_token,
                    self._key_set(metadata),
                    issuer=metadata.issuer,
                    client_id=client.client_id,
                    nonce=pending.nonce,
                    leeway=settings.clock_skew_seconds,
                )
            )
        except TokenRequestError as refused:
            log.warning("dpo: the provider refused the code (%s)", refused.error or "no code")
            return self.message(400, "The identity provider refused this sign-in.", **again)
        except TokenVerificationError as refused:
            log.warning("dpo: ID token refused (%s)", refused.check)
            return self.message(400, "The identity provider's answer failed a check.", **again)
        except OidcError:
            return self._unreachable()
        try:
            access = access_for(claims, settings)
        except GroupsClaimError:
            log.warning("dpo: sign-in refused: unusable groups claim")
            access = None
        roles = access.roles & STAFF_ROLES if access is not None else frozenset()
        if not roles:
            log.info("dpo: sign-in refused: neither in the DPO group nor a data referent")
            return self.message(
                403,
                f"Your account has neither the DPO role (group “{settings.dpo_group}”) nor the "
                f"data referent role (group “{settings.referent_group}”) at the identity "
                "provider: these pages are for the data protection officer and the data "
                "referents.",
                title="Staff role needed",
                missing_role=f"{DPO} {DATA_REFERENT}",
            )
        username = claims.get("preferred_username")
        username = username if isinstance(username, str) and username else claims["sub"]
        name = claims.get("name") if isinstance(claims.get("name"), str) else None
        sid = claims.get("sid") if isinstance(claims.get("sid"), str) else None
        token = self.sessions.create(
            method=OIDC,
            subject=claims["sub"],
            sid=sid,
            username=username,
            name=name,
            id_token=id_token,
            roles=roles,
        )
        log.info("dpo: signed in through the identity provider (%s)", ", ".join(sorted(roles)))
        return self._start_session(request, token, roles)

    async def break_glass_login(self, request: Request) -> Response:
        if not self.auth.break_glass:
            return Response("not found", 404)
        wait = self.logins.wait(client_address(request))
        if wait:
            log.warning("dpo: break-glass sign-in rate limit reached")
            return self._login_error(request, 429, "Too many attempts; wait a minute.", wait)
        fields = await self.posted(request)
        if fields is None:
            return self._login_error(request, 403, "The form expired; sign in again.")
        username = fields.get("username", "").strip().lower()[:64]
        # Per account, whatever the address: a waiting account's password is not even checked,
        # and an unknown name waits alike, so the answer tells nothing about who exists.
        wait = self.sessions.sign_in_wait(username)
        if wait:
            log.warning("dpo: break-glass sign-in refused: the account is backing off")
            return self._login_error(request, 429, "Too many failed sign-ins; wait.", wait)
        if not self.registry.check_operator(username, fields.get("password", "")):
            log.info("dpo: break-glass sign-in refused")
            self._audit_account(BREAK_GLASS_ACTOR, "break_glass_sign_in_refused")
            wait = self.sessions.sign_in_failed(username, **self.backoff)
            if wait:
                log.warning("dpo: failed break-glass sign-ins: the account waits %d s", wait)
            return self._login_error(request, 401, "Unknown operator or wrong password.")
        self.sessions.sign_in_succeeded(username)
        token = self.sessions.create(
            method=BREAK_GLASS,
            subject=username,
            username=username,
            stamp=self.registry.operator_stamp(username),
            roles=(DPO,),
        )
        self._audit_account(f"{BREAK_GLASS_ACTOR}:{username}", "break_glass_sign_in")
        log.warning("dpo: break-glass sign-in with a local operator account")
        return self._start_session(request, token, frozenset({DPO}), BREAK_GLASS)

    def _login_error(
        self, request: Request, status_code: int, error: str, retry_after: int = 0
    ) -> Response:
        provider = self.auth.provider() is not None
        response = self.page(
            "dpo_login.html",
            status_code,
            request=request,
            provider=provider,
            break_glass=True,
            error=error,
        )
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        return response

    def _audit_account(self, actor: str, action: str) -> None:
        with self.registry.engine.begin() as db:
            db.execute(
                audit_table.insert().values(
                    request_id=None,
                    at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
                    actor=actor,
                    action=action,
                    detail={"method": "local operator account"},
                )
            )

    # -- signing out ---------------------------------------------------------------------
    async def logout(self, request: Request) -> Response:
        session = self.signed_in(request)
        if session is not None and await self.posted(request, session) is None:
            return self.message(403, "The form expired; sign out again.", session)
        # The staff area's cookie holds the same session: it ends too.
        self.sessions.end(session_token(request, self.https(request)))
        target = SIGNED_OUT_PATH
        settings = self.auth.provider() if session and session.method == OIDC else None
        if settings is not None:
            try:
                metadata = await self._metadata(settings)
                target = end_session_url(
                    metadata,
                    id_token_hint=session.id_token,
                    client_id=settings.client(APP).client_id,
                    post_logout_redirect_uri=self.base_url(request) + SIGNED_OUT_PATH,
                )
            except OidcError:
                log.warning("dpo: signed out here only: no end_session endpoint reachable")
        if session is not None:
            log.info("dpo: signed out")
        if target == SIGNED_OUT_PATH:
            response = RedirectResponse(target, 303)
        else:
            # The provider is another origin: a browser refuses to follow a form's redirect
            # there (the pages' Content-Security-Policy says form-action 'self'), so this page
            # navigates on (meta refresh, with a link) instead of redirecting.
            response = self.page("dpo_signing_out.html", 200, end_session=target)
        for name in SESSION_COOKIES:
            self._drop_session_cookie(response, request, name)
        return response

    async def signed_out(self, request: Request) -> Response:
        return self.message(200, "You are signed out.", title="Signed out", again=True)

    async def backchannel_logout(self, request: Request) -> Response:
        """OpenID Connect Back-Channel Logout: the provider ends sessions server to server."""
        settings = self.auth.provider()
        if settings is None:
            return self._logout_refused("no identity provider is configured")
        try:
            fields = await self.read_form(request, ("logout_token",))
        except FormRefused as refused:
            return self._logout_refused(f"the body was refused ({refused.reason})")
        token = fields.get("logout_token")
        if not token:
            return self._logout_refused("logout_token is missing")
        try:
            metadata = await self._metadata(settings)
            logout = await run_in_threadpool(
                lambda: verify_logout_token(
                    token,
                    self._key_set(metadata),
                    issuer=metadata.issuer,
                    client_id=settings.client(APP).client_id,
                    leeway=settings.clock_skew_seconds,
                )
            )
        except TokenVerificationError as refused:
            log.warning("dpo: logout token refused (%s)", refused.check)
            return self._logout_refused(f"the logout token failed the {refused.check} check")
        except OidcError:
            log.warning("dpo: logout token not checked: the provider cannot be reached")
            return self._logout_refused("the provider's keys cannot be fetched", 503)
        if not logout.jti:
            return self._logout_refused("the logout token has no jti")
        expires = float(logout.claims["exp"]) + settings.clock_skew_seconds
        if not self.sessions.first_use_of_logout_token(logout.jti, expires):
            log.warning("dpo: logout token refused (replayed)")
            return self._logout_refused("this logout token was already used")
        ended = self.sessions.end_for(sid=logout.sid, sub=logout.sub)
        log.info("dpo: back-channel logout ended %d session(s)", ended)
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    @staticmethod
    def _logout_refused(description: str, status_code: int = 400) -> Response:
        return JSONResponse(
            {"error": "invalid_request", "error_description": description},
            status_code,
            headers={"Cache-Control": "no-store"},
        )

    # -- the requests --------------------------------------------------------------------
    async def requests_page(self, request: Request) -> Response:
        session = self.require(request, DPO)
        if isinstance(session, Response):
            return session
        now = dt.datetime.now(dt.UTC)
        rows = [
            {**r.to_json(), "urgency": r.urgency(now) or ""}
            for r in sorted(self.registry.list(), key=lambda r: r.deadline)
        ]
        return self.page("dpo_requests.html", 200, session, rows=rows)

    async def request_page(self, request: Request, **shown) -> Response:
        session = self.require(request, DPO)
        if isinstance(session, Response):
            return session
        request_id = request.path_params["request_id"]
        try:
            found = self.registry.get(request_id)
        except UnknownRequest:
            return self.message(404, "No such request.", session)
        return self.page(
            "dpo_request.html",
            shown.pop("status_code", 200),
            session,
            request_view=found.to_json(),
            audit=self.registry.audit(request_id),
            **shown,
        )

    async def decide(self, request: Request) -> Response:
        session = self.require(request, DPO)
        if isinstance(session, Response):
            return session
        action, request_id = request.path_params["action"], request.path_params["request_id"]
        if action not in ACTIONS:
            return Response("not found", 404)
        fields = await self.posted(request, session)
        if fields is None:
            return await self.request_page(
                request, status_code=403, error="The form expired; try again."
            )
        actor = session.actor
        reason = fields.get("reason", "").strip()[:500]
        if has_control_characters(reason):
            return await self.request_page(
                request, status_code=422, error="A reason has no control or invisible characters."
            )
        try:
            if action == "identity":
                identity = self.registry.identity(request_id, actor)
                return await self.request_page(request, identity=identity)
            if action == "free_text":
                free_text = self.registry.free_text(request_id, actor)
                return await self.request_page(request, free_text=free_text)
            if action == "verify":
                self.registry.verify(request_id, actor)
            elif action == "retry":
                self.registry.retry(request_id, actor)
            elif action == "reject":
                self.registry.reject(request_id, reason, actor)
            else:
                self.registry.extend(request_id, reason, actor)
        except UnknownRequest:
            return self.message(404, "No such request.", session)
        except (TransitionRefused, ValueError) as refused:
            return await self.request_page(request, status_code=409, error=str(refused))
        log.info("dpo: %s on %s by an operator", action, request_id)
        return RedirectResponse(f"/dpo/requests/{request_id}", 303)
