"""Access tokens of the single sign-on provider, accepted beside the platform's own tokens.

A person signed in at the provider (a viewer with its own OpenID Connect client, a script)
presents a JWT access token (RFC 9068) issued for the DICOMweb resource. It is checked against
the provider's keys (issuer, audience = the service's resource, expiry with the configured clock
skew), and what it may see comes from its groups: operators and data referents see every study
(they prepare and check the data), a project member the studies of their projects' grants, and
anyone else nothing (403). Nothing here trusts the token's content before its signature.
"""

from __future__ import annotations

import threading

from auth.oidc import KeySet, OidcError, TokenVerificationError, discover, verify_access_token
from auth.provider import SettingsSource, provider_settings
from auth.roles import DATA_REFERENT, OPERATOR, GroupsClaimError, access_for
from auth.settings import OidcSettings
from dicomweb.tokens import Claims, InvalidToken
from resources.home import HdhHome

STAFF_ROLES = (OPERATOR, DATA_REFERENT)


class NoAccess(InvalidToken):
    """A valid token whose person may see no image: answered 403, not 401."""


def is_jwt(token: str) -> bool:
    """Three dot-separated parts; the platform's own tokens have two."""
    return token.strip().count(".") == 2


class ProviderTokens:
    """Verifies the provider's access tokens for this service (keys fetched once per issuer,
    refreshed on an unknown key id). The provider is asked for when a token arrives, so the
    development provider may start after the service."""

    def __init__(self, settings: OidcSettings | SettingsSource):
        self._source: SettingsSource = (
            (lambda: settings) if isinstance(settings, OidcSettings) else settings
        )
        self._keys: dict[str, KeySet] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_home(cls, home: HdhHome) -> ProviderTokens:
        """``HDH_OIDC_ISSUER``'s provider, or the development provider started for ``home``."""
        return cls(provider_settings(home.secrets))

    def _keyset(self, issuer: str) -> KeySet:
        with self._lock:
            if issuer not in self._keys:
                self._keys[issuer] = KeySet(discover(issuer).jwks_uri)
            return self._keys[issuer]

    def verify(self, token: str, now: float | None = None) -> Claims:
        settings = self._source()
        if settings is None or not settings.issuer:
            raise InvalidToken("no identity provider is configured for this service")
        try:
            claims = verify_access_token(
                token,
                self._keyset(settings.issuer),
                issuer=settings.issuer,
                audience=settings.dicomweb_audience,
                leeway=settings.clock_skew_seconds,
                now=now,
            )
            access = access_for(claims, settings)
        except TokenVerificationError as error:
            raise InvalidToken(f"the provider's token is refused ({error.check})") from None
        except GroupsClaimError:
            raise InvalidToken("the provider's token has a malformed groups claim") from None
        except OidcError:
            raise InvalidToken(
                "the identity provider cannot be reached to check the token"
            ) from None
        expires = int(claims["exp"])
        if any(access.has_role(role) for role in STAFF_ROLES):
            return Claims(None, True, expires)
        if not access.projects:
            raise NoAccess("neither a project nor a staff role of this person grants images")
        first, *others = sorted(access.projects)
        return Claims(first, False, expires, frozenset(others))
