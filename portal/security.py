"""CSRF tokens, per-client rate limits, form reading limits and the one middleware that puts the
security headers on every response of the portal."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
import traceback
import unicodedata
from collections import deque
from collections.abc import Iterable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("hdh.portal.security")

CSRF_COOKIE = "hdh_csrf"
CSRF_FIELD = "csrf_token"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # receipts and statuses must not sit in a shared cache
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
HSTS = "max-age=31536000"  # one year; no includeSubDomains: other hosts are not ours to bind
DEFAULT_RETRY_AFTER = 60
MAX_FORM_FIELDS = 50
FORM_TYPE = "application/x-www-form-urlencoded"
# Invisible characters a person cannot see nor mean: control (Cc) and format (Cf) characters.
CONTROL_CATEGORIES = ("Cc", "Cf")


class FormRefused(Exception):
    """A body the portal does not read: too large (413) or not a form it accepts (400). It
    carries a status and a reason for the page, never any of the body's content."""

    def __init__(self, status_code: int, reason: str):
        super().__init__(reason)
        self.status_code, self.reason = status_code, reason


async def read_form_body(
    request: Request, allowed: Iterable[str], max_bytes: int, max_fields: int = MAX_FORM_FIELDS
) -> dict[str, str]:
    """The posted fields named in ``allowed`` (the CSRF field too), first value of each.

    Raises :class:`FormRefused` rather than letting a parser's error become a 500: a body above
    ``max_bytes`` (declared or streamed) gives 413; another content type (a multipart upload),
    bytes that are not UTF-8 or more than ``max_fields`` fields give 400."""
    declared = request.headers.get("content-length")
    if declared and (not declared.isdigit() or int(declared) > max_bytes):
        raise FormRefused(413, "too large")
    content_type = request.headers.get("content-type", FORM_TYPE).split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise FormRefused(400, "not a form")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise FormRefused(413, "too large")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=max_fields,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):  # ValueError: more fields than max_fields
        raise FormRefused(400, "not a form") from None
    wanted = {*allowed, CSRF_FIELD}
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in wanted:
            fields.setdefault(key, value)
    return fields


class CsrfTokens:
    """One token per session, so a second tab does not invalidate the first.

    A session is the staff sign-in when there is one (its server-side key), else the browser's
    own CSRF cookie: a random value signed with the server's secret and dated, so a value
    planted by another site fails and old ones expire. The form's token is a MAC of that
    session under the secret: it cannot be computed without the secret, and a token of one
    session is worth nothing in another. ``https`` forces Secure cookies whatever the scheme."""

    def __init__(self, secret: bytes, max_age_seconds: int = 3600, https: bool = False):
        self._secret = secret
        self.max_age = max_age_seconds
        self.https = https

    def _sign(self, nonce: str, issued: int) -> str:
        mac = hmac.new(self._secret, f"{nonce}.{issued}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def issue(self) -> str:
        """A new browser session value, for the CSRF cookie."""
        nonce, issued = secrets.token_urlsafe(18), int(time.time())
        return f"{nonce}.{issued}.{self._sign(nonce, issued)}"

    def cookie_valid(self, cookie: str | None, now: float | None = None) -> bool:
        """True for a cookie value this server issued less than ``max_age`` ago."""
        if not cookie or len(cookie) > 128:
            return False
        try:
            nonce, issued, signature = cookie.split(".")
            issued_at = int(issued)
        except ValueError:
            return False
        if not hmac.compare_digest(signature, self._sign(nonce, issued_at)):
            return False
        return 0 <= (time.time() if now is None else now) - issued_at <= self.max_age

    def token(self, binding: str) -> str:
        """The form token of a session (``browser:<cookie>`` or ``session:<key>``)."""
        mac = hmac.new(self._secret, b"csrf-form\x00" + binding.encode(), hashlib.sha256)
        return mac.hexdigest()

    def for_browser(self, cookie: str) -> str:
        return self.token(f"browser:{cookie}")

    def for_session(self, session_key: str) -> str:
        return self.token(f"session:{session_key}")

    def valid(self, cookie: str | None, field: str | None, now: float | None = None) -> bool:
        """The form's token against the browser's CSRF cookie (no staff session)."""
        if not field or not cookie or not self.cookie_valid(cookie, now):
            return False
        return hmac.compare_digest(field, self.for_browser(cookie))

    def valid_for_session(self, session_key: str, field: str | None) -> bool:
        """The form's token against the staff session it was shown in."""
        return bool(field and session_key) and hmac.compare_digest(
            field or "", self.for_session(session_key)
        )

    # -- the browser's cookie --------------------------------------------------------------
    def cookie_name(self, request: Request) -> str:
        return cookie_name(CSRF_COOKIE, is_https(request, self.https))

    def browser_session(self, request: Request) -> tuple[str, bool]:
        """The browser's CSRF session: its cookie while valid (every tab shares it), else a
        new one; and whether the cookie must be set."""
        current = request.cookies.get(self.cookie_name(request))
        if self.cookie_valid(current):
            return current, False
        return self.issue(), True

    def set_cookie(self, response: Response, request: Request, value: str) -> None:
        response.set_cookie(
            self.cookie_name(request),
            value,
            max_age=self.max_age,
            path="/",
            secure=is_https(request, self.https),
            httponly=True,
            samesite="strict",
        )

    def valid_request(self, request: Request, field: str | None) -> bool:
        return self.valid(request.cookies.get(self.cookie_name(request)), field)


def is_https(scope_or_request: Scope | Request, forced: bool = False) -> bool:
    """Whether a request came over https: a setting says so, or the scheme does (after the
    trusted proxies' ``X-Forwarded-Proto`` is applied)."""
    scope = scope_or_request.scope if isinstance(scope_or_request, Request) else scope_or_request
    return forced or scope.get("scheme") in ("https", "wss")


def cookie_name(name: str, https: bool, path: str = "/") -> str:
    """A cookie's name over https: ``__Host-`` when it is for the whole host (Path=/), which the
    browser only accepts Secure, from this host and for every path; ``__Secure-`` for a cookie
    scoped to a path (the staff areas), which ``__Host-`` does not allow."""
    if not https:
        return name
    return f"__Host-{name}" if path == "/" else f"__Secure-{name}"


def has_control_characters(text: str, allowed: str = "") -> bool:
    """True when ``text`` holds a control or format character (other than ``allowed``)."""
    return any(unicodedata.category(c) in CONTROL_CATEGORIES and c not in allowed for c in text)


def client_address(request: Request) -> str:
    """The client the limits are keyed on: the socket peer, or the address a trusted proxy
    forwarded (the proxy middleware has then replaced the peer with it); never a header an
    untrusted peer could set."""
    return request.client.host if request.client else "unknown"


class RateLimiter:
    """At most ``limit`` events per client within ``window`` seconds (sliding window)."""

    def __init__(self, limit: int, window: float = 60.0, max_clients: int = 100_000):
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait(self, client: str, now: float | None = None) -> int:
        """0 and the event counted when it is allowed; else the seconds until it would be,
        for the ``Retry-After`` header."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._events) > self.max_clients:  # bounded memory under a flood
                self._events = {
                    k: v for k, v in self._events.items() if v and v[-1] > now - self.window
                }
            events = self._events.setdefault(client, deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                oldest = events[0] if events else now  # a limit of 0: always the whole window
                return max(1, math.ceil(oldest + self.window - now))
            events.append(now)
            return 0

    def allow(self, client: str, now: float | None = None) -> bool:
        return self.wait(client, now) == 0


class SecurityHeadersMiddleware:
    """The one place the security headers are set, on every response: pages, redirects, the
    router's 404 and 405, the trusted-host 400 and a 500. HSTS goes on https responses only. A
    429 without ``Retry-After`` gets the default one. An exception is answered with a bare 500
    (no traceback in the page) and logged by type and frames, not by its message, which could
    carry a value."""

    def __init__(self, app: ASGIApp, https: bool = False):
        self.app, self.https = app, https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = self._headers(scope, message)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as error:  # the last line before the server: answer, log, go on
            log.error(
                "portal: %s on %s %s\n%s",
                type(error).__name__,
                scope.get("method"),
                scope.get("path"),
                "".join(traceback.format_tb(error.__traceback__)),
            )
            if started:
                return
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": b"Internal Server Error"})

    def _headers(self, scope: Scope, message: Message) -> list[tuple[bytes, bytes]]:
        ours = dict(SECURITY_HEADERS)
        if is_https(scope, self.https):
            ours["Strict-Transport-Security"] = HSTS
        names = {name.lower().encode() for name in ours}
        kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
        if message["status"] == 429 and not any(k.lower() == b"retry-after" for k, _ in kept):
            kept.append((b"retry-after", str(DEFAULT_RETRY_AFTER).encode()))
        return kept + [(k.lower().encode(), v.encode()) for k, v in ours.items()]
