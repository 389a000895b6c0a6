"""The whole ``deploy/kubernetes/`` folder as text, written or compared.

``render`` is pure (settings in, file contents out); ``write`` and ``drift`` are the only
functions that touch the disk. The folder is committed: ``hdh deploy kubernetes --check`` (and a
test) fail when it is not what the current settings render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hdh_assets.workspaces.kube_objects import to_yaml
from hdh_cli.deployment import helm, image, kubernetes
from hdh_cli.deployment.settings import DeploymentSettings

VALUES = "values.yaml"
INSTANCE = "dagster.yaml"
DOCKERFILE = "Dockerfile"
DOCKERIGNORE = "Dockerfile.dockerignore"
MANIFESTS = "manifests"
_HEADER = "# Rendered by `hdh deploy kubernetes` from hdh_cli/deployment: do not edit by hand.\n"


class _PlainDumper(yaml.SafeDumper):
    """No anchors and aliases: a shared fragment is written out wherever it is used, as the
    chart and Dagster read it (and a reviewer reads it)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _yaml(data: dict[str, Any], comment: str) -> str:
    body = yaml.dump(
        data, Dumper=_PlainDumper, sort_keys=True, default_flow_style=False, width=10_000
    )
    return f"{_HEADER}# {comment}\n{body}"


def render(settings: DeploymentSettings) -> dict[str, str]:
    """Relative path -> content of every file of the folder."""
    files = {
        VALUES: _yaml(
            helm.helm_values(settings),
            f"helm upgrade --install {settings.release} dagster/dagster "
            f"--namespace {settings.namespace} -f deploy/kubernetes/{VALUES}",
        ),
        INSTANCE: _yaml(
            helm.instance_config(settings),
            "The instance configuration the chart writes for values.yaml (its ConfigMap "
            f"{helm.chart_fullname(settings.release)}-instance); kept here to be validated.",
        ),
        DOCKERFILE: image.dockerfile(settings),
        DOCKERIGNORE: image.dockerignore(),
        image.ENTRYPOINT_FILE: image.entrypoint(),
    }
    for name, objects in kubernetes.manifest_files(settings).items():
        files[f"{MANIFESTS}/{name}"] = _HEADER + to_yaml(objects)
    return files


def write(out: Path, files: dict[str, str]) -> list[str]:
    """Write the files, remove rendered files no longer rendered; the paths changed."""
    changed = drift(out, files)
    for relative in changed:
        path = out / relative
        if relative in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[relative], encoding="utf-8")
        else:
            path.unlink()
    return changed


def _existing(out: Path) -> set[str]:
    """The files of the folder this command owns: the top level and ``manifests/``."""
    found = {p.name for p in out.glob("*") if p.is_file()}
    found |= {f"{MANIFESTS}/{p.name}" for p in (out / MANIFESTS).glob("*.yaml") if p.is_file()}
    return found


def drift(out: Path, files: dict[str, str]) -> list[str]:
    """Paths that differ from the rendering: changed, missing, or present but not rendered."""

    def differs(relative: str) -> bool:
        path = out / relative
        if relative not in files or not path.is_file():
            return True
        return path.read_text(encoding="utf-8") != files[relative]

    return [relative for relative in sorted(set(files) | _existing(out)) if differs(relative)]
