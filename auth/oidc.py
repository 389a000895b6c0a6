"""OpenID Connect for the platform's applications, with any standard provider.

What a relying party needs and nothing vendor-specific: the discovery document (cached), PKCE
(S256), state and nonce, the authorization URL, the code exchange (``client_secret_basic`` for a
confidential client, PKCE alone for a public one), ID token verification, access token
verification for a resource server (``aud`` = the resource), the RP-initiated logout URL and
back-channel logout token verification. Everything but the HTTP calls is pure.

Errors say which check failed and never repeat a token, a code or a secret: they end up in logs.
Time checks take a ``now`` so that expiry is tested on real tokens without waiting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
import jwt

from auth.settings import DEFAULT_SCOPES, OidcClient

DEFAULT_ALGORITHMS = ("RS256", "ES256")
DEFAULT_LEEWAY = 60
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
DISCOVERY_PATH = "/.well-known/openid-configuration"
HTTP_TIMEOUT = 10.0
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


class OidcError(Exception):
    """Any failure of the sign-in protocol; the message names the step and never a token."""


class DiscoveryError(OidcError):
    """The provider's discovery document is unreachable or unusable."""


class TokenRequestError(OidcError):
    """The token endpoint refused the request; ``error`` is its OAuth error code, if any."""

    def __init__(self, message: str, error: str | None = None):
        super().__init__(message)
        self.error = error


class TokenVerificationError(OidcError):
    """A token failed verification; ``check`` names the check.

    One of ``malformed``, ``algorithm``, ``key``, ``signature``, ``issuer``, ``audience``,
    ``azp``, ``claims``, ``expired``, ``issued_at``, ``not_yet_valid``, ``nonce``, ``events``.
    """

    def __init__(self, check: str, message: str):
        super().__init__(message)
        self.check = check


# Discovery ----------------------------------------------------------------------------------


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of a discovery document the platform uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    id_token_signing_alg_values_supported: tuple[str, ...] = ()
    code_challenge_methods_supported: tuple[str, ...] = ()
    backchannel_logout_supported: bool = False

    @classmethod
    def from_document(cls, document: Mapping[str, Any], issuer: str) -> ProviderMetadata:
        """Check and keep a discovery document; its issuer must be the one asked for exactly.

        HTTPS is required except on a loopback host (the development provider).
        """
        if not isinstance(document, Mapping):
            raise DiscoveryError("the discovery document is not a JSON object")
        if document.get("issuer") != issuer:
            raise DiscoveryError(
                f"the discovery document names issuer {document.get('issuer')!r}, not {issuer!r}"
            )
        missing = [
            name
            for name in ("authorization_endpoint", "token_endpoint", "jwks_uri")
            if not isinstance(document.get(name), str) or not document.get(name)
        ]
        if missing:
            raise DiscoveryError(f"the discovery document lacks {', '.join(missing)}")
        for name in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
            url = urlsplit(document[name])
            if url.scheme != "https" and not (url.scheme == "http" and _loopback(url.hostname)):
                raise DiscoveryError(f"{name} must be an https URL (http only on loopback)")
        methods = tuple(document.get("code_challenge_methods_supported") or ())
        if methods and "S256" not in methods:
            raise DiscoveryError("the provider does not support PKCE with S256")
        return cls(
            issuer=issuer,
            authorization_endpoint=document["authorization_endpoint"],
            token_endpoint=document["token_endpoint"],
            jwks_uri=document["jwks_uri"],
            userinfo_endpoint=document.get("userinfo_endpoint"),
            end_session_endpoint=document.get("end_session_endpoint"),
            id_token_signing_alg_values_supported=tuple(
                document.get("id_token_signing_alg_values_supported") or ()
            ),
            code_challenge_methods_supported=methods,
            backchannel_logout_supported=bool(document.get("backchannel_logout_supported")),
        )


def discovery_url(issuer: str) -> str:
    """Where OpenID Connect Discovery 1.0 puts the document of ``issuer``."""
    return issuer.rstrip("/") + DISCOVERY_PATH


def fetch_metadata(issuer: str, http: httpx.Client | None = None) -> ProviderMetadata:
    """The provider's metadata, fetched now (see :class:`MetadataCache` to reuse it)."""
    url = discovery_url(issuer)
    try:
        if http is None:
            response = httpx.get(url, timeout=HTTP_TIMEOUT, follow_redirects=False)
        else:
            response = http.get(url, follow_redirects=False)
    except httpx.HTTPError as error:
        raise DiscoveryError(f"cannot fetch {url}: {type(error).__name__}") from None
    if response.status_code != 200:
        raise DiscoveryError(f"{url} answered HTTP {response.status_code}")
    try:
        document = response.json()
    except ValueError:
        raise DiscoveryError(f"{url} did not answer JSON") from None
    return ProviderMetadata.from_document(document, issuer)


class MetadataCache:
    """Discovery documents kept for ``ttl`` seconds: one fetch per provider, not per sign-in."""

    def __init__(self, ttl: float = 3600.0):
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, ProviderMetadata]] = {}

    def get(self, issuer: str, http: httpx.Client | None = None) -> ProviderMetadata:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(issuer)
            if entry is not None and now - entry[0] < self.ttl:
                return entry[1]
        metadata = fetch_metadata(issuer, http)
        with self._lock:
            self._entries[issuer] = (time.monotonic(), metadata)
        return metadata

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_metadata_cache = MetadataCache()


def discover(issuer: str, http: httpx.Client | None = None) -> ProviderMetadata:
    """The provider's metadata from the process-wide cache."""
    return _metadata_cache.get(issuer, http)


# Authorization request ----------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """An unguessable ``state``: binds the callback to the browser session that started it."""
    return secrets.token_urlsafe(32)


def new_nonce() -> str:
    """An unguessable ``nonce``: binds the ID token to this sign-in (no replay)."""
    return secrets.token_urlsafe(32)


def pkce_challenge(verifier: str) -> str:
    """The S256 challenge of a code verifier (RFC 7636, 4.2)."""
    if not _VERIFIER.match(verifier):
        raise OidcError("a PKCE verifier is 43 to 128 unreserved characters")
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass(frozen=True)
class Pkce:
    """A code verifier kept by the client and the challenge sent in the authorization URL."""

    verifier: str = field(repr=False)
    challenge: str
    method: str = "S256"

    @classmethod
    def create(cls) -> Pkce:
        verifier = _b64url(secrets.token_bytes(32))  # 43 characters, 256 bits
        return cls(verifier, pkce_challenge(verifier))


def _with_query(url: str, params: Sequence[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _resources(resource: str | Sequence[str] | None) -> list[str]:
    if resource is None:
        return []
    return [resource] if isinstance(resource, str) else list(resource)


def authorization_url(
    metadata: ProviderMetadata,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    nonce: str,
    code_challenge: str,
    scopes: Sequence[str] = DEFAULT_SCOPES,
    resource: str | Sequence[str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> str:
    """Where to send the browser: the authorization code flow with PKCE (S256).

    ``resource`` (RFC 8707) names the resource servers the access token will be for.
    """
    params = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", " ".join(scopes)),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", code_challenge),
        ("code_challenge_method", "S256"),
        *(("resource", value) for value in _resources(resource)),
        *(extra or {}).items(),
    ]
    return _with_query(metadata.authorization_endpoint, params)


# Token endpoint -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenResponse:
    """The token endpoint's answer; tokens stay out of ``repr`` (and so out of logs)."""

    access_token: str = field(repr=False)
    token_type: str
    id_token: str | None = field(default=None, repr=False)
    expires_in: int | None = None
    scope: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


def _basic_auth(client: OidcClient) -> str:
    # RFC 6749, 2.3.1: both parts are form-encoded before the Basic encoding.
    pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret or '', safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def _token_error(response: httpx.Response) -> TokenRequestError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    description = body.get("error_description") if isinstance(body, dict) else None
    detail = f": {error}" if error else ""
    detail += f" ({description})" if description else ""
    return TokenRequestError(
        f"the token endpoint refused the request with HTTP {response.status_code}{detail}",
        error=error if isinstance(error, str) else None,
    )


def exchange_code(
    metadata: ProviderMetadata,
    client: OidcClient,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    resource: str | None = None,
    http: httpx.Client | None = None,
) -> TokenResponse:
    """Trade an authorization code for tokens; public clients authenticate with PKCE alone."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    if resource is not None:
        form["resource"] = resource
    headers = {"Accept": "application/json"}
    if client.public:
        form["client_id"] = client.client_id
    else:
        headers["Authorization"] = _basic_auth(client)
    try:
        if http is None:
            response = httpx.post(
                metadata.token_endpoint, data=form, headers=headers, timeout=HTTP_TIMEOUT
            )
        else:
            response = http.post(metadata.token_endpoint, data=form, headers=headers)
    except httpx.HTTPError as error:
        raise TokenRequestError(
            f"cannot reach the token endpoint: {type(error).__name__}"
        ) from None
    if response.status_code != 200:
        raise _token_error(response)
    try:
        body = response.json()
    except ValueError:
        raise TokenRequestError("the token endpoint did not answer JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise TokenRequestError("the token endpoint's answer has no access_token")
    token_type = str(body.get("token_type", ""))
    if token_type.lower() != "bearer":
        raise TokenRequestError(f"unsupported token_type {token_type!r} (Bearer expected)")
    expires_in = body.get("expires_in")
    return TokenResponse(
        access_token=body["access_token"],
        token_type=token_type,
        id_token=body.get("id_token"),
        expires_in=int(expires_in) if isinstance(expires_in, int | float) else None,
        scope=body.get("scope"),
        raw=body,
    )


def fetch_userinfo(
    metadata: ProviderMetadata, access_token: str, http: httpx.Client | None = None
) -> dict[str, Any]:
    """The userinfo endpoint's claims for an access token issued for it."""
    if not metadata.userinfo_endpoint:
        raise OidcError("the provider has no userinfo endpoint")
    headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
    try:
        if http is None:
            response = httpx.get(metadata.userinfo_endpoint, headers=headers, timeout=HTTP_TIMEOUT)
        else:
            response = http.get(metadata.userinfo_endpoint, headers=headers)
    except httpx.HTTPError as error:
        raise OidcError(f"cannot reach the userinfo endpoint: {type(error).__name__}") from None
    if response.status_code != 200:
        raise OidcError(f"the userinfo endpoint answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise OidcError("the userinfo endpoint did not answer JSON") from None
    if not isinstance(body, dict):
        raise OidcError("the userinfo endpoint did not answer a JSON object")
    return body


# Token verification -------------------------------------------------------------------------


class KeySet:
    """The provider's signing keys (its ``jwks_uri``), cached and refreshed on an unknown kid."""

    def __init__(self, jwks_uri: str, lifespan: float = 300.0, cooldown: float = 30.0):
        self.client = jwt.PyJWKClient(
            jwks_uri,
            cache_jwk_set=True,
            lifespan=lifespan,
            timeout=HTTP_TIMEOUT,
            cooldown_duration=cooldown,
        )

    def key_for(self, token: str) -> Any:
        try:
            return self.client.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError as error:
            raise TokenVerificationError(
                "key", f"cannot fetch the provider's keys: {type(error).__name__}"
            ) from None
        except jwt.PyJWKClientError:
            raise TokenVerificationError(
                "key", "no key of the provider matches the token's kid"
            ) from None
        except jwt.DecodeError:
            raise TokenVerificationError("malformed", "the token is not a JWT") from None


def _decode(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    audience: str,
    required: Sequence[str],
    algorithms: Sequence[str],
    leeway: float,
    now: float | None,
    kind: str,
) -> dict[str, Any]:
    """Signature, issuer, audience and times of a JWT; what differs by token kind is the caller's."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise TokenVerificationError("malformed", f"the {kind} is not a signed JWT")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError:
        raise TokenVerificationError("malformed", f"the {kind} is not a JWT") from None
    alg = header.get("alg")
    if alg not in algorithms:
        raise TokenVerificationError(
            "algorithm", f"the {kind} is signed with {alg!r}; accepted: {', '.join(algorithms)}"
        )
    key = keys.key_for(token)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=list(algorithms),
            audience=audience,
            issuer=issuer,
            options={
                "require": list(required),
                # Times are checked below against ``now``, with the same leeway.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenVerificationError("signature", f"the {kind}'s signature is invalid") from None
    except jwt.InvalidAudienceError:
        raise TokenVerificationError(
            "audience", f"the {kind} is not meant for {audience!r}"
        ) from None
    except jwt.InvalidIssuerError:
        raise TokenVerificationError("issuer", f"the {kind} is not from {issuer!r}") from None
    except jwt.MissingRequiredClaimError as error:
        raise TokenVerificationError(
            "claims", f"the {kind} lacks the {error.claim!r} claim"
        ) from None
    except jwt.InvalidAlgorithmError:
        raise TokenVerificationError(
            "algorithm", f"the {kind}'s algorithm does not fit the key"
        ) from None
    except jwt.DecodeError:
        raise TokenVerificationError("malformed", f"the {kind} cannot be decoded") from None
    except jwt.InvalidTokenError as error:
        raise TokenVerificationError(
            "claims", f"the {kind} is invalid: {type(error).__name__}"
        ) from None
    _check_times(claims, leeway=leeway, now=time.time() if now is None else now, kind=kind)
    return claims


def _number(claims: Mapping[str, Any], name: str, kind: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenVerificationError("claims", f"the {kind}'s {name!r} claim is not a number")
    return float(value)


def _check_times(claims: Mapping[str, Any], *, leeway: float, now: float, kind: str) -> None:
    exp = _number(claims, "exp", kind)
    if exp is not None and now > exp + leeway:
        raise TokenVerificationError("expired", f"the {kind} has expired")
    iat = _number(claims, "iat", kind)
    if iat is not None and iat > now + leeway:
        raise TokenVerificationError("issued_at", f"the {kind} is issued in the future")
    nbf = _number(claims, "nbf", kind)
    if nbf is not None and nbf > now + leeway:
        raise TokenVerificationError("not_yet_valid", f"the {kind} is not valid yet")


def _check_azp(claims: Mapping[str, Any], client_id: str, kind: str) -> None:
    """OIDC Core 3.1.3.7: with several audiences, ``azp`` must name this client."""
    aud = claims.get("aud")
    several = isinstance(aud, list) and len(aud) > 1
    azp = claims.get("azp")
    if several and azp is None:
        raise TokenVerificationError("azp", f"the {kind} has several audiences and no azp")
    if azp is not None and azp != client_id:
        raise TokenVerificationError("azp", f"the {kind} was issued to another client (azp)")


def verify_id_token(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    leeway: float = DEFAULT_LEEWAY,
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of an ID token from this sign-in (OIDC Core 3.1.3.7); else an error."""
    claims = _decode(
        token,
        keys,
        issuer=issuer,
        audience=client_id,
        required=("iss", "sub", "aud", "exp", "iat"),
        algorithms=algorithms,
        leeway=leeway,
        now=now,
        kind="ID token",
    )
    _check_azp(claims, client_id, "ID token")
    got = claims.get("nonce")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        raise TokenVerificationError("nonce", "the ID token's nonce is not this sign-in's")
    return claims


def verify_access_token(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    audience: str,
    leeway: float = DEFAULT_LEEWAY,
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of a JWT access token (RFC 9068) presented to the resource ``audience``."""
    claims = _decode(
        token,
        keys,
        issuer=issuer,
        audience=audience,
        required=("iss", "sub", "aud", "exp"),
        algorithms=algorithms,
        leeway=leeway,
        now=now,
        kind="access token",
    )
    if "nonce" in claims or "events" in claims:
        # An ID or logout token is never a credential for an API.
        raise TokenVerificationError("claims", "this is not an access token")
    return claims


@dataclass(frozen=True)
class LogoutToken:
    """Who to sign out: every session of ``sub``, or the one session ``sid``, or both."""

    sub: str | None
    sid: str | None
    jti: str | None
    claims: Mapping[str, Any] = field(repr=False)


def verify_logout_token(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    leeway: float = DEFAULT_LEEWAY,
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
    now: float | None = None,
) -> LogoutToken:
    """A back-channel logout token (OIDC Back-Channel Logout 1.0, 2.6).

    The caller should refuse a ``jti`` it has already seen within the token's lifetime.
    """
    claims = _decode(
        token,
        keys,
        issuer=issuer,
        audience=client_id,
        required=("iss", "aud", "iat", "exp"),
        algorithms=algorithms,
        leeway=leeway,
        now=now,
        kind="logout token",
    )
    _check_azp(claims, client_id, "logout token")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise TokenVerificationError("events", "the logout token lacks the back-channel event")
    if "nonce" in claims:
        raise TokenVerificationError("nonce", "a logout token must not carry a nonce")
    sub, sid = claims.get("sub"), claims.get("sid")
    if not isinstance(sub, str) and not isinstance(sid, str):
        raise TokenVerificationError("claims", "the logout token names neither sub nor sid")
    jti = claims.get("jti")
    return LogoutToken(
        sub=sub if isinstance(sub, str) else None,
        sid=sid if isinstance(sid, str) else None,
        jti=jti if isinstance(jti, str) else None,
        claims=claims,
    )


# Logout -------------------------------------------------------------------------------------


def end_session_url(
    metadata: ProviderMetadata,
    *,
    id_token_hint: str | None = None,
    client_id: str | None = None,
    post_logout_redirect_uri: str | None = None,
    state: str | None = None,
) -> str:
    """Where to send the browser to sign out at the provider (OIDC RP-Initiated Logout 1.0)."""
    if not metadata.end_session_endpoint:
        raise OidcError("the provider does not support RP-initiated logout")
    if post_logout_redirect_uri and not (id_token_hint or client_id):
        raise OidcError("a post-logout redirect needs id_token_hint or client_id")
    params = [
        (name, value)
        for name, value in (
            ("id_token_hint", id_token_hint),
            ("client_id", client_id),
            ("post_logout_redirect_uri", post_logout_redirect_uri),
            ("state", state),
        )
        if value
    ]
    return _with_query(metadata.end_session_endpoint, params)
