"""Signed bearer tokens: who may search and retrieve, and until when.

A token is ``<payload>.<signature>``, both base64url: the payload is JSON ``{"project": <id> or
null, "all": bool, "expires": <unix seconds>}`` and the signature its HMAC-SHA256 under the
service's key. ``all`` tokens are for operators and see every study not excluded; a project
token sees what its workspace grants allow (``access.py``). Nothing is stored server side, so a
token cannot be revoked before it expires: keep lifetimes short, and rotate the key (which ends
every token at once) when one leaks.

The key is ``HDH_DICOMWEB_SECRET`` when set, else a key generated once under
``HDH_HOME/secrets`` (mode 0600), as the portal's and the demo pseudonymisation keys are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from dataclasses import dataclass

from resources.home import HdhHome

SECRET_ENV = "HDH_DICOMWEB_SECRET"
KEY_FILE = "dicomweb-tokens.key"
MAX_TTL_SECONDS = 90 * 24 * 3600
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class InvalidToken(Exception):
    """Why a token is refused (malformed, forged, expired); the app answers 401."""


@dataclass(frozen=True)
class Claims:
    """Who is asking: every study (``all``), or the studies of one or more projects. A platform
    token names one project; a person signed in at the provider may belong to several."""

    project: str | None  # None with all=True: an operator token
    all: bool
    expires: int
    others: frozenset[str] = frozenset()  # further projects (a provider's token)

    @property
    def projects(self) -> frozenset[str]:
        named = frozenset() if self.project is None else frozenset({self.project})
        return named | self.others

    def describe(self) -> str:
        if self.all:
            return "all studies"
        return ("project " if len(self.projects) == 1 else "projects ") + ", ".join(
            sorted(self.projects)
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tokens:
    """Issues and verifies tokens with one key."""

    def __init__(self, key: bytes):
        if len(key) < 32:
            raise ValueError("the token key must hold at least 32 bytes")
        self._key = key

    @classmethod
    def for_home(cls, home: HdhHome) -> Tokens:
        secret = os.environ.get(SECRET_ENV)
        if secret:
            return cls(secret.encode())
        # Here, not at the top: it loads Dagster, which issuing or checking a token never needs.
        from resources.pseudonymisation import load_demo_key

        return cls(load_demo_key(home, KEY_FILE))

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, project: str | None, ttl_seconds: int, now: float | None = None) -> str:
        """A token for ``project``, or for every study when ``project`` is None."""
        if project is not None and not _PROJECT.match(project):
            raise ValueError(f"'{project}' is not a project id")
        if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
            raise ValueError(f"the lifetime must be between 1 s and {MAX_TTL_SECONDS} s")
        expires = int((now if now is not None else time.time()) + ttl_seconds)
        claims = {"project": project, "all": project is None, "expires": expires}
        payload = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def verify(self, token: str, now: float | None = None) -> Claims:
        """The token's claims; :class:`InvalidToken` when it is not one of ours or expired."""
        try:
            encoded, signature = token.strip().split(".")
            payload, mac = _unb64(encoded), _unb64(signature)
        except ValueError:
            raise InvalidToken("malformed token") from None
        if not hmac.compare_digest(mac, self._sign(payload)):
            raise InvalidToken("bad signature")
        try:
            data = json.loads(payload)
            claims = Claims(data["project"], bool(data["all"]), int(data["expires"]))
        except (ValueError, KeyError, TypeError):
            raise InvalidToken("malformed token") from None
        if claims.all == (claims.project is not None):
            raise InvalidToken("a token names a project or all studies, not both")
        if claims.expires <= (now if now is not None else time.time()):
            raise InvalidToken("expired token")
        return claims
