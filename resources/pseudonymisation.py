"""The pseudonymisation key, from configuration; a generated demo key only with a loud warning."""

from __future__ import annotations

import os
import secrets

import dagster as dg

from hdh_assets.pseudonymisation import Pseudonymiser
from resources.home import HdhHome

DEMO_KEY_FILE = "pseudonymisation-demo.key"
DEMO_KEY_WARNING = (
    "HDH_PSEUDONYM_KEY is not set: using a DEMO pseudonymisation key generated under "
    "HDH_HOME/secrets. Pseudonyms made with it are not protected; never use it for real data."
)


def load_demo_key(home: HdhHome, name: str = DEMO_KEY_FILE) -> bytes:
    """Create a demo key on first use, then reuse it so what it derives stays stable."""
    path = home.secrets / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


class PseudonymisationKeyResource(dg.ConfigurableResource):
    """Supplies the keyed :class:`Pseudonymiser` shared by every source."""

    secret_key: str | None = None
    """Hex or text secret of at least 32 bytes; prefer ``secret_key_env`` so it never shows in the UI."""
    secret_key_env: str = "HDH_PSEUDONYM_KEY"
    """The environment variable read for the key when ``secret_key`` is not set."""
    require_configured_key: bool = False
    """Refuse the demo key (set ``HDH_REQUIRE_KEY=1`` in production)."""
    max_date_shift_days: int = 365

    @property
    def uses_demo_key(self) -> bool:
        return not self._configured_secret()

    def _configured_secret(self) -> str | None:
        return self.secret_key or os.environ.get(self.secret_key_env) or None

    def key_bytes(self) -> bytes:
        """The raw key, for worker processes that build their own pseudonymiser."""
        return self._key_bytes()

    def _key_bytes(self) -> bytes:
        secret = self._configured_secret()
        if secret:
            try:
                return bytes.fromhex(secret)
            except ValueError:
                return secret.encode()
        if self.require_configured_key:
            raise dg.DagsterInvariantViolationError(
                "HDH_PSEUDONYM_KEY is required (HDH_REQUIRE_KEY is set) but not configured"
            )
        return load_demo_key(HdhHome.from_env())

    def pseudonymiser(self) -> Pseudonymiser:
        return Pseudonymiser(self._key_bytes(), max_date_shift_days=self.max_date_shift_days)
