"""`hdh dicomweb`: the service served on the platform home, and its tokens from the command line.

The platform home is built the cheap way the DICOMweb tests build theirs (the ingestion core
and the index partition, no Dagster, no Spark), from a few of pydicom's test files.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pydicom.data
import pytest
import requests
from click.testing import CliRunner
from dicomweb_client.api import DICOMwebClient

from dicomweb.tokens import InvalidToken, Tokens
from hdh_cli.main import cli
from resources.home import HdhHome
from tests.cli.test_read_only_commands import assert_loads_nothing_heavy
from tests.dicomweb.conftest import ingest
from tests.dicomweb.servers import free_port
from tests.processes import TERMINATE_FIRST, stop_group

PROJECT = "cardio-imaging"  # one of the example specs
FILES = ("CT_small.dcm", "MR_small.dcm")


@pytest.fixture
def home(hdh_home: HdhHome, monkeypatch: pytest.MonkeyPatch) -> HdhHome:
    monkeypatch.delenv("HDH_DICOMWEB_SECRET", raising=False)  # the key under HDH_HOME/secrets
    return hdh_home


def _token(*args: str) -> str:
    result = CliRunner().invoke(cli, ["dicomweb", "token", *args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_tokens_from_the_command_line_verify_with_the_service_key(home):
    tokens = Tokens.for_home(home)
    operator = tokens.verify(_token("--all"))
    assert operator.all and operator.project is None

    before = time.time()
    result = CliRunner().invoke(cli, ["dicomweb", "token", "--project", PROJECT, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    claims = tokens.verify(payload["token"])
    assert (claims.project, claims.all) == (PROJECT, False)
    assert payload["scope"] == PROJECT and payload["expires"] == claims.expires
    assert before + 8 * 3600 - 5 <= claims.expires <= time.time() + 8 * 3600  # --ttl 8h

    short = tokens.verify(_token("--all", "--ttl", "30m"))
    assert short.expires <= time.time() + 1800
    with pytest.raises(InvalidToken):  # another key: another service's token
        Tokens(b"another-key-of-at-least-32-bytes!!").verify(_token("--all"))


def test_a_secret_from_the_environment_signs_the_tokens(home, monkeypatch):
    secret = "a-configured-secret-of-32-bytes-at-least"
    monkeypatch.setenv("HDH_DICOMWEB_SECRET", secret)
    assert Tokens(secret.encode()).verify(_token("--all")).all


def test_a_project_of_a_provisioned_workspace_is_known(home):
    (home.workspaces / "local-only").mkdir(parents=True)
    assert Tokens.for_home(home).verify(_token("--project", "local-only")).project == "local-only"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--project", "no-such-project"], "unknown project 'no-such-project'"),
        (["--project", ".."], "unknown project '..'"),
        ([], "either --project P or --all"),
        (["--all", "--project", PROJECT], "either --project P or --all"),
        (["--all", "--ttl", "soon"], "'soon' is not a lifetime"),
        (["--all", "--ttl", "365d"], "the lifetime must be between"),
    ],
)
def test_refusals_name_what_is_wrong(home, args, message):
    result = CliRunner().invoke(cli, ["dicomweb", "token", *args])
    assert result.exit_code != 0 and not result.stdout
    assert message in result.output
    if args[:1] == ["--project"]:
        assert result.exit_code == 1


@pytest.mark.slow
def test_token_loads_neither_spark_nor_the_definitions(home, tmp_path):
    commands = [
        ["dicomweb", "token", "--all", "--json"],
        ["dicomweb", "token", "--project", PROJECT],
        ["dicomweb", "--help"],
    ]
    assert_loads_nothing_heavy(commands, tmp_path)


def test_ui_starts_the_dicomweb_service_beside_the_portal(home, monkeypatch):
    started: list[list[str]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kwargs: started.append(args))
    monkeypatch.setattr("hdh_cli.instance.prepare_dagster_home", lambda home: None)
    monkeypatch.setenv("HDH_DICOMWEB_URL", "")  # restored after the test, whatever ui sets
    monkeypatch.delenv("HDH_DICOMWEB_URL")

    # ui supervises what it started until interrupted: here it returns at once
    monkeypatch.setattr("hdh_cli.commands.ui.supervise", lambda children, gateway: None)
    workspace = "/dagster-home/workspace-ui.yaml"  # the shared code server's, as ui writes it
    monkeypatch.setattr("hdh_cli.commands.ui.start_code_server", lambda *args: workspace)
    monkeypatch.setenv("HDH_VIEWER_URL", "")  # restored after the test, whatever ui sets
    monkeypatch.delenv("HDH_VIEWER_URL")
    # two provisioned projects (a grants manifest each) and a workspace that holds none
    for project in ("beta", "alpha"):
        grants = home.workspaces / project / "grants"
        grants.mkdir(parents=True)
        (grants / "manifest.json").write_text('{"grants": []}')
    (home.workspaces / "unprovisioned").mkdir()
    ports = ["--portal-port", "4001", "--dicomweb-port", "4002", "--viewer-port", "4003"]
    ports += ["--identity-port", "0", "--gateway-port", "0"]
    result = CliRunner().invoke(cli, ["ui", *ports])
    assert result.exit_code == 0, result.output
    service = ["--dicomweb-url", "http://127.0.0.1:4002/dicom-web"]
    assert [[Path(a[0]).name, *a[1:]] if "dagster" in a[0] else a[1:] for a in started] == [
        ["portal", "--host", "127.0.0.1", "--port", "4001", "--demo"],
        ["dicomweb", "--host", "127.0.0.1", "--port", "4002"],
        ["viewer", "--all", "--host", "127.0.0.1", "--port", "4003", *service],
        ["viewer", "--project", "alpha", "--host", "127.0.0.1", "--port", "4004", *service],
        ["viewer", "--project", "beta", "--host", "127.0.0.1", "--port", "4005", *service],
        ["packages", "serve"],
        ["dagster-webserver", "-h", "127.0.0.1", "-p", "3000", "-w", workspace],
        ["dagster-daemon", "run", "-w", workspace],
    ]
    assert "DICOMweb on http://127.0.0.1:4002/dicom-web" in result.output
    assert "Viewer on http://127.0.0.1:4004 (project alpha)" in result.output
    assert os.environ["HDH_DICOMWEB_URL"] == "http://127.0.0.1:4002/dicom-web"
    assert os.environ["HDH_VIEWER_URL"] == "http://127.0.0.1:4003"

    started.clear()
    result = CliRunner().invoke(
        cli,
        [
            "ui",
            *("--portal-port", "0", "--dicomweb-port", "0", "--identity-port", "0"),
            "--no-packages",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [Path(a[0]).name for a in started] == ["dagster-webserver", "dagster-daemon"]


@pytest.mark.slow
def test_the_service_answers_qido_for_a_token_only(home, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in FILES:
        shutil.copyfile(pydicom.data.get_testdata_file(name), corpus / name)
    (index,) = ingest(home, {"pydicom": corpus}).values()
    assert index.height == len(FILES)

    port = free_port()
    hdh = str(Path(sys.executable).with_name("hdh"))
    log = (tmp_path / "dicomweb.log").open("w")
    process = subprocess.Popen(
        [hdh, "dicomweb", "--port", str(port)],
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/dicom-web/studies"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "dicomweb.log").read_text()[-3000:]
            try:
                anonymous = requests.get(url, timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the service did not answer in time"
                time.sleep(0.2)
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == "Bearer"

        operator = {"Authorization": f"Bearer {_token('--all')}"}
        answer = requests.get(url, headers=operator, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/dicom+json")
        studies = {item["0020000D"]["Value"][0] for item in answer.json()}
        assert studies == set(index["study_instance_uid"])

        # As the viewing page shows it, with dicomweb-client.
        client = DICOMwebClient(f"http://127.0.0.1:{port}/dicom-web", headers=operator)
        (ct,) = client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})
        assert ct["0020000D"]["Value"][0] in studies

        # A project without grants sees no study (and learns nothing of the others).
        project = {"Authorization": f"Bearer {_token('--project', PROJECT)}"}
        assert requests.get(url, headers=project, timeout=30).json() == []
    finally:
        stop_group(process, TERMINATE_FIRST)
        log.close()
    assert "DICOMweb on http://127.0.0.1:" in (tmp_path / "dicomweb.log").read_text()
