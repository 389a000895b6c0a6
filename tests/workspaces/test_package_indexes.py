"""A workspace installs packages from its own project's indexes only: pip's index, R's repos
option, the network policy that lets the servers reach them, and nothing more."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from hdh_assets.workspaces.jupyterhub import server_environment
from hdh_assets.workspaces.manifests import PROJECT_LABEL, RenderSettings, render_project
from hdh_assets.workspaces.specs import ProjectSpec, load_specs
from hdh_assets.workspaces.workspace_apps import r_profile
from hdh_assets.workspaces.workspace_layout import R_PROFILE
from package_manager import service
from package_manager.python_index import project_index_url
from package_manager.settings import DEVPI_PORT, R_REPOS_PORT
from resources.home import HdhHome

REPO = Path(__file__).resolve().parents[2]
SETTINGS = RenderSettings()
PROJECTS = ("cardio-imaging", "diabetes-outcomes")


@pytest.fixture(scope="module")
def specs() -> dict[str, ProjectSpec]:
    loaded = load_specs(REPO / "workspaces" / "projects")
    assert sorted(loaded) == list(PROJECTS)
    return loaded


@pytest.fixture(scope="module")
def rendered(specs: dict[str, ProjectSpec]) -> dict[str, list[dict]]:
    return {pid: render_project(spec, SETTINGS) for pid, spec in specs.items()}


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} found"
    return matches[0]


def spawner(objects: list[dict]) -> dict[str, Any]:
    """The KubeSpawner settings of the Hub's config file (each line a Python literal)."""
    config = find(objects, "ConfigMap", "jupyterhub")["data"]["jupyterhub_config.py"]
    values = {}
    for line in config.splitlines():
        if line.startswith("c.KubeSpawner."):
            name, _, literal = line.removeprefix("c.KubeSpawner.").partition(" = ")
            values[name] = ast.literal_eval(literal)
    return values


def server_env(objects: list[dict]) -> dict[str, str]:
    return spawner(objects)["environment"]


def server_labels(pid: str) -> dict[str, str]:
    return {
        PROJECT_LABEL: pid,
        "app.kubernetes.io/name": "jupyterhub-server",
        "app.kubernetes.io/component": "application",
    }


def egress_policies(objects: list[dict], labels: dict[str, str]) -> dict[str, dict]:
    """The policies opening egress for pods with ``labels``, by name (default-deny excepted)."""
    selected = {}
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        wanted = policy["spec"]["podSelector"].get("matchLabels", {})
        opens = "Egress" in policy["spec"]["policyTypes"] and policy["spec"]["egress"]
        if opens and wanted.items() <= labels.items():
            selected[policy["metadata"]["name"]] = policy
    return selected


def repos_of(profile: str) -> list[tuple[str, str]]:
    """The repositories an Rprofile sets with ``options(repos = c(NAME = "URL", ...))``."""
    calls = re.findall(r"options\(\s*repos\s*=\s*c\((.*?)\)\s*\)", profile)
    assert len(calls) == 1, profile
    entries = [e.strip() for e in calls[0].split(",")]
    pairs = [re.fullmatch(r'(\w+)\s*=\s*"([^"]*)"', e) for e in entries]
    assert all(pairs), entries  # every entry a NAME = "URL"
    return [(m.group(1), m.group(2)) for m in pairs if m]


# --- pip ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pid", PROJECTS)
def test_a_members_server_installs_python_packages_from_its_projects_index(
    rendered: dict[str, list[dict]], specs: dict[str, ProjectSpec], pid: str
) -> None:
    env = server_env(rendered[pid])
    assert env["PIP_INDEX_URL"] == f"http://packages.hdh.internal:3141/projects/{pid}/+simple/"
    assert env["PIP_INDEX_URL"] == SETTINGS.project_pip_index(pid)
    assert env["PIP_CONFIG_FILE"] == "/dev/null"  # no pip.conf adds or replaces an index
    assert not {k for k in env if k.startswith(("PIP_EXTRA", "PIP_FIND_LINKS", "UV_"))}
    assert env == server_environment(specs[pid], SETTINGS)  # what the spawner is given


# --- R ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pid", PROJECTS)
def test_the_project_configmap_holds_an_rprofile_with_the_projects_repository_only(
    rendered: dict[str, list[dict]], pid: str
) -> None:
    data = find(rendered[pid], "ConfigMap", "workspace-project")["data"]
    profile = data[R_PROFILE]
    repository = f"http://packages.hdh.internal:3142/{pid}"
    assert repos_of(profile) == [("HDH", repository)]
    assert re.findall(r"https?://[^\s\"']+", profile) == [repository]
    assert "cran.r-project.org" not in profile and "CRAN" not in profile.replace("CRAN-like", "")
    assert profile == r_profile(SETTINGS.project_cran_repository(pid))
    assert server_env(rendered[pid])["HDH_CRAN_MIRROR"] == repository


@pytest.mark.parametrize("pid", PROJECTS)
def test_r_profile_user_points_at_the_mounted_rprofile(
    rendered: dict[str, list[dict]], pid: str
) -> None:
    values = spawner(rendered[pid])
    volumes = {v["name"]: v for v in values["volumes"]}
    mounts = {m["name"]: m for m in values["volume_mounts"]}
    (project_volume,) = [
        name
        for name, v in volumes.items()
        if v.get("configMap", {}).get("name") == "workspace-project"
    ]
    mount = mounts[project_volume]
    assert mount.get("readOnly") is True  # a member cannot rewrite the repository option
    profile_path = values["environment"]["R_PROFILE_USER"]
    assert profile_path == f"{mount['mountPath']}/{R_PROFILE}"
    # the key the path names is in the ConfigMap (no items: every key is a file)
    assert "items" not in volumes[project_volume]["configMap"]
    assert R_PROFILE in find(rendered[pid], "ConfigMap", "workspace-project")["data"]


def test_the_rprofile_is_valid_r_syntax_for_any_repository_url() -> None:
    profile = r_profile("http://packages.hdh.internal:3142/diabetes-outcomes")
    assert profile.count("options(") == 1
    assert profile.strip().splitlines()[-1] == (
        'options(repos = c(HDH = "http://packages.hdh.internal:3142/diabetes-outcomes"))'
    )
    for line in profile.splitlines():
        assert line.startswith(("#", "options(")), line


# --- network ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pid", PROJECTS)
def test_servers_may_reach_the_package_indexes_on_both_ports_and_nothing_else_new(
    rendered: dict[str, list[dict]], specs: dict[str, ProjectSpec], pid: str
) -> None:
    policies = egress_policies(rendered[pid], server_labels(pid))
    expected = {
        "allow-dns",
        "allow-servers-to-hub-api",
        "allow-servers-to-package-proxy",
        "allow-servers-to-data-store",
    }
    if specs[pid].applications.gitlab and SETTINGS.gitlab_cidr:
        expected.add("allow-servers-to-gitlab")
    assert set(policies) == expected

    proxy = policies["allow-servers-to-package-proxy"]
    assert proxy["spec"]["policyTypes"] == ["Egress"]
    assert proxy["spec"]["podSelector"]["matchLabels"] == server_labels(pid)
    assert proxy["spec"]["egress"] == [
        {
            "to": [{"ipBlock": {"cidr": SETTINGS.package_proxy_cidr}}],
            "ports": [{"protocol": "TCP", "port": 3141}, {"protocol": "TCP", "port": 3142}],
        }
    ]
    assert "except" not in proxy["spec"]["egress"][0]["to"][0]["ipBlock"]
    assert SETTINGS.package_proxy_cidr.endswith("/32")  # one host, not a range

    # the ports opened are exactly those of the two index URLs
    env = server_env(rendered[pid])
    url_ports = {urlsplit(env["PIP_INDEX_URL"]).port, urlsplit(env["HDH_CRAN_MIRROR"]).port}
    assert url_ports == set(SETTINGS.package_proxy_ports) == {DEVPI_PORT, R_REPOS_PORT}
    hosts = {urlsplit(env["PIP_INDEX_URL"]).hostname, urlsplit(env["HDH_CRAN_MIRROR"]).hostname}
    assert hosts == {"packages.hdh.internal"}  # one host, the one the policy's address is


@pytest.mark.parametrize("pid", PROJECTS)
def test_only_the_servers_reach_the_package_indexes(
    rendered: dict[str, list[dict]], pid: str
) -> None:
    for policy in (o for o in rendered[pid] if o["kind"] == "NetworkPolicy"):
        peers = [
            peer
            for rule in policy["spec"].get("egress", [])
            for peer in rule.get("to", [])
            if peer.get("ipBlock", {}).get("cidr") == SETTINGS.package_proxy_cidr
        ]
        if peers:
            assert policy["metadata"]["name"] == "allow-servers-to-package-proxy"
        # and no ingress from the package host
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                assert "ipBlock" not in peer


def test_the_policy_follows_the_settings_ports_and_address(specs: dict[str, ProjectSpec]) -> None:
    settings = dataclasses.replace(
        SETTINGS,
        pip_index_url="http://index.example:8141/p/{project}/+simple/",
        cran_mirror_url="http://index.example:8142/r/{project}",
        package_proxy_cidr="192.0.2.7/32",
        package_proxy_ports=(8141, 8142),
    )
    objects = render_project(specs["diabetes-outcomes"], settings)
    proxy = find(objects, "NetworkPolicy", "allow-servers-to-package-proxy")
    assert proxy["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "192.0.2.7/32"}}]
    assert [p["port"] for p in proxy["spec"]["egress"][0]["ports"]] == [8141, 8142]
    env = server_env(objects)
    assert env["PIP_INDEX_URL"] == "http://index.example:8141/p/diabetes-outcomes/+simple/"
    assert repos_of(find(objects, "ConfigMap", "workspace-project")["data"][R_PROFILE]) == [
        ("HDH", "http://index.example:8142/r/diabetes-outcomes")
    ]


# --- two projects, two indexes ------------------------------------------------------------------


def test_two_projects_get_different_indexes(rendered: dict[str, list[dict]]) -> None:
    first, second = (server_env(rendered[pid]) for pid in PROJECTS)
    for key in ("PIP_INDEX_URL", "HDH_CRAN_MIRROR"):
        assert first[key] != second[key]
    for pid in PROJECTS:
        other = next(p for p in PROJECTS if p != pid)
        env = server_env(rendered[pid])
        profile = find(rendered[pid], "ConfigMap", "workspace-project")["data"][R_PROFILE]
        assert pid in env["PIP_INDEX_URL"] and pid in env["HDH_CRAN_MIRROR"] and pid in profile
        assert other not in env["PIP_INDEX_URL"] + env["HDH_CRAN_MIRROR"] + profile


def test_the_workspace_urls_are_those_the_package_manager_serves(
    hdh_home: HdhHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workspace side and the serving side build the per-project URLs independently: with
    the package manager served where the workspaces look, they agree for every project."""
    monkeypatch.setenv("HDH_DEVPI_URL", "http://packages.hdh.internal:3141/")
    monkeypatch.setenv("HDH_R_REPOS_URL", "http://packages.hdh.internal:3142")
    monkeypatch.setenv("HDH_WORKSPACE_SPECS", str(REPO / "workspaces" / "projects"))
    for pid in PROJECTS:
        state = service.project_state(pid, hdh_home, requests=[])
        assert state.python_url == SETTINGS.project_pip_index(pid)
        assert state.python_url == project_index_url("http://packages.hdh.internal:3141", pid)
        assert state.r_url == SETTINGS.project_cran_repository(pid)
        assert state.constraints == ["*"]  # nothing requested: nothing served
