"""CSRF tokens, per-client rate limits and security headers for the portal."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque

CSRF_COOKIE = "hdh_csrf"
CSRF_FIELD = "csrf_token"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # receipts and statuses must not sit in a shared cache
}


class CsrfTokens:
    """Double-submit tokens: a random value in a cookie and in the form, signed with the
    server's secret so a value planted by another site fails, and dated so old forms expire."""

    def __init__(self, secret: bytes, max_age_seconds: int = 3600):
        self._secret = secret
        self.max_age = max_age_seconds

    def _sign(self, nonce: str, issued: int) -> str:
        mac = hmac.new(self._secret, f"{nonce}.{issued}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def issue(self) -> str:
        nonce, issued = secrets.token_urlsafe(18), int(time.time())
        return f"{nonce}.{issued}.{self._sign(nonce, issued)}"

    def valid(self, cookie: str | None, field: str | None, now: float | None = None) -> bool:
        if not cookie or not field or not hmac.compare_digest(cookie, field):
            return False
        try:
            nonce, issued, signature = field.split(".")
            issued_at = int(issued)
        except ValueError:
            return False
        if not hmac.compare_digest(signature, self._sign(nonce, issued_at)):
            return False
        return 0 <= (now or time.time()) - issued_at <= self.max_age


class RateLimiter:
    """At most ``limit`` events per client within ``window`` seconds (sliding window)."""

    def __init__(self, limit: int, window: float = 60.0, max_clients: int = 100_000):
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str, now: float | None = None) -> bool:
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
                return False
            events.append(now)
            return True
