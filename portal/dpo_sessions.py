"""Server-side state of the DPO's sign-in, in the rights registry's database.

Sessions live in a table rather than in a signed cookie so that signing out (here, or at the
provider through a back-channel logout) ends them at once. The browser holds only a random id;
the table keeps its SHA-256, so a copy of the database opens no session. Pending sign-ins (state,
nonce, PKCE verifier) are kept the same way, bound to the browser by their own random cookie, and
used once. Seen logout token ids are kept until the token expires, to refuse a replay. Failed
break-glass sign-ins are counted per account name (by digest), in the database so that every
worker process sees them: past a few, the account waits, longer after each new failure,
whichever address the attempts come from.

A session also keeps the staff roles the provider asserted at sign-in (DPO, data referent), so
each area checks its own role on every page. A database from before roles were kept gains the
column on start; its open sessions were the DPO's (nobody else could sign in then) and keep
exactly that role.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa

from auth.roles import DPO

OIDC = "oidc"
BREAK_GLASS = "break-glass"
PENDING_SECONDS = 600  # the provider's own interaction lasts 10 minutes

metadata = sa.MetaData()
sessions_table = sa.Table(
    "portal_dpo_sessions",
    metadata,
    sa.Column("id_sha256", sa.String(64), primary_key=True),
    sa.Column("method", sa.String(20), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False, index=True),
    sa.Column("sid", sa.String(255), nullable=True, index=True),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("id_token", sa.Text, nullable=True),  # the hint of the RP-initiated logout
    sa.Column("stamp", sa.String(64), nullable=True),  # break-glass: the account's password stamp
    sa.Column("roles", sa.String(255), nullable=True),  # comma-separated; none: no role at all
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Integer, nullable=False, index=True),
)
pending_table = sa.Table(
    "portal_dpo_pending_sign_ins",
    metadata,
    sa.Column("id_sha256", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(128), nullable=False),
    sa.Column("nonce", sa.String(128), nullable=False),
    sa.Column("verifier", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.Integer, nullable=False, index=True),
)
sign_in_failures_table = sa.Table(
    "portal_sign_in_failures",
    metadata,
    sa.Column("account_sha256", sa.String(64), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("blocked_until", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Integer, nullable=False, index=True),
)
logout_tokens_table = sa.Table(
    "portal_dpo_logout_tokens",
    metadata,
    sa.Column("jti_sha256", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.Integer, nullable=False, index=True),
)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _now(now: float | None) -> int:
    return int(time.time() if now is None else now)


def _roles_text(roles: Iterable[str]) -> str:
    return ",".join(sorted(set(roles)))


def _roles_of(text: str | None) -> frozenset[str]:
    return frozenset(r for r in (text or "").split(",") if r)


def _has_roles_column(engine: sa.Engine) -> bool:
    return "roles" in {c["name"] for c in sa.inspect(engine).get_columns(sessions_table.name)}


def add_roles_column(engine: sa.Engine) -> None:
    """Bring a sessions table from before roles were kept up to date; its sessions were opened
    by the DPO, the only one who could sign in then, so they keep that role and no other."""
    if _has_roles_column(engine):
        return
    try:
        with engine.begin() as db:
            db.execute(sa.text(f"ALTER TABLE {sessions_table.name} ADD COLUMN roles VARCHAR(255)"))
            db.execute(
                sessions_table.update().where(sessions_table.c.roles.is_(None)).values(roles=DPO)
            )
    except sa.exc.DBAPIError:
        # Another process added it first: fine if it is there now.
        if not _has_roles_column(engine):
            raise


@dataclass(frozen=True)
class DpoSession:
    """Who is signed in, how, and until when."""

    method: str
    subject: str
    sid: str | None
    username: str
    name: str | None
    expires_at: int
    id_token: str | None = field(default=None, repr=False)
    stamp: str | None = field(default=None, repr=False)
    roles: frozenset[str] = frozenset()
    key: str = field(default="", repr=False)  # the id's digest: what CSRF tokens are bound to

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def actor(self) -> str:
        """The audit log's name for this person; break-glass use stays visible in it."""
        if self.method == BREAK_GLASS:
            return f"dpo:break-glass:{self.username}"
        return f"dpo:{self.username}"


@dataclass(frozen=True)
class PendingSignIn:
    """What the callback checks: the request's state, the ID token's nonce, the PKCE verifier."""

    state: str = field(repr=False)
    nonce: str = field(repr=False)
    verifier: str = field(repr=False)


class SessionStore:
    """Sessions, pending sign-ins and seen logout tokens, on the registry's engine."""

    def __init__(self, engine: sa.Engine, hours: int = 8):
        self.engine = engine
        self.max_age = hours * 3600
        metadata.create_all(engine)
        add_roles_column(engine)

    # -- sessions ------------------------------------------------------------------------
    def create(
        self,
        *,
        method: str,
        subject: str,
        username: str,
        sid: str | None = None,
        name: str | None = None,
        id_token: str | None = None,
        stamp: str | None = None,
        roles: Iterable[str] = (),
        now: float | None = None,
    ) -> str:
        """A new session; returns the cookie value (never stored as such)."""
        token = secrets.token_urlsafe(32)
        at = _now(now)
        with self.engine.begin() as db:
            db.execute(sessions_table.delete().where(sessions_table.c.expires_at <= at))
            db.execute(
                sessions_table.insert().values(
                    id_sha256=_digest(token),
                    method=method,
                    subject=subject[:255],
                    sid=sid[:255] if sid else None,
                    username=username[:255],
                    name=name[:255] if name else None,
                    id_token=id_token,
                    stamp=stamp,
                    roles=_roles_text(roles),
                    created_at=at,
                    expires_at=at + self.max_age,
                )
            )
        return token

    def get(self, token: str | None, now: float | None = None) -> DpoSession | None:
        """The live session of a cookie value, or None (unknown, ended or expired)."""
        if not token or len(token) > 128:
            return None
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(sessions_table).where(sessions_table.c.id_sha256 == _digest(token))
            ).first()
        if row is None or row.expires_at <= _now(now):
            return None
        return DpoSession(
            method=row.method,
            subject=row.subject,
            sid=row.sid,
            username=row.username,
            name=row.name,
            expires_at=row.expires_at,
            id_token=row.id_token,
            stamp=row.stamp,
            roles=_roles_of(row.roles),
            key=row.id_sha256,
        )

    def end(self, token: str | None) -> None:
        if token:
            with self.engine.begin() as db:
                db.execute(
                    sessions_table.delete().where(sessions_table.c.id_sha256 == _digest(token))
                )

    def end_for(self, *, sid: str | None, sub: str | None) -> int:
        """End the sessions a back-channel logout names: its ``sid`` (of ``sub`` if given), or
        every provider session of ``sub``. Break-glass sessions are not the provider's to end."""
        query = sessions_table.delete().where(sessions_table.c.method == OIDC)
        if sid:
            query = query.where(sessions_table.c.sid == sid)
            if sub:
                query = query.where(sessions_table.c.subject == sub)
        elif sub:
            query = query.where(sessions_table.c.subject == sub)
        else:
            return 0
        with self.engine.begin() as db:
            return db.execute(query).rowcount

    # -- pending sign-ins ----------------------------------------------------------------
    def begin_sign_in(self, pending: PendingSignIn, now: float | None = None) -> str:
        """Keep a sign-in's secrets; returns the value of the cookie binding it to the browser."""
        token = secrets.token_urlsafe(32)
        at = _now(now)
        with self.engine.begin() as db:
            db.execute(pending_table.delete().where(pending_table.c.expires_at <= at))
            db.execute(
                pending_table.insert().values(
                    id_sha256=_digest(token),
                    state=pending.state,
                    nonce=pending.nonce,
                    verifier=pending.verifier,
                    expires_at=at + PENDING_SECONDS,
                )
            )
        return token

    def take_sign_in(self, token: str | None, now: float | None = None) -> PendingSignIn | None:
        """The pending sign-in of this browser, removed: a callback is accepted once."""
        if not token or len(token) > 128:
            return None
        key = _digest(token)
        with self.engine.begin() as db:
            row = db.execute(
                sa.select(pending_table).where(pending_table.c.id_sha256 == key)
            ).first()
            if row is None:
                return None
            deleted = db.execute(pending_table.delete().where(pending_table.c.id_sha256 == key))
        if deleted.rowcount != 1 or row.expires_at <= _now(now):
            return None  # expired, or another request took it first
        return PendingSignIn(row.state, row.nonce, row.verifier)

    # -- failed sign-ins, per account -----------------------------------------------------
    def sign_in_wait(self, account: str, now: float | None = None) -> int:
        """Seconds this account must still wait before its password is checked again."""
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(sign_in_failures_table.c.blocked_until).where(
                    sign_in_failures_table.c.account_sha256 == _digest(account)
                )
            ).first()
        return max(0, row.blocked_until - _now(now)) if row else 0

    def sign_in_failed(
        self,
        account: str,
        *,
        free: int = 5,
        base_seconds: int = 60,
        max_seconds: int = 900,
        now: float | None = None,
    ) -> int:
        """Count a failure; past ``free`` of them the account waits ``base_seconds``, doubling
        with each further failure up to ``max_seconds``. Returns the wait (0: none yet)."""
        at, key = _now(now), _digest(account)
        for _ in range(3):  # two first failures at once: the second insert retries as an update
            try:
                return self._count_failure(key, at, free, base_seconds, max_seconds)
            except sa.exc.IntegrityError:
                continue
        return max_seconds

    def _count_failure(
        self, key: str, at: int, free: int, base_seconds: int, max_seconds: int
    ) -> int:
        with self.engine.begin() as db:
            # Forget accounts quiet for a day: the table stays small under a flood of names.
            db.execute(
                sign_in_failures_table.delete().where(
                    sign_in_failures_table.c.updated_at < at - 86_400
                )
            )
            row = db.execute(
                sa.select(sign_in_failures_table.c.failures).where(
                    sign_in_failures_table.c.account_sha256 == key
                )
            ).first()
            failures = (row.failures if row else 0) + 1
            wait = 0
            if failures >= free:
                wait = min(max_seconds, base_seconds * 2 ** min(failures - free, 16))
            values = {"failures": failures, "blocked_until": at + wait, "updated_at": at}
            if row is None:
                db.execute(sign_in_failures_table.insert().values(account_sha256=key, **values))
            else:
                db.execute(
                    sign_in_failures_table.update()
                    .where(sign_in_failures_table.c.account_sha256 == key)
                    .values(**values)
                )
        return wait

    def sign_in_succeeded(self, account: str) -> None:
        with self.engine.begin() as db:
            db.execute(
                sign_in_failures_table.delete().where(
                    sign_in_failures_table.c.account_sha256 == _digest(account)
                )
            )

    # -- back-channel logout tokens ------------------------------------------------------
    def first_use_of_logout_token(
        self, jti: str, expires_at: float, now: float | None = None
    ) -> bool:
        """True the first time a logout token id is seen; it is remembered until it expires."""
        at = _now(now)
        with self.engine.begin() as db:
            db.execute(logout_tokens_table.delete().where(logout_tokens_table.c.expires_at <= at))
        try:
            with self.engine.begin() as db:
                db.execute(
                    logout_tokens_table.insert().values(
                        jti_sha256=_digest(jti), expires_at=max(int(expires_at), at + 1)
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True


def same_state(expected: str, given: str | None) -> bool:
    """Constant-time comparison of the ``state`` sent and the one that came back."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
