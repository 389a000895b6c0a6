"""The resource that tells assets and sensors where the platform lives."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from resources.home import HdhHome


class HomeResource(dg.ConfigurableResource):
    """``HDH_HOME`` as a resource, so a test or a deployment points the platform elsewhere."""

    root: str

    @property
    def home(self) -> HdhHome:
        return HdhHome(Path(self.root))
