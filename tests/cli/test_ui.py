"""`hdh ui` (what `make ui` runs) serves the Dagster UI with the daemon, on the platform instance."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.dicomweb.servers import free_port
from tests.processes import stop_group

pytestmark = pytest.mark.slow

ASSETS_QUERY = """
{ assetNodes { assetKey { path } groupName description kinds
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } } } }
"""
PRODUCT_QUERY = """
{ assetNodeOrError(assetKey: {path: ["products", "hba1c_trajectory"]}) {
    ... on AssetNode { opVersion dependencyKeys { path }
      metadataEntries { label
        ... on TableColumnLineageMetadataEntry {
          lineage { columnName columnDeps { assetKey { path } columnName } } } } } } }
"""
DAEMONS_QUERY = (
    "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"
)


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/dagster/graphql",  # the gateway's prefix
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is raised as an HTTPError, to be read


def test_ui_serves_asset_graph_with_groups_owners_kinds_and_running_daemon_and_portal(tmp_path):
    port, portal_port, dicomweb_port = free_port(), free_port(), free_port()
    viewer_port, identity_port, gateway_port = free_port(), free_port(), free_port()
    devpi_port, r_port = free_port(), free_port()
    env = {**os.environ, "HDH_HOME": str(tmp_path / "hdh"), "HDH_PSEUDONYM_KEY": "cd" * 32}
    env |= {
        "HDH_DEVPI_URL": f"http://127.0.0.1:{devpi_port}",
        "HDH_R_REPOS_URL": f"http://127.0.0.1:{r_port}",
    }
    env.pop("DAGSTER_HOME", None)
    hdh = str(Path(sys.executable).with_name("hdh"))
    log = (tmp_path / "ui.log").open("w")
    ports = ["--port", str(port), "--portal-port", str(portal_port)]
    process = subprocess.Popen(
        [
            hdh,
            "ui",
            *ports,
            "--dicomweb-port",
            str(dicomweb_port),
            "--viewer-port",
            str(viewer_port),
            "--identity-port",
            str(identity_port),
            "--gateway-port",
            str(gateway_port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        nodes = None
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            try:
                nodes = _graphql(port, ASSETS_QUERY)["assetNodes"]
                if nodes:
                    break
            except OSError:
                pass
            time.sleep(2)
        assert nodes, "the UI did not answer in time:\n" + (tmp_path / "ui.log").read_text()[-3000:]
        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert {"imaging/landed_files", "clinical/landed_files", "claims/events"} <= set(by_key)
        for key, node in by_key.items():
            assert node["groupName"] in {
                "imaging",
                "clinical",
                "claims",
                "gdpr",
                "products",
                "workspaces",
                "packages",
            }, key
            assert node["description"], key
            assert node["owners"], key
            assert node["kinds"], key

        # A SQL product, as a data referent sees it: its upstreams and its column lineage.
        product = _graphql(port, PRODUCT_QUERY)["assetNodeOrError"]
        assert {"/".join(d["path"]) for d in product["dependencyKeys"]} == {
            "clinical/observations",
            "products/diabetes_patients",
        }
        assert product["opVersion"]  # the code version: a hash of the compiled SQL
        (lineage,) = [
            e["lineage"]
            for e in product["metadataEntries"]
            if e["label"] == "dagster/column_lineage"
        ]
        deps = {c["columnName"]: c["columnDeps"] for c in lineage}
        assert deps["hba1c_percent"] == [
            {"assetKey": {"path": ["clinical", "observations"]}, "columnName": "value_quantity"}
        ]

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dagster/", timeout=30) as page:
            assert b"Dagster" in page.read()
        # The rights portal runs beside it (make ui starts both).
        with urllib.request.urlopen(
            f"http://127.0.0.1:{portal_port}/fr/request", timeout=30
        ) as page:
            html = page.read().decode()
        assert "Vos droits sur vos données de santé" in html and 'name="nir"' in html
        # The DPO's pages need a sign-in at the development provider that ui started; no
        # password form of the platform's own (break-glass is off).
        with urllib.request.urlopen(f"http://127.0.0.1:{portal_port}/dpo", timeout=30) as page:
            assert page.url.endswith("/dpo/login")
            html = page.read().decode()
        assert 'id="sign-in"' in html and 'name="password"' not in html
        issuer = f"http://127.0.0.1:{identity_port}"
        discovery = f"{issuer}/.well-known/openid-configuration"
        with urllib.request.urlopen(discovery, timeout=30) as answer:
            assert json.loads(answer.read())["issuer"] == issuer
        printed = (tmp_path / "ui.log").read_text()
        assert "DEVELOPMENT" in printed and "referent / " in printed
        # The gateway in front of the Dagster UI: a page goes to the provider's sign-in, an
        # API call without a session gets 401 (a script cannot follow a sign-in page).
        gateway = f"http://127.0.0.1:{gateway_port}/dagster"
        no_redirect = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as sign_in:
            no_redirect.open(f"{gateway}/", timeout=30)
        assert sign_in.value.code == 302
        assert sign_in.value.headers["Location"].startswith(f"{issuer}/auth?")
        with pytest.raises(urllib.error.HTTPError) as refused:
            no_redirect.open(
                urllib.request.Request(
                    f"{gateway}/graphql",
                    data=json.dumps({"query": "{ version }"}).encode(),
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                ),
                timeout=30,
            )
        assert refused.value.code == 401
        # So does the DICOMweb service, which answers nobody without a token.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(
                f"http://127.0.0.1:{dicomweb_port}/dicom-web/studies", timeout=30
            )
        assert refused.value.code == 401
        # The viewer signs people in at the same provider and holds no token of its own: the
        # same query through its proxy, without a person's token, is refused as well.
        viewer = f"http://127.0.0.1:{viewer_port}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{viewer}/dicom-web/studies", timeout=30)
        assert refused.value.code == 401
        with urllib.request.urlopen(f"{viewer}/app-config.js", timeout=30) as answer:
            config = answer.read()
        assert b'"qidoRoot": "/dicom-web"' in config
        assert f'"authority": "{issuer}"'.encode() in config

        # The projects' package indexes are served beside it: devpi answers, and the R
        # repositories' server answers 404 for a project that has none.
        # (devpi initialises its server folder on first start: wait for it like for the UI)
        deadline, answered = time.monotonic() + 180, False
        while not answered and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{devpi_port}/+api", timeout=30):
                    answered = True
            except OSError:
                time.sleep(2)
        assert answered, "devpi did not answer:\n" + (tmp_path / "ui.log").read_text()[-3000:]
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(
                f"http://127.0.0.1:{r_port}/no-such-project/src/contrib/PACKAGES", timeout=30
            )
        assert missing.value.code == 404

        # The daemon runs beside the webserver, so sensors and schedules tick.
        deadline = time.monotonic() + 120
        healthy = {}
        while time.monotonic() < deadline:
            statuses = _graphql(port, DAEMONS_QUERY)["instance"]["daemonHealth"][
                "allDaemonStatuses"
            ]
            healthy = {s["daemonType"]: s["healthy"] for s in statuses if s["required"]}
            if healthy.get("SENSOR"):
                break
            time.sleep(3)
        assert healthy.get("SENSOR"), healthy
        assert (tmp_path / "hdh" / "dagster" / "dagster.yaml").exists()
    finally:
        stop_group(process)
        log.close()
    assert process.poll() is not None
