"""The rights registry on SQLite and on the real PostgreSQL server: one code path."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
import sqlalchemy as sa

from hdh_assets.gdpr.rights import RequestType, Status, TransitionRefused, validate_submission
from resources.rights_registry import RightsRegistry, requests_table

SERVER = "postgresql://postgres@127.0.0.1:5432"
SECRET = b"a test secret of at least 32 bytes!!"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry(request, tmp_path):
    if request.param == "sqlite":
        yield RightsRegistry(f"sqlite:///{tmp_path / 'registry.db'}", SECRET)
        return
    name = f"hdh_rights_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(f"{SERVER}/test")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    registry = RightsRegistry(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}", SECRET)
    try:
        yield registry
    finally:
        registry.engine.dispose()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _submit(registry, **overrides):
    fields = dict(
        request_type="objection",
        family_name="Laurent",
        given_names="Hélène",
        birth_date="2012-02-06",
        nir="212023197298779",
        email="helene.laurent0@example.fr",
    )
    fields.update(overrides)
    kind, identity = validate_submission(**fields)
    return registry.submit(kind, identity, "7cdc97de26ca9f3906194ea62e21cbfb", "please stop")


def _stored_bytes(registry) -> bytes:
    with registry.engine.connect() as db:
        rows = db.execute(sa.select(requests_table)).all()
    return repr(rows).encode()


def test_a_request_is_stored_with_its_identity_encrypted_and_an_audit_trail(registry):
    request_id, token = _submit(registry)
    stored = _stored_bytes(registry)
    for secret in (
        b"212023197298779",
        b"Laurent",
        b"helene.laurent0",
        b"please stop",
        token.encode(),
    ):
        assert secret not in stored
    request = registry.get(request_id)
    assert request.status is Status.RECEIVED and request.type is RequestType.OBJECTION
    assert request.deadline - request.received_at >= dt.timedelta(days=28)
    assert registry.identity(request_id, "dpo")["nir"] == "212023197298779"
    assert registry.status_for(request_id, token).id == request_id
    assert registry.status_for(request_id, token + "x") is None
    assert registry.status_for("HDH-NOSUCHREQ", token) is None
    registry.verify(request_id, "dpo")
    registry.extend(request_id, "needs the hospital's confirmation", "dpo")
    with pytest.raises(TransitionRefused):
        registry.extend(request_id, "again", "dpo")
    registry.start_processing(request_id, "sensor")
    registry.complete(request_id, {"assets": ["claims/events"]}, "sensor")
    assert registry.get(request_id).report == {"assets": ["claims/events"]}
    actions = [(e["actor"], e["action"], e["from"], e["to"]) for e in registry.audit(request_id)]
    assert actions == [
        ("portal", "submitted", None, "received"),
        ("dpo", "identity_read", None, None),
        ("dpo", "verified", "received", "verified"),
        ("dpo", "extended", None, None),
        ("sensor", "processing", "verified", "processing"),
        ("sensor", "completed", "processing", "completed"),
    ]


def test_an_identity_sealed_for_one_request_cannot_be_opened_as_another(registry):
    first, _ = _submit(registry)
    second, _ = _submit(registry)
    with registry.engine.connect() as db:
        sealed = db.execute(
            sa.select(requests_table.c.identity).where(requests_table.c.id == first)
        ).scalar_one()
    from cryptography.exceptions import InvalidTag

    with pytest.raises(InvalidTag):
        registry.cipher.open(second, sealed)


def test_two_operators_verifying_at_once_move_it_once(registry):
    request_id, _ = _submit(registry)
    barrier, outcomes = threading.Barrier(2), []

    def verify(actor):
        barrier.wait()
        try:
            registry.verify(request_id, actor)
            outcomes.append("ok")
        except TransitionRefused:
            outcomes.append("refused")

    threads = [threading.Thread(target=verify, args=(a,)) for a in ("dpo-1", "dpo-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "refused"]
    assert [e["action"] for e in registry.audit(request_id)].count("verified") == 1


def test_200_concurrent_submissions_are_all_stored(registry):
    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = list(pool.map(lambda i: _submit(registry, request_type="access")[0], range(200)))
    assert len(set(ids)) == 200
    assert {r.id for r in registry.list(Status.RECEIVED)} == set(ids)


def test_due_lists_open_requests_near_or_past_their_deadline(registry):
    soon, _ = _submit(registry)
    late, _ = _submit(registry)
    done, _ = _submit(registry)
    registry.reject(done, "identity could not be confirmed", "dpo")
    now = registry.get(soon).deadline - dt.timedelta(days=3)
    with registry.engine.begin() as db:
        db.execute(
            requests_table.update()
            .where(requests_table.c.id == late)
            .values(deadline=dt.datetime(2020, 1, 1))
        )
    flagged = {r.id: u for r, u in registry.due(now)}
    assert flagged == {late: "overdue", soon: "due_soon"}
