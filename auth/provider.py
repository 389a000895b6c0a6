"""Which provider the platform's applications use, asked when a sign-in or a token needs it.

``HDH_OIDC_ISSUER`` set: that provider, always. Unset: the development provider, once ``hdh ui``
(or a test) has started it for this ``HDH_HOME`` (its configuration file under
``HDH_HOME/secrets`` names its issuer); until then, none, and applications refuse sign-ins
rather than open. Read lazily, since the provider may start after the application.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from auth import dev_provider
from auth.settings import OidcSettings

SettingsSource = Callable[[], OidcSettings | None]


class DevProviderSettings:
    """The development provider's settings once it runs for this home (cached once found)."""

    def __init__(self, secrets_dir: Path, settings: OidcSettings):
        self.secrets_dir, self.settings = secrets_dir, settings
        self._found: OidcSettings | None = None
        self._lock = threading.Lock()

    def __call__(self) -> OidcSettings | None:
        with self._lock:
            if self._found is None:
                config = self.secrets_dir / dev_provider.CONFIG_FILE
                try:
                    issuer = json.loads(config.read_text())["issuer"]
                except (OSError, ValueError, KeyError, TypeError):
                    return None
                self._found = dev_provider.dev_settings(self.secrets_dir, issuer, self.settings)
            return self._found


def provider_settings(
    secrets_dir: Path, environ: Mapping[str, str] | None = None
) -> SettingsSource:
    """The settings source of a deployment (see the module docstring)."""
    settings = OidcSettings.from_env(environ)
    if settings.issuer:
        return lambda: settings
    return DevProviderSettings(secrets_dir, settings)
