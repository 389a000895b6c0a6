"""Where workspace specs live and where manifests go, chosen by configuration.

``HDH_WORKSPACE_SPECS``: the specs folder (default ``workspaces/projects`` of the working
directory; approvals are read from ``approvals.yaml`` beside it). ``HDH_KUBECONFIG`` (and
``HDH_KUBE_CONTEXT``): deliver to a cluster by server-side apply instead of the GitOps
repository ``HDH_HOME/gitops``. ``HDH_KUBERNETES_VERSION``: the version manifests are validated
against. The single sign-on settings (``HDH_OIDC_ISSUER``, ``HDH_OIDC_GROUPS_CLAIM``,
``HDH_OIDC_PROJECT_GROUP``, ``HDH_OIDC_SCOPES``, ``HDH_OIDC_JUPYTERHUB_CLIENT_ID``) are those of
:mod:`auth.settings`, so every project's Hub trusts the provider the platform does.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from auth.settings import OidcSettings
from hdh_assets.workspaces.delivery import DeliveryTarget, delivery_target
from hdh_assets.workspaces.manifests import RenderSettings
from hdh_assets.workspaces.specs import (
    DEFAULT_SPECS_DIR,
    ProjectSpec,
    SpecError,
    is_expired,
    load_specs_report,
    spec_files,
)

SPECS_ENV = "HDH_WORKSPACE_SPECS"
KUBECONFIG_ENV = "HDH_KUBECONFIG"
KUBE_CONTEXT_ENV = "HDH_KUBE_CONTEXT"
KUBERNETES_VERSION_ENV = "HDH_KUBERNETES_VERSION"


EXAMPLE_SPECS = Path(__file__).resolve().parents[2] / DEFAULT_SPECS_DIR


def specs_dir() -> Path:
    """``HDH_WORKSPACE_SPECS``, else ``workspaces/projects`` here, else the repository's
    example projects (what ``make demo`` provisions from any working directory)."""
    configured = os.environ.get(SPECS_ENV)
    if configured:
        return Path(configured).resolve()
    local = DEFAULT_SPECS_DIR.resolve()
    return local if local.exists() else EXAMPLE_SPECS


def render_settings(environ: Mapping[str, str] | None = None) -> RenderSettings:
    """The rendering defaults, with the Kubernetes version and the sign-in settings of the
    environment; without ``HDH_OIDC_ISSUER`` the cluster's provider default stays (the
    development provider on this machine is not reachable from a cluster)."""
    env = os.environ if environ is None else environ
    oidc = OidcSettings.from_env(env)
    settings = replace(
        RenderSettings(),
        member_group_template=oidc.project_group,
        oidc_groups_claim=oidc.groups_claim,
        oidc_scopes=tuple(oidc.scopes),
        jupyterhub_client_id=oidc.client("jupyterhub").client_id,
    )
    if oidc.issuer:
        settings = replace(settings, oidc_issuer_url=oidc.issuer)
    version = env.get(KUBERNETES_VERSION_ENV)
    return replace(settings, kubernetes_version=version) if version else settings


def target_for(home_root: Path, repair: bool = False) -> DeliveryTarget:
    kubeconfig = os.environ.get(KUBECONFIG_ENV)
    return delivery_target(
        home_root,
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
        context=os.environ.get(KUBE_CONTEXT_ENV),
        repair=repair,
    )


def spec_ids(folder: Path | None = None) -> list[str]:
    """Projects that have a spec file, valid or not: an invalid spec never decommissions a
    running workspace, only a removed or expired one does."""
    folder = folder or specs_dir()
    return sorted(p.stem for p in spec_files(folder)) if folder.exists() else []


def current_specs(
    folder: Path | None = None, today: dt.date | None = None
) -> tuple[dict[str, ProjectSpec], dict[str, ProjectSpec], list[SpecError]]:
    """(live specs, expired specs, refused files) of the specs folder."""
    folder = folder or specs_dir()
    if not folder.exists():
        return {}, {}, []
    specs, errors = load_specs_report(folder)
    today = today or dt.date.today()
    live = {k: s for k, s in specs.items() if not is_expired(s, today)}
    expired = {k: s for k, s in specs.items() if is_expired(s, today)}
    return live, expired, errors


def spec_of(project: str, folder: Path | None = None) -> ProjectSpec:
    """The validated spec of one project, or the reason it is refused (file, field, reason)."""
    folder = folder or specs_dir()
    specs, errors = load_specs_report(folder)
    for error in errors:
        if any(Path(f).stem == project for f in error.files):
            raise error
    if project not in specs:
        raise LookupError(f"no spec for project {project!r} in {folder} (removed: decommission it)")
    return specs[project]
