"""One platform home for the single sign-on test: the synthetic sample's DICOM batch ingested
(no Dagster, no Spark) and the example project ``cardio-imaging`` (claire.martin's, at the
development provider) granted a few of its studies; then ``hdh ui`` started once on it, on free
ports, with every application it runs (provider, portal, DICOMweb, viewer, Dagster, gateway)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import polars as pl
import pytest

from auth import dev_provider
from resources.home import HdhHome
from tests.conftest import TEST_KEY
from tests.dicomweb.conftest import SAMPLE, ingest
from tests.dicomweb.test_access import grant
from tests.oidc_fixtures import free_port, require_node
from tests.processes import stop_group
from viewer.server import DIST

PROJECT = dev_provider.EXAMPLE_PROJECT  # claire.martin's project
UI_SECONDS = 240  # the code location loads on a busy machine


@dataclass(frozen=True)
class SsoHome:
    home: HdhHome
    studies: frozenset[str]  # every stored study
    granted: frozenset[str]  # the project's


@dataclass(frozen=True)
class Platform:
    home: HdhHome
    studies: frozenset[str]
    granted: frozenset[str]
    issuer: str
    portal: str
    dicomweb: str
    viewer: str
    gateway: str
    passwords: dict[str, str]
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@pytest.fixture(scope="module")
def sso_home(tmp_path_factory: pytest.TempPathFactory, sample_root: Path) -> SsoHome:
    root = tmp_path_factory.mktemp("sso")
    home = HdhHome(root / "hdh").ensure()
    (batch,) = (sample_root / "landing" / "dicom").iterdir()
    index = ingest(home, {SAMPLE: batch})[SAMPLE]
    studies = index.select("study_instance_uid", "subject_pseudonym").unique()
    everything = sorted(studies["study_instance_uid"].unique())
    chosen = everything[:2]
    assert len(everything) > len(chosen)
    grant(
        home,
        PROJECT,
        "imaging_clinical_linkage",
        studies.filter(pl.col("study_instance_uid").is_in(chosen)),
        "subject_pseudonym",
    )
    return SsoHome(home, frozenset(everything), frozenset(chosen))


def _ready(http: httpx.Client, urls: dict[str, str]) -> set[str]:
    """The names of the applications that do not answer yet."""
    waiting = set()
    for name, url in urls.items():
        try:
            answer = http.get(url)
            if answer.status_code != 200:
                waiting.add(name)
        except httpx.TransportError:
            waiting.add(name)
    return waiting


@pytest.fixture(scope="module")
def platform(sso_home: SsoHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    require_node()
    if not (DIST / "index.html").is_file():
        pytest.fail(f"the OHIF viewer is not installed ({DIST}): run `make viewer-deps`")
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("sso-ui")
    ports = {
        "port": free_port(),
        "portal-port": free_port(),
        "dicomweb-port": free_port(),
        "viewer-port": free_port(),
        "identity-port": free_port(),
        "gateway-port": free_port(),
    }
    env = {**os.environ, "HDH_HOME": str(sso_home.home.root), "HDH_PSEUDONYM_KEY": TEST_KEY}
    for name in ("DAGSTER_HOME", "HDH_OIDC_ISSUER"):
        env.pop(name, None)
    hdh = str(Path(sys.executable).with_name("hdh"))
    options = [arg for name, port in ports.items() for arg in (f"--{name}", str(port))]
    log_path = tmp / "ui.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [hdh, "ui", *options, "--no-packages"],  # the package indexes play no part here
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = "http://127.0.0.1:"
    issuer = f"{base}{ports['identity-port']}"
    site = Platform(
        home=sso_home.home,
        studies=sso_home.studies,
        granted=sso_home.granted,
        issuer=issuer,
        portal=f"{base}{ports['portal-port']}",
        dicomweb=f"{base}{ports['dicomweb-port']}/dicom-web",
        viewer=f"{base}{ports['viewer-port']}",
        gateway=f"{base}{ports['gateway-port']}",
        passwords={},
        log=log_path,
    )
    try:
        urls = {
            "provider": f"{issuer}/.well-known/openid-configuration",
            "portal": f"{site.portal}/dpo/login",
            "viewer": f"{site.viewer}/app-config.js",
            "gateway": f"{site.gateway}/",
            "dagster": f"{base}{ports['port']}/dagster/server_info",
        }
        deadline = time.monotonic() + UI_SECONDS
        waiting = set(urls)
        with httpx.Client(timeout=5) as http:
            while waiting and time.monotonic() < deadline:
                assert process.poll() is None, f"hdh ui ended:\n{site.log_tail()}"
                waiting = _ready(http, urls)
                if waiting:
                    time.sleep(1)
        assert not waiting, f"{sorted(waiting)} did not answer in time:\n{site.log_tail()}"
        accounts = dev_provider.demo_accounts(sso_home.home.secrets)
        site.passwords.update({a.username: a.password for a in accounts})
        print(f"\nhdh ui ready in {time.monotonic() - started:.1f} s")
        yield site
    finally:
        stop_group(process)
        print(f"hdh ui log (tail):\n{site.log_tail(2000)}")
