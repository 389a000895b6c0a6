"""What the deployment tests share: the settings they render and the files those make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hdh_assets.workspaces.kube_objects import objects_from_yaml
from hdh_cli.deployment.render import MANIFESTS, render
from hdh_cli.deployment.settings import DeploymentSettings

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "deploy" / "kubernetes"
# Both ways Spark can run: each renders different objects, all of which must hold.
MODES = [DeploymentSettings(), DeploymentSettings(spark_mode="connect", step_executor="k8s")]


@pytest.fixture(params=MODES, ids=lambda s: f"spark-{s.spark_mode}")
def settings(request: pytest.FixtureRequest) -> DeploymentSettings:
    return request.param


def manifest_objects(files: dict[str, str]) -> list[dict[str, Any]]:
    """Every object of ``manifests/``, read back from the rendered YAML text."""
    return [
        obj
        for name, text in sorted(files.items())
        if name.startswith(f"{MANIFESTS}/")
        for obj in objects_from_yaml(text)
    ]


@pytest.fixture
def files(settings: DeploymentSettings) -> dict[str, str]:
    return render(settings)
