"""Rendered workspaces: strictly valid, locked down, signed-in only, deterministic."""

from __future__ import annotations

import ast
import copy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hdh_assets.workspaces.image import image_definition
from hdh_assets.workspaces.manifests import (
    GRANTS_MOUNT,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PROJECT_LABEL,
    SPEC_DIGEST_ANNOTATION,
    RenderSettings,
    app_urls,
    manifest_digest,
    render_project,
    secret_requirements,
    to_yaml,
)
from hdh_assets.workspaces.specs import ProjectSpec, load_specs
from hdh_assets.workspaces.validation import (
    DEFAULT_KUBERNETES_VERSION,
    ManifestValidationError,
    raise_for_invalid,
    schema_version,
    supported_versions,
    validate_objects,
    validate_uncached,
)

REPO = Path(__file__).resolve().parents[2]
SETTINGS = RenderSettings()


@pytest.fixture(scope="module")
def specs() -> dict[str, ProjectSpec]:
    return load_specs(REPO / "workspaces" / "projects")


@pytest.fixture(scope="module")
def rendered(specs: dict[str, ProjectSpec]) -> dict[str, list[dict]]:
    return {pid: render_project(spec, SETTINGS) for pid, spec in specs.items()}


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} found"
    return matches[0]


def pod_specs(objects: list[dict]) -> Iterator[tuple[str, dict]]:
    for obj in objects:
        if obj["kind"] == "Deployment":
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def policies_selecting(objects: list[dict], labels: dict[str, str], direction: str) -> list[dict]:
    """The NetworkPolicies that apply to pods with ``labels`` for ``Ingress`` or ``Egress``."""
    selected = []
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        wanted = policy["spec"]["podSelector"].get("matchLabels", {})
        if direction in policy["spec"]["policyTypes"] and wanted.items() <= labels.items():
            selected.append(policy)
    return selected


# --- strict validity ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [DEFAULT_KUBERNETES_VERSION, "1.33"])
def test_every_object_of_both_examples_passes_strict_validation(
    rendered: dict[str, list[dict]], version: str
) -> None:
    for objects in rendered.values():
        assert validate_objects(objects, version) == []
        raise_for_invalid(objects, version)


def test_the_default_version_is_the_newest_schema_set_shipped() -> None:
    assert supported_versions()[0] == "1.25"
    assert DEFAULT_KUBERNETES_VERSION == supported_versions()[-1] == "1.37"
    assert schema_version("v1.33.4") == "1.33"
    with pytest.raises(ValueError, match=r"no Kubernetes 1\.38 schemas"):
        schema_version("1.38")
    with pytest.raises(ValueError, match=r"no Kubernetes 1\.9 schemas"):
        schema_version("1.9")  # kubernetes-validate itself compares "1.9" > "1.37" as strings


def broken_objects(objects: list[dict]) -> list[tuple[dict, str]]:
    """Invalid variants of real objects, with the path the error must name."""
    deployment = copy.deepcopy(find(objects, "Deployment", "jupyterhub"))
    deployment["spec"]["template"]["spec"]["containers"][0]["privileged"] = True
    policy = copy.deepcopy(find(objects, "NetworkPolicy", "default-deny"))
    policy["spec"]["podSelector"] = "all"
    claim = copy.deepcopy(find(objects, "PersistentVolumeClaim", "grants"))
    claim["spec"]["resources"]["requests"] = ["100Gi"]
    binding = copy.deepcopy(find(objects, "RoleBinding", "workspace-owner"))
    del binding["roleRef"]
    return [
        (deployment, "spec.template.spec.containers[0]"),
        (policy, "spec.podSelector"),
        (claim, "spec.resources.requests"),
        (binding, "<object>"),
    ]


def test_invalid_objects_are_reported_by_kind_name_and_field(
    rendered: dict[str, list[dict]],
) -> None:
    objects = rendered["diabetes-outcomes"]
    for broken, path in broken_objects(objects):
        errors = validate_objects([broken])
        name = f"{broken['kind']} hdh-ws-diabetes-outcomes/{broken['metadata']['name']}"
        assert errors and all(e.startswith(f"{name}: {path}: ") for e in errors), errors
    with pytest.raises(ManifestValidationError) as caught:
        raise_for_invalid([b for b, _ in broken_objects(objects)])
    assert len(caught.value.errors) >= 4


def test_the_cached_validator_agrees_with_kubernetes_validate(
    rendered: dict[str, list[dict]],
) -> None:
    objects = rendered["diabetes-outcomes"]
    for obj in objects:
        assert validate_uncached(obj, DEFAULT_KUBERNETES_VERSION) is None
    for broken, _ in broken_objects(objects):
        theirs = validate_uncached(broken, DEFAULT_KUBERNETES_VERSION)
        ours = validate_objects([broken])
        assert theirs is not None and theirs in ours


def test_unknown_kinds_and_bad_names_or_labels_are_refused() -> None:
    crd = {"apiVersion": "example.org/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    assert validate_objects([crd]) == [
        "Gadget g: no schema for example.org/v1 Gadget in Kubernetes 1.37"
    ]
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "Bad_Name",
            "namespace": "n",
            "labels": {"hdh.platform/project": "a b"},
        },
    }
    assert validate_objects([config]) == [
        "ConfigMap n/Bad_Name: metadata.name: 'Bad_Name' is not a valid name",
        "ConfigMap n/Bad_Name: metadata.labels.hdh.platform/project: 'a b' is not a label value",
    ]


# --- what a workspace is made of ------------------------------------------------------------


def test_the_required_objects_are_present(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["diabetes-outcomes"]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    expected = {
        ("Namespace", "hdh-ws-diabetes-outcomes"),
        ("ResourceQuota", "workspace-quota"),
        ("LimitRange", "workspace-limits"),
        ("NetworkPolicy", "default-deny"),
        ("NetworkPolicy", "allow-dns"),
        ("NetworkPolicy", "allow-gateway-to-hub"),
        ("NetworkPolicy", "allow-hub-api-from-servers"),
        ("NetworkPolicy", "allow-hub-egress"),
        ("NetworkPolicy", "allow-servers-from-hub"),
        ("NetworkPolicy", "allow-servers-to-hub-api"),
        ("NetworkPolicy", "allow-servers-to-package-proxy"),
        ("NetworkPolicy", "allow-servers-to-data-store"),
        ("ServiceAccount", "workspace"),
        ("Role", "workspace-owner"),
        ("RoleBinding", "workspace-owner"),
        ("Role", "workspace-analyst"),
        ("RoleBinding", "workspace-analyst"),
        ("PersistentVolumeClaim", "work"),
        ("PersistentVolumeClaim", "grants"),
        ("PersistentVolume", "hdh-ws-diabetes-outcomes-grants"),
        ("ConfigMap", "workspace-image"),
        ("ConfigMap", "jupyterhub"),
        ("ServiceAccount", "jupyterhub"),
        ("Role", "jupyterhub"),
        ("RoleBinding", "jupyterhub"),
        ("PersistentVolumeClaim", "jupyterhub-db"),
        ("Deployment", "jupyterhub"),
        ("Service", "jupyterhub"),
        ("Ingress", "workspace"),
    }
    assert expected <= names
    assert ("Role", "workspace-viewer") not in names  # no viewer in this team: no empty binding
    # One way in: no application of its own, no oauth2-proxy any more.
    assert {n for k, n in names if k in ("Deployment", "Service")} == {"jupyterhub"}
    assert "oauth2-proxy" not in to_yaml(objects)


def test_rstudio_only_when_enabled(
    specs: dict[str, ProjectSpec], rendered: dict[str, list[dict]]
) -> None:
    for pid, wanted in (("cardio-imaging", False), ("diabetes-outcomes", True)):
        files = find(rendered[pid], "ConfigMap", "workspace-image")["data"]
        assert ("jupyter-rsession-proxy>=2.2" in files["requirements.txt"]) is wanted
        assert ("rstudio-server.deb" in files["Dockerfile"]) is wanted
        assert spawner(rendered[pid])["cmd"] == ["jupyterhub-singleuser"]
    assert 'c.Spawner.default_url = "/lab"' in hub_config(rendered["diabetes-outcomes"])
    rstudio_only = specs["diabetes-outcomes"].model_copy(
        update={
            "applications": specs["diabetes-outcomes"].applications.model_copy(
                update={"jupyterlab": False}
            )
        }
    )
    objects = render_project(rstudio_only, SETTINGS)
    assert 'c.Spawner.default_url = "/rstudio/"' in hub_config(objects)
    assert validate_objects(objects) == []


def test_every_object_is_labelled_for_pruning_and_carries_the_spec_digest(
    specs: dict[str, ProjectSpec], rendered: dict[str, list[dict]]
) -> None:
    for pid, objects in rendered.items():
        for obj in objects:
            meta = obj["metadata"]
            assert meta["labels"][MANAGED_BY_LABEL] == MANAGED_BY
            assert meta["labels"][PROJECT_LABEL] == pid
            assert meta["annotations"][SPEC_DIGEST_ANNOTATION] == specs[pid].digest
            if obj["kind"] not in ("Namespace", "PersistentVolume"):
                assert meta["namespace"] == f"hdh-ws-{pid}"


def test_the_namespace_enforces_restricted_pod_security(rendered: dict[str, list[dict]]) -> None:
    labels = find(rendered["cardio-imaging"], "Namespace", "hdh-ws-cardio-imaging")["metadata"][
        "labels"
    ]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_only_the_hub_gets_an_api_token_and_only_to_start_servers(
    rendered: dict[str, list[dict]],
) -> None:
    for objects in rendered.values():
        assert find(objects, "ServiceAccount", "workspace")["automountServiceAccountToken"] is False
        assert dict(pod_specs(objects)).keys() == {"jupyterhub"}
        hub = dict(pod_specs(objects))["jupyterhub"]
        assert hub["serviceAccountName"] == "jupyterhub"
        assert hub["automountServiceAccountToken"] is True  # KubeSpawner starts the servers
        rules = find(objects, "Role", "jupyterhub")["rules"]
        assert {r for rule in rules for r in rule["resources"]} == {
            "pods",
            "events",
            "persistentvolumeclaims",
        }
        assert all(rule["apiGroups"] == [""] for rule in rules)
        assert find(objects, "RoleBinding", "jupyterhub")["roleRef"]["kind"] == "Role"
        servers = spawner(objects)  # members' servers: the token-less account
        assert servers["service_account"] == "workspace"
        assert servers["automount_service_account_token"] is False


def test_every_container_is_restricted_and_sized(rendered: dict[str, list[dict]]) -> None:
    count = 0
    for objects in rendered.values():
        servers = spawner(objects)  # the members' servers, as KubeSpawner makes them
        context = servers["container_security_context"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsNonRoot"] is True and context["runAsUser"] == servers["uid"] > 0
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert servers["pod_security_context"]["runAsNonRoot"] is True
        assert servers["cpu_limit"] == servers["cpu_guarantee"] > 0
        assert servers["mem_limit"] == servers["mem_guarantee"] > 0
        for name, pod in pod_specs(objects):
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
            for volume in pod["volumes"]:
                assert set(volume) - {"name"} <= {"persistentVolumeClaim", "configMap", "secret"}
            for container in pod["containers"]:
                count += 1
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, name
                assert context["capabilities"] == {"drop": ["ALL"]}, name
                assert context["runAsNonRoot"] is True and context["runAsUser"] > 0, name
                assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
                resources = container["resources"]
                assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert count == 4  # each project's Hub and its proxy


def test_grants_are_mounted_read_only_from_this_projects_volume(
    rendered: dict[str, list[dict]],
) -> None:
    objects = rendered["diabetes-outcomes"]
    volume = find(objects, "PersistentVolume", "hdh-ws-diabetes-outcomes-grants")["spec"]
    assert volume["accessModes"] == ["ReadOnlyMany"] and volume["csi"]["readOnly"] is True
    assert volume["claimRef"] == {"namespace": "hdh-ws-diabetes-outcomes", "name": "grants"}
    assert (
        volume["csi"]["volumeAttributes"]["share"]
        == "/exports/hdh/workspaces/diabetes-outcomes/grants"
    )
    claim = find(objects, "PersistentVolumeClaim", "grants")["spec"]
    assert claim["accessModes"] == ["ReadOnlyMany"]
    assert claim["volumeName"] == "hdh-ws-diabetes-outcomes-grants"
    servers = spawner(objects)
    assert {
        "name": "grants",
        "persistentVolumeClaim": {"claimName": "grants", "readOnly": True},
    } in (servers["volumes"])
    assert [m for m in servers["volume_mounts"] if m["name"] == "grants"] == [
        {"name": "grants", "mountPath": GRANTS_MOUNT, "readOnly": True}
    ]
    for _, pod in pod_specs(objects):  # the Hub never sees the data
        assert all(
            v.get("persistentVolumeClaim", {}).get("claimName") != "grants" for v in pod["volumes"]
        )


def test_the_quota_adds_every_members_server_and_the_hub(rendered: dict[str, list[dict]]) -> None:
    hard = find(rendered["diabetes-outcomes"], "ResourceQuota", "workspace-quota")["spec"]["hard"]
    # three members' servers at 2 cpu / 8Gi plus the Hub and its proxy at 200m / 256Mi
    assert hard["requests.cpu"] == hard["limits.cpu"] == "6400m"
    assert hard["requests.memory"] == hard["limits.memory"] == "25088Mi"
    assert hard["requests.storage"] == "151Gi"  # 50Gi of work + 100Gi of grants + 1Gi of Hub db
    assert hard["services.loadbalancers"] == hard["services.nodeports"] == "0"
    assert hard["pods"] == "4" and hard["persistentvolumeclaims"] == "3"
    cardio = find(rendered["cardio-imaging"], "ResourceQuota", "workspace-quota")["spec"]["hard"]
    assert cardio["requests.cpu"] == "12400m" and cardio["pods"] == "4"


def test_roles_grow_from_viewer_to_owner_and_nobody_reads_secrets(
    specs: dict[str, ProjectSpec], rendered: dict[str, list[dict]]
) -> None:
    objects = rendered["cardio-imaging"]

    def permissions(role: str) -> set[tuple[str, str, str]]:
        rules = find(objects, "Role", f"workspace-{role}")["rules"]
        return {
            (g, r, v)
            for rule in rules
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }

    viewer, analyst, owner = (permissions(r) for r in ("viewer", "analyst", "owner"))
    assert viewer < analyst < owner
    assert not any(v in {"create", "update", "patch", "delete"} for _, _, v in viewer)
    assert not any(r == "secrets" or r.endswith("/exec") for _, r, _ in owner)
    for member in specs["cardio-imaging"].members:
        binding = find(objects, "RoleBinding", f"workspace-{member.role}")
        assert binding["roleRef"]["name"] == f"workspace-{member.role}"
        assert {
            "kind": "User",
            "apiGroup": "rbac.authorization.k8s.io",
            "name": member.user,
        } in binding["subjects"]


# --- sign-in: JupyterHub in front of every server ------------------------------------------


def hub_config(objects: list[dict]) -> str:
    return find(objects, "ConfigMap", "jupyterhub")["data"]["jupyterhub_config.py"]


def spawner(objects: list[dict]) -> dict[str, Any]:
    """The KubeSpawner settings of the Hub's config (each line a literal)."""
    values = {}
    for line in hub_config(objects).splitlines():
        if line.startswith("c.KubeSpawner."):
            name, _, literal = line.removeprefix("c.KubeSpawner.").partition(" = ")
            values[name] = ast.literal_eval(literal)
    return values


def server_labels(pid: str) -> dict[str, str]:
    return {
        PROJECT_LABEL: pid,
        "app.kubernetes.io/name": "jupyterhub-server",
        "app.kubernetes.io/component": "application",
    }


@pytest.mark.parametrize("pid", ["cardio-imaging", "diabetes-outcomes"])
def test_the_hub_signs_in_the_projects_group_only_at_the_provider(
    specs: dict[str, ProjectSpec], rendered: dict[str, list[dict]], pid: str
) -> None:
    objects = rendered[pid]
    config = hub_config(objects)
    compile(config, "jupyterhub_config.py", "exec")  # valid Python
    assert "c.JupyterHub.authenticator_class = 'generic-oauth'" in config
    assert 'c.GenericOAuthenticator.client_id = "hdh-jupyterhub"' in config
    assert f'ISSUER = "{SETTINGS.oidc_issuer_url}"' in config
    assert "/.well-known/openid-configuration" in config
    assert "c.GenericOAuthenticator.authorize_url = provider['authorization_endpoint']" in config
    assert (
        f'c.GenericOAuthenticator.allowed_groups = {{"project:{pid}:member"}}' in config
    )  # its own group, no other project's
    assert 'c.GenericOAuthenticator.auth_state_groups_key = "oauth_user.groups"' in config
    assert 'c.GenericOAuthenticator.username_claim = "preferred_username"' in config
    assert 'scope = ["openid", "profile", "email", "groups"]' in config
    assert "c.GenericOAuthenticator.admin_groups = set()" in config
    assert "c.Authenticator.allow_all = False" in config
    callback = f"https://jupyterhub-{pid}.{SETTINGS.public_domain}/hub/oauth_callback"
    assert f'oauth_callback_url = "{callback}"' in config
    # Secrets: from the environment, set from the Secret; nothing literal anywhere.
    assert 'client_secret = os.environ["OAUTH_CLIENT_SECRET"]' in config
    text = to_yaml(objects).lower()
    assert "password" not in text
    assert not any(o["kind"] == "Secret" for o in objects)
    hub = dict(pod_specs(objects))["jupyterhub"]
    for container in hub["containers"]:
        for variable in container.get("env", []):
            if any(word in variable["name"] for word in ("SECRET", "TOKEN")):
                assert "value" not in variable, variable
                assert variable["valueFrom"]["secretKeyRef"]["name"] == "jupyterhub"
    backends = {
        path["backend"]["service"]["name"]
        for rule in find(objects, "Ingress", "workspace")["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {"jupyterhub"}
    assert find(objects, "Service", "jupyterhub")["spec"]["type"] == "ClusterIP"
    rollout = find(objects, "Deployment", "jupyterhub")["spec"]["template"]["metadata"]
    assert rollout["annotations"]["hdh.platform/config-digest"]  # a new config restarts it


def test_the_sign_in_follows_the_platforms_oidc_settings() -> None:
    from hdh_assets.workspaces.config import render_settings

    settings = render_settings(
        {
            "HDH_OIDC_ISSUER": "https://login.example.org/realms/x",
            "HDH_OIDC_GROUPS_CLAIM": "roles",
            "HDH_OIDC_PROJECT_GROUP": "ws-{project}",
            "HDH_OIDC_JUPYTERHUB_CLIENT_ID": "hub-client",
        }
    )
    spec = load_specs(REPO / "workspaces" / "projects")["cardio-imaging"]
    config = hub_config(render_project(spec, settings))
    assert 'ISSUER = "https://login.example.org/realms/x"' in config
    assert 'allowed_groups = {"ws-cardio-imaging"}' in config
    assert 'auth_state_groups_key = "oauth_user.roles"' in config
    assert 'client_id = "hub-client"' in config
    default = render_settings({})
    assert default.oidc_issuer_url == SETTINGS.oidc_issuer_url  # the dev provider stays local
    assert default.member_group_template == "project:{project}:member"


@pytest.mark.parametrize("pid", ["cardio-imaging", "diabetes-outcomes"])
def test_servers_accept_traffic_only_from_the_hub(
    rendered: dict[str, list[dict]], pid: str
) -> None:
    objects = rendered[pid]
    labels = spawner(objects)["extra_labels"]
    assert labels == server_labels(pid)
    hub_labels = find(objects, "Deployment", "jupyterhub")["spec"]["template"]["metadata"]["labels"]
    hub_selector = {
        "podSelector": {
            "matchLabels": {
                PROJECT_LABEL: pid,
                "app.kubernetes.io/name": "jupyterhub",
                "app.kubernetes.io/component": "hub",
            }
        }
    }
    peers = [
        peer
        for policy in policies_selecting(objects, labels, "Ingress")
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
    ]
    assert peers == [hub_selector]
    sources = [
        (peer, [p["port"] for p in rule["ports"]])
        for policy in policies_selecting(objects, hub_labels, "Ingress")
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
    ]
    gateway = {
        "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": SETTINGS.gateway_namespace}
        },
        "podSelector": {"matchLabels": dict(SETTINGS.gateway_pod_labels)},
    }
    assert (gateway, [8000]) in sources  # the gateway reaches the proxy, not the Hub's API
    assert {json_key(peer) for peer, ports in sources if ports == [8081]} == {
        json_key({"podSelector": {"matchLabels": labels}}),
        json_key(hub_selector),
    }
    assert len(sources) == 3


def json_key(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=True)


def test_default_deny_then_dns_package_proxy_and_data_store(
    rendered: dict[str, list[dict]],
) -> None:
    objects = rendered["cardio-imaging"]
    deny = find(objects, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [],
    }
    dns = find(objects, "NetworkPolicy", "allow-dns")["spec"]["egress"][0]
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    lab = server_labels("cardio-imaging")
    egress = {
        peer["ipBlock"]["cidr"]
        for policy in policies_selecting(objects, lab, "Egress")
        for rule in policy["spec"]["egress"]
        for peer in rule["to"]
        if "ipBlock" in peer
    }
    assert egress == {SETTINGS.package_proxy_cidr, SETTINGS.data_store_cidr}
    hub = find(objects, "Deployment", "jupyterhub")["spec"]["template"]["metadata"]["labels"]
    hub_egress = {
        peer["ipBlock"]["cidr"]
        for policy in policies_selecting(objects, hub, "Egress")
        for rule in policy["spec"]["egress"]
        for peer in rule["to"]
        if "ipBlock" in peer
    }
    assert hub_egress == {SETTINGS.kube_api_cidr}  # KubeSpawner, and nothing else outside


def test_gitlab_egress_only_when_configured(specs: dict[str, ProjectSpec]) -> None:
    spec = specs["cardio-imaging"]
    assert spec.applications.gitlab
    names = {o["metadata"]["name"] for o in render_project(spec, SETTINGS)}
    assert "allow-servers-to-gitlab" not in names
    with_gitlab = RenderSettings(gitlab_cidr="10.40.0.5/32")
    objects = render_project(spec, with_gitlab)
    assert find(objects, "NetworkPolicy", "allow-servers-to-gitlab")
    assert validate_objects(objects) == []


def test_every_referenced_secret_is_announced(
    specs: dict[str, ProjectSpec], rendered: dict[str, list[dict]]
) -> None:
    for pid, objects in rendered.items():
        referenced: dict[str, set[str]] = {}
        assert "secret" not in json_key(spawner(objects)).lower()  # servers hold none
        for _, pod in pod_specs(objects):
            for container in pod["containers"]:
                for variable in container.get("env", []):
                    ref = variable.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        referenced.setdefault(ref["name"], set()).add(ref["key"])
            for volume in pod["volumes"]:
                if "secret" in volume:
                    keys = {item["key"] for item in volume["secret"].get("items", [])}
                    referenced.setdefault(volume["secret"]["secretName"], set()).update(keys)
        announced = {name: set(keys) for name, keys in secret_requirements(specs[pid]).items()}
        assert referenced == announced
        assert not any(o["kind"] == "Secret" for o in objects)


def test_the_image_is_the_one_of_the_approved_packages(
    specs: dict[str, ProjectSpec], rendered: dict[str, list[dict]]
) -> None:
    spec, objects = specs["diabetes-outcomes"], rendered["diabetes-outcomes"]
    image = image_definition(spec.packages.python, spec.packages.r, rstudio=True)
    config = find(objects, "ConfigMap", "workspace-image")
    assert config["data"] == image.files()
    reference = image.reference(SETTINGS.registry)
    assert reference.endswith(f":{image.digest}")
    assert (
        spawner(objects)["image"]
        == reference
        == config["metadata"]["annotations"]["hdh.platform/image"]
    )
    hub = find(objects, "Deployment", "jupyterhub")["spec"]["template"]["metadata"]
    assert hub["annotations"]["hdh.platform/image"] == reference  # a new image restarts the Hub


def test_app_urls_match_the_ingress(
    specs: dict[str, ProjectSpec], rendered: dict[str, list[dict]]
) -> None:
    urls = app_urls(specs["diabetes-outcomes"], SETTINGS)
    hosts = [
        r["host"]
        for r in find(rendered["diabetes-outcomes"], "Ingress", "workspace")["spec"]["rules"]
    ]
    assert hosts == ["jupyterhub-diabetes-outcomes.workspaces.hdh.example"]
    assert urls == {
        "jupyterlab": f"https://{hosts[0]}/user-redirect/lab",
        "rstudio": f"https://{hosts[0]}/user-redirect/rstudio/",
    }
    assert list(app_urls(specs["cardio-imaging"], SETTINGS)) == ["jupyterlab"]


# --- determinism ----------------------------------------------------------------------------


def test_rendering_twice_gives_identical_yaml_and_digest(specs: dict[str, ProjectSpec]) -> None:
    for spec in specs.values():
        first, second = render_project(spec, SETTINGS), render_project(spec, RenderSettings())
        assert to_yaml(first) == to_yaml(second)
        assert manifest_digest(first) == manifest_digest(second)
        shuffled = list(first)
        random.Random(3).shuffle(shuffled)
        assert to_yaml(shuffled) == to_yaml(first)
        assert manifest_digest(shuffled) == manifest_digest(first)
        assert list(yaml.safe_load_all(to_yaml(first))) == first


def test_a_changed_spec_changes_the_digest(specs: dict[str, ProjectSpec]) -> None:
    spec = specs["cardio-imaging"]
    more_memory = spec.model_copy(
        update={"compute": spec.compute.model_copy(update={"memory": "32Gi"})}
    )
    assert manifest_digest(render_project(more_memory)) != manifest_digest(render_project(spec))


def test_the_yaml_is_in_apply_order_with_readable_files(rendered: dict[str, list[dict]]) -> None:
    text = to_yaml(rendered["diabetes-outcomes"])
    kinds = [doc["kind"] for doc in yaml.safe_load_all(text)]
    assert kinds[0] == "Namespace" and kinds[-1] == "Ingress"
    assert kinds.index("PersistentVolumeClaim") < kinds.index("Deployment")
    assert text.count("\n---\n") == len(kinds) - 1
    assert "  Dockerfile: |\n    # syntax=docker/dockerfile:1\n" in text
