"""A failed request waits for the DPO; an erasure removes the person's earlier access exports."""

from __future__ import annotations

import pytest

from hdh_assets.gdpr.rights import Status, TransitionRefused, validate_submission
from hdh_assets.gdpr.service import pending, remove_access_exports
from resources.home import HdhHome
from resources.rights_registry import RightsRegistry

PERSON = ("Laurent", "Hélène", "2012-02-06", "2 12 02 31 972 987 79", "h@example.fr")


@pytest.fixture
def registry(tmp_path):
    return RightsRegistry(f"sqlite:///{tmp_path / 'registry.db'}", b"s" * 32)


def _filed(registry, kind: str, pseudonym: str) -> str:
    request_type, identity = validate_submission(kind, *PERSON)
    request_id, _ = registry.submit(request_type, identity, pseudonym)
    registry.verify(request_id, "dpo")
    return request_id


def test_a_failed_request_is_not_retaken_until_the_dpo_retries_it(registry, tmp_path):
    home = HdhHome(tmp_path / "hdh")
    request_id = _filed(registry, "erasure", "p1")
    assert pending(registry, home) == [request_id]
    registry.start_processing(request_id, "sensor")
    assert pending(registry, home) == [request_id]  # interrupted: resumed
    registry.fail(request_id, "a check failed", "sensor")
    assert pending(registry, home) == []
    registry.retry(request_id, "dpo")
    assert registry.get(request_id).status is Status.VERIFIED
    assert pending(registry, home) == [request_id]
    with pytest.raises(TransitionRefused, match="only a failed request"):
        registry.retry(request_id, "dpo")
    assert [a["action"] for a in registry.audit(request_id)][-1] == "retried"


def test_an_erasure_removes_the_persons_earlier_access_exports_only(registry, tmp_path):
    home = HdhHome(tmp_path / "hdh")
    exports = home.root / "exports"
    exports.mkdir(parents=True)
    mine = _filed(registry, "access", "p1")
    theirs = _filed(registry, "access", "p2")
    for request_id in (mine, theirs):
        (exports / f"{request_id}.zip").write_bytes(b"PK")
    erasure = registry.get(_filed(registry, "erasure", "p1"))
    assert remove_access_exports(home, registry, erasure) == [mine]
    assert not (exports / f"{mine}.zip").exists() and (exports / f"{theirs}.zip").exists()
