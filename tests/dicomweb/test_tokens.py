"""Bearer tokens: signed, dated, scoped to a project or to every study; the key kept once."""

from __future__ import annotations

import base64
import json
import stat

import pytest

from dicomweb.tokens import KEY_FILE, SECRET_ENV, InvalidToken, Tokens
from resources.home import HdhHome

KEY = b"k" * 32


def test_a_project_token_and_an_operator_token():
    tokens = Tokens(KEY)
    project = tokens.verify(tokens.issue("cardio-imaging", 60))
    assert (project.project, project.all) == ("cardio-imaging", False)
    operator = tokens.verify(tokens.issue(None, 60))
    assert (operator.project, operator.all) == (None, True)


def test_expired_forged_or_malformed_tokens_are_refused():
    tokens = Tokens(KEY)
    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(tokens.issue("p", 10, now=1_000), now=1_010)
    assert tokens.verify(tokens.issue("p", 10, now=1_000), now=1_009).project == "p"
    with pytest.raises(InvalidToken, match="signature"):
        Tokens(b"x" * 32).verify(tokens.issue("p", 60))
    payload, signature = tokens.issue("p", 60).split(".")
    raised = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raised["all"], raised["project"] = True, None  # a project token made an operator's
    forged = base64.urlsafe_b64encode(json.dumps(raised).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="signature"):
        tokens.verify(f"{forged}.{signature}")
    for text in ("", "abc", "a.b.c", "!!!.???"):
        with pytest.raises(InvalidToken):
            tokens.verify(text)


def test_lifetimes_and_project_ids_are_checked():
    tokens = Tokens(KEY)
    for ttl in (0, -5, 10**9):
        with pytest.raises(ValueError):
            tokens.issue("p", ttl)
    with pytest.raises(ValueError):
        tokens.issue("../etc", 60)
    with pytest.raises(ValueError):
        Tokens(b"short")


def test_the_key_is_generated_once_under_secrets(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    home = HdhHome(tmp_path / "hdh").ensure()
    token = Tokens.for_home(home).issue("p", 60)
    key_file = home.secrets / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Tokens.for_home(home).verify(token).project == "p"  # the same key, read again
    monkeypatch.setenv(SECRET_ENV, "a configured secret of at least 32 bytes")
    with pytest.raises(InvalidToken):
        Tokens.for_home(home).verify(token)  # the configured secret wins
