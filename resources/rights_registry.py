"""The registry of GDPR rights requests: SQLite under HDH_HOME by default, PostgreSQL in
production, through one SQLAlchemy code path.

Identity data needed for verification is encrypted at rest (AES-256-GCM, the request id as
associated data, so a ciphertext cannot be moved to another request); otherwise the person is
known by pseudonym. Every change of state appends to an audit log (who, when, what) in the same
transaction, and a change only applies to the state it was read in (compare-and-set), so two
operators or two sensor ticks never both move a request. Reading the identity or the free text
is audited too. A SQLite registry's folder and files are created readable by the platform's
user only (0700 / 0600): they hold the encrypted identities and the audit log.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hdh_assets.gdpr.rights import (
    Identity,
    RequestType,
    Status,
    TransitionRefused,
    check_transition,
    extended_deadline,
    initial_deadline,
    urgency,
)
from resources.home import HdhHome
from resources.pseudonymisation import load_demo_key

RIGHTS_KEY_ENV = "HDH_RIGHTS_KEY"
RIGHTS_DB_ENV = "HDH_RIGHTS_DB_URL"
DEMO_KEY_FILE = "rights-demo.key"
ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read over the phone

metadata = sa.MetaData()
requests_table = sa.Table(
    "rights_requests",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("token_sha256", sa.String(64), nullable=False),
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("subject_pseudonym", sa.String(64), nullable=False, index=True),
    sa.Column("identity", sa.LargeBinary, nullable=False),
    sa.Column("free_text", sa.LargeBinary, nullable=True),
    sa.Column("project_scope", sa.String(100), nullable=True),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Column("deadline", sa.DateTime, nullable=False),
    sa.Column("extension_reason", sa.Text, nullable=True),
    sa.Column("rejection_reason", sa.Text, nullable=True),
    sa.Column("report", sa.JSON, nullable=True),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)
audit_table = sa.Table(
    "rights_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(24), sa.ForeignKey("rights_requests.id"), index=True),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("from_status", sa.String(20), nullable=True),
    sa.Column("to_status", sa.String(20), nullable=True),
    sa.Column("detail", sa.JSON, nullable=True),
)
operators_table = sa.Table(
    "rights_operators",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("created_by", sa.String(100), nullable=False),
)
OPERATOR_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
MIN_PASSWORD_LENGTH = 12
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str, salt: bytes | None = None) -> str:
    """scrypt, salted; the parameters travel with the hash so they can be raised later."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    n, r, p = _SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"]
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        computed = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), dklen=32, n=int(n), r=int(r), p=int(p)
        )
    except ValueError:
        return False
    return hmac.compare_digest(computed.hex(), digest)


@functools.cache
def _unknown_operator() -> str:
    """What an unknown name is checked against: the same scrypt cost as a real account."""
    return hash_password("no such operator: same cost as a real check")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)  # stored as naive UTC on both databases


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC)


class IdentityCipher:
    """AES-256-GCM with a key derived from the configured secret."""

    def __init__(self, secret: bytes):
        self._aead = AESGCM(hashlib.sha256(b"hdh-rights-identity\x00" + secret).digest())

    def seal(self, request_id: str, payload: dict) -> bytes:
        nonce = secrets.token_bytes(12)
        plain = json.dumps(payload, sort_keys=True).encode()
        return nonce + self._aead.encrypt(nonce, plain, request_id.encode())

    def open(self, request_id: str, sealed: bytes) -> dict:
        return json.loads(self._aead.decrypt(sealed[:12], sealed[12:], request_id.encode()))


@dataclass(frozen=True)
class RightsRequest:
    """A request as operators see it: by pseudonym, identity only on demand."""

    id: str
    type: RequestType
    status: Status
    subject_pseudonym: str
    project_scope: str | None
    received_at: dt.datetime
    deadline: dt.datetime
    extension_reason: str | None
    rejection_reason: str | None
    report: dict | None

    def urgency(self, now: dt.datetime | None = None) -> str | None:
        return urgency(self.status, self.deadline, now or dt.datetime.now(dt.UTC))

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "type": self.type.value,
            "status": self.status.value,
            "subject_pseudonym": self.subject_pseudonym,
            "project_scope": self.project_scope,
            "received_at": self.received_at.isoformat(timespec="seconds"),
            "deadline": self.deadline.isoformat(timespec="seconds"),
            "extended": self.extension_reason is not None,
            "extension_reason": self.extension_reason,
            "rejection_reason": self.rejection_reason,
            "urgency": self.urgency(),
            "report": self.report,
        }


def _row_to_request(row: Any) -> RightsRequest:
    return RightsRequest(
        id=row.id,
        type=RequestType(row.type),
        status=Status(row.status),
        subject_pseudonym=row.subject_pseudonym,
        project_scope=row.project_scope,
        received_at=_utc(row.received_at),
        deadline=_utc(row.deadline),
        extension_reason=row.extension_reason,
        rejection_reason=row.rejection_reason,
        report=row.report,
    )


class UnknownRequest(LookupError):
    pass


def private_directory(path: Path) -> None:
    """Create the folder ``path`` readable by this user only (0700); its parents as usual. An
    existing folder is left as it is: its mode is the deployment's choice."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def private_sqlite_file(url: str) -> None:
    """For a SQLite file database: its folder made 0700 if created here, and the file created
    0600 before SQLite opens it (its -wal and -shm files then get the same mode from SQLite)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    if parsed.database.startswith("file:"):
        return  # a URI filename: SQLite's own options, left as given
    path = Path(parsed.database)
    private_directory(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    if path.stat().st_uid == os.getuid():
        os.chmod(path, 0o600)  # an older, wider file is narrowed too


class RightsRegistry:
    def __init__(self, url: str, secret: bytes):
        private_sqlite_file(url)
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":  # concurrent submissions wait, not fail

            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(connection, _record):  # pragma: no cover - driver callback
                cursor = connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

        self.cipher = IdentityCipher(secret)
        metadata.create_all(self.engine)

    @classmethod
    def from_env(cls, home: HdhHome | None = None) -> RightsRegistry:
        """For clients outside the code location (the portal, the command line)."""
        return RightsRegistryResource(
            url=os.environ.get(RIGHTS_DB_ENV), key=os.environ.get(RIGHTS_KEY_ENV)
        ).registry(home or HdhHome.from_env())

    # -- submission and lookup ------------------------------------------------------------
    def submit(
        self,
        kind: RequestType,
        identity: Identity,
        subject_pseudonym: str,
        free_text: str = "",
        project_scope: str | None = None,
        actor: str = "portal",
    ) -> tuple[str, str]:
        """Store the request durably; return (tracking number, secret token)."""
        token = secrets.token_urlsafe(24)
        received = _now()
        for _ in range(5):  # a colliding random id is retried, never overwritten
            request_id = "HDH-" + "".join(secrets.choice(ID_ALPHABET) for _ in range(10))
            sealed = self.cipher.seal(
                request_id,
                {
                    "family_name": identity.family_name,
                    "given_names": identity.given_names,
                    "birth_date": identity.birth_date.isoformat(),
                    "nir": identity.nir,
                    "email": identity.email,
                },
            )
            try:
                with self.engine.begin() as db:
                    db.execute(
                        requests_table.insert().values(
                            id=request_id,
                            token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                            type=kind.value,
                            status=Status.RECEIVED.value,
                            subject_pseudonym=subject_pseudonym,
                            identity=sealed,
                            free_text=self.cipher.seal(request_id, {"text": free_text})
                            if free_text
                            else None,
                            project_scope=project_scope or None,
                            received_at=received,
                            deadline=initial_deadline(received),
                            updated_at=received,
                        )
                    )
                    self._audit(
                        db,
                        request_id,
                        actor,
                        "submitted",
                        None,
                        Status.RECEIVED,
                        {"type": kind.value},
                    )
                return request_id, token
            except sa.exc.IntegrityError:
                continue
        raise RuntimeError("could not allocate a tracking number")

    def get(self, request_id: str) -> RightsRequest:
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(requests_table).where(requests_table.c.id == request_id)
            ).first()
        if row is None:
            raise UnknownRequest(f"no request {request_id}")
        return _row_to_request(row)

    def status_for(self, request_id: str, token: str) -> RightsRequest | None:
        """What the individual may see: only with the token given at submission."""
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(requests_table).where(requests_table.c.id == request_id)
            ).first()
        expected = row.token_sha256 if row else hashlib.sha256(b"-").hexdigest()
        given = hashlib.sha256((token or "").encode()).hexdigest()
        if not hmac.compare_digest(expected, given) or row is None:
            return None
        return _row_to_request(row)

    def identity(self, request_id: str, actor: str) -> dict:
        """Decrypted identity for verification; the read itself is audited."""
        return self.cipher.open(request_id, self._audited_read(request_id, actor, "identity"))

    def free_text(self, request_id: str, actor: str) -> str:
        """Decrypted free text (for a rectification: what to correct); the read is audited,
        like the identity's, since a person may name themselves or others in it."""
        sealed = self._audited_read(request_id, actor, "free_text")
        return self.cipher.open(request_id, sealed)["text"] if sealed else ""

    def _audited_read(self, request_id: str, actor: str, column: str):
        """One encrypted column of a request, the read recorded as ``<column>_read``."""
        with self.engine.begin() as db:
            row = db.execute(
                sa.select(requests_table.c[column]).where(requests_table.c.id == request_id)
            ).first()
            if row is None:
                raise UnknownRequest(f"no request {request_id}")
            self._audit(db, request_id, actor, f"{column}_read", None, None, None)
        return row[0]

    def list(self, status: Status | None = None) -> list[RightsRequest]:
        query = sa.select(requests_table).order_by(requests_table.c.received_at)
        if status is not None:
            query = query.where(requests_table.c.status == status.value)
        with self.engine.connect() as db:
            return [_row_to_request(r) for r in db.execute(query)]

    def excluded(self) -> list[tuple[str, str, str]]:
        """(pseudonym, request id, type) of objections and erasures once verified: from then
        on the person must not appear, and never again."""
        query = (
            sa.select(
                requests_table.c.subject_pseudonym, requests_table.c.id, requests_table.c.type
            )
            .where(
                requests_table.c.type.in_([RequestType.OBJECTION.value, RequestType.ERASURE.value])
            )
            .where(
                requests_table.c.status.in_(
                    [
                        Status.VERIFIED.value,
                        Status.PROCESSING.value,
                        Status.COMPLETED.value,
                        Status.FAILED.value,
                    ]
                )
            )
            .order_by(requests_table.c.received_at)
        )
        with self.engine.connect() as db:
            return [tuple(row) for row in db.execute(query)]

    def audit(self, request_id: str) -> list[dict]:
        query = (
            sa.select(audit_table)
            .where(audit_table.c.request_id == request_id)
            .order_by(audit_table.c.id)
        )
        with self.engine.connect() as db:
            return [
                {
                    "at": _utc(r.at).isoformat(timespec="seconds"),
                    "actor": r.actor,
                    "action": r.action,
                    "from": r.from_status,
                    "to": r.to_status,
                    "detail": r.detail,
                }
                for r in db.execute(query)
            ]

    def due(self, now: dt.datetime | None = None) -> list[tuple[RightsRequest, str]]:
        """Open requests due within 7 days or overdue, the most urgent first."""
        now = now or dt.datetime.now(dt.UTC)
        flagged = [(r, r.urgency(now)) for r in self.list()]
        return sorted(((r, u) for r, u in flagged if u), key=lambda item: item[0].deadline)

    # -- changes of state ----------------------------------------------------------------
    def verify(self, request_id: str, actor: str) -> RightsRequest:
        return self._move(request_id, Status.VERIFIED, actor, "verified")

    def retry(self, request_id: str, actor: str) -> RightsRequest:
        """A failed request goes back to verified, so processing takes it up again."""
        current = self.get(request_id)
        if current.status is not Status.FAILED:
            raise TransitionRefused(
                f"only a failed request is retried; {request_id} is {current.status.value}"
            )
        return self._move(request_id, Status.VERIFIED, actor, "retried")

    def reject(self, request_id: str, reason: str, actor: str) -> RightsRequest:
        _require(reason, "a rejection needs a reason")
        return self._move(
            request_id, Status.REJECTED, actor, "rejected", {"rejection_reason": reason}
        )

    def start_processing(
        self, request_id: str, actor: str, detail: dict | None = None
    ) -> RightsRequest:
        return self._move(request_id, Status.PROCESSING, actor, "processing", detail=detail)

    def complete(self, request_id: str, report: dict, actor: str) -> RightsRequest:
        return self._move(request_id, Status.COMPLETED, actor, "completed", {"report": report})

    def fail(
        self, request_id: str, reason: str, actor: str, report: dict | None = None
    ) -> RightsRequest:
        detail = {"reason": reason, **({"report": report} if report else {})}
        return self._move(request_id, Status.FAILED, actor, "failed", detail=detail)

    def extend(self, request_id: str, reason: str, actor: str) -> RightsRequest:
        """Two more months, once, with a recorded reason (GDPR art. 12(3))."""
        _require(reason, "an extension needs a reason")
        current = self.get(request_id)
        if current.extension_reason is not None:
            raise TransitionRefused(f"{request_id} was extended already")
        if current.status not in {
            Status.RECEIVED,
            Status.VERIFIED,
            Status.PROCESSING,
            Status.FAILED,
        }:
            raise TransitionRefused(f"a {current.status.value} request cannot be extended")
        new_deadline = extended_deadline(current.received_at.replace(tzinfo=None))
        with self.engine.begin() as db:
            updated = db.execute(
                requests_table.update()
                .where(requests_table.c.id == request_id)
                .where(requests_table.c.extension_reason.is_(None))
                .values(extension_reason=reason, deadline=new_deadline, updated_at=_now())
            )
            if updated.rowcount != 1:
                raise TransitionRefused(f"{request_id} was extended already")
            self._audit(
                db,
                request_id,
                actor,
                "extended",
                None,
                None,
                {"reason": reason, "deadline": new_deadline.isoformat()},
            )
        return self.get(request_id)

    def _move(
        self,
        request_id: str,
        target: Status,
        actor: str,
        action: str,
        values: dict | None = None,
        detail: dict | None = None,
    ) -> RightsRequest:
        current = self.get(request_id)
        check_transition(current.status, target)
        with self.engine.begin() as db:
            updated = db.execute(
                requests_table.update()
                .where(requests_table.c.id == request_id)
                .where(requests_table.c.status == current.status.value)
                .values(status=target.value, updated_at=_now(), **(values or {}))
            )
            if updated.rowcount != 1:  # someone else moved it between our read and write
                raise TransitionRefused(f"{request_id} changed meanwhile; read it again")
            self._audit(db, request_id, actor, action, current.status, target, detail or values)
        return self.get(request_id)

    def attempt(self, request_id: str) -> int:
        """How many times processing started for this request (a retry starts a new attempt)."""
        query = (
            sa.select(sa.func.count())
            .select_from(audit_table)
            .where(audit_table.c.request_id == request_id)
            .where(audit_table.c.action == "processing")
        )
        with self.engine.connect() as db:
            return int(db.execute(query).scalar_one())

    def note(self, request_id: str, actor: str, action: str, detail: dict | None = None) -> None:
        """An audited event that does not change the state (e.g. corrected data attached)."""
        self.get(request_id)
        with self.engine.begin() as db:
            self._audit(db, request_id, actor, action, None, None, detail)

    # -- operators (the DPO's local accounts) --------------------------------------------
    def add_operator(self, username: str, password: str, actor: str) -> None:
        if not OPERATOR_NAME.match(username or ""):
            raise ValueError(
                "an operator name is 2-64 characters: lower-case letters, digits, . _ -"
            )
        if len(password or "") < MIN_PASSWORD_LENGTH:
            raise ValueError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
        values = {"password_hash": hash_password(password), "created_at": _now()}
        with self.engine.begin() as db:
            exists = db.execute(
                sa.select(operators_table.c.username).where(operators_table.c.username == username)
            ).first()
            if exists:  # a reset of the password
                db.execute(
                    operators_table.update()
                    .where(operators_table.c.username == username)
                    .values(**values)
                )
            else:
                db.execute(
                    operators_table.insert().values(username=username, created_by=actor, **values)
                )

    def _password_hash(self, username: str) -> str | None:
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(operators_table.c.password_hash).where(
                    operators_table.c.username == (username or "")[:64]
                )
            ).first()
        return row.password_hash if row else None

    def check_operator(self, username: str, password: str) -> bool:
        """Same cost whether or not the account exists: the timing tells nothing."""
        stored = self._password_hash(username)
        matches = password_matches(password or "", stored or _unknown_operator())
        return matches and stored is not None

    def operator_stamp(self, username: str) -> str | None:
        """A digest of the account's password hash (None when there is no such account): what
        operator sessions are signed with, so a new password or a removal ends them."""
        stored = self._password_hash(username)
        return hashlib.sha256(stored.encode()).hexdigest()[:32] if stored else None

    def remove_operator(self, username: str) -> bool:
        with self.engine.begin() as db:
            deleted = db.execute(
                operators_table.delete().where(operators_table.c.username == username)
            )
        return deleted.rowcount == 1

    def operators(self) -> list[dict]:
        query = sa.select(
            operators_table.c.username, operators_table.c.created_at, operators_table.c.created_by
        ).order_by(operators_table.c.username)
        with self.engine.connect() as db:
            return [
                {
                    "username": r.username,
                    "created_at": _utc(r.created_at).isoformat(timespec="seconds"),
                    "created_by": r.created_by,
                }
                for r in db.execute(query)
            ]

    @staticmethod
    def _audit(db, request_id, actor, action, before, after, detail) -> None:
        db.execute(
            audit_table.insert().values(
                request_id=request_id,
                at=_now(),
                actor=actor,
                action=action,
                from_status=before.value if before else None,
                to_status=after.value if after else None,
                detail=detail,
            )
        )


def _require(text: str, message: str) -> None:
    if not (text or "").strip():
        raise ValueError(message)


@functools.lru_cache(maxsize=8)
def _open(url: str, secret: bytes) -> RightsRegistry:
    return RightsRegistry(url, secret)


class RightsRegistryResource(dg.ConfigurableResource):
    """The registry as a resource. ``url``: its database (SQLite under HDH_HOME when unset);
    ``key``: the identity-encryption secret, given as ``dg.EnvVar`` (the demo key, with its
    warning, when unset)."""

    url: str | None = None
    key: str | None = None

    def registry(self, home: HdhHome) -> RightsRegistry:
        url = self.url
        if not url:
            private_directory(home.rights)
            url = f"sqlite:///{home.rights / 'registry.db'}"
        secret = self.key.encode() if self.key else load_demo_key(home, DEMO_KEY_FILE)
        return _open(url, secret)
