"""The Dockerfile builds this project's code location, as a non-root user, with Java 17, and the
image it defines is the one every rendered pod runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib

from hdh_cli.deployment import pods
from hdh_cli.deployment.image import ENTRYPOINT_FILE
from hdh_cli.deployment.render import DOCKERFILE, DOCKERIGNORE
from tests.deploy.conftest import COMMITTED, ROOT


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_dockerfile_installs_this_project_as_a_non_root_code_server():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    steps = _instructions((COMMITTED / DOCKERFILE).read_text())
    by_kind: dict[str, list[str]] = {}
    for kind, args in steps:
        by_kind.setdefault(kind, []).append(args)
    assert by_kind["FROM"] == ["python:3.11-slim-bookworm"]
    workdir = by_kind["WORKDIR"][0]
    assert f". {workdir}" in by_kind["COPY"]  # the repository root, where pyproject.toml is
    runs = " ".join(by_kind["RUN"])
    assert "openjdk-17-jre-headless" in runs
    assert re.search(r"pip install --no-cache-dir \.( |$)", runs)
    assert f'title="{pyproject["project"]["name"]}"' in by_kind["LABEL"][0]
    assert by_kind["USER"] == [f"{pods.APP_UID}:{pods.APP_UID}"]
    assert f"--uid {pods.APP_UID}" in runs
    command = json.loads(by_kind["CMD"][0])
    assert command[:3] == ["dagster", "code-server", "start"]
    assert command[command.index("-m") + 1] == pyproject["tool"]["dagster"]["module_name"]
    assert command[command.index("-p") + 1] == str(pods.CODE_SERVER_PORT)
    assert f"deploy/kubernetes/{ENTRYPOINT_FILE}" in " ".join(by_kind["COPY"])
    ignored = (COMMITTED / DOCKERIGNORE).read_text().splitlines()
    assert {".venv", ".hdh", ".git"} <= set(ignored)


def test_the_entrypoint_runs_commands_and_starts_spark_executors():
    script = (COMMITTED / ENTRYPOINT_FILE).read_text()
    assert "KubernetesExecutorBackend" in script
    assert '--driver-url "$SPARK_DRIVER_URL"' in script
    sh = shutil.which("sh")
    assert sh is not None
    result = subprocess.run(
        [sh, str(COMMITTED / ENTRYPOINT_FILE), "echo", "passed through"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "passed through\n"
