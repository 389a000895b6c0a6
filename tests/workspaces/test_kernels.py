"""R runs inside Jupyter next to Python: the image definition's kernels, built on this machine the
way the Dockerfile builds them, execute cells through jupyter_client and through a JupyterLab
server started with the image's command. R comes from Debian (r-base-core, r-cran-irkernel), which
``make system-deps`` installs: locally a missing R skips these tests with the reason, in CI the
skip fails the run (tests/no_silent_skip.py)."""

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hdh_assets.workspaces.image import APT_PACKAGES, JUPYTER_COMMAND, image_definition
from hdh_assets.workspaces.kernels import (
    PYTHON_KERNEL,
    R_KERNEL,
    KernelEnvironment,
    KernelEnvironmentError,
    build_kernel_environment,
    missing_apt_packages,
    run_cell,
)
from tests.dicomweb.servers import free_port

pytestmark = pytest.mark.kernels

R_PACKAGES = ("jsonlite", "stats")  # jsonlite comes with r-cran-irkernel, stats with R
PYTHON_PACKAGES = ("polars>=2",)  # a project package, already in the platform's environment
R_CELL = 'x <- c(1, 2, 3); cat(sum(x) * 2, "\\n"); cat(jsonlite::toJSON(list(n = 3)), "\\n")\nR.version$language'


def require_r() -> None:
    """Skip with the reason on a workstation without R; fail in CI, where R must be tested."""
    try:
        missing = missing_apt_packages(APT_PACKAGES)
    except KernelEnvironmentError as exc:
        missing, detail = list(APT_PACKAGES), str(exc)
    else:
        detail = f"{', '.join(missing)} missing"
    if not missing:
        return
    pytest.skip(f"R not installed ({detail}): make system-deps installs it")  # fails in CI


@pytest.fixture(scope="module")
def python_env(tmp_path_factory: pytest.TempPathFactory) -> KernelEnvironment:
    definition = image_definition(PYTHON_PACKAGES, [])
    root = tmp_path_factory.mktemp("python-kernels")
    return build_kernel_environment(definition, root, kernels=[PYTHON_KERNEL])


@pytest.fixture(scope="module")
def full_env(tmp_path_factory: pytest.TempPathFactory) -> KernelEnvironment:
    require_r()
    definition = image_definition(PYTHON_PACKAGES, R_PACKAGES)
    return build_kernel_environment(definition, tmp_path_factory.mktemp("kernels"))


def test_python_cell_runs_in_the_interpreter_kernel(python_env: KernelEnvironment) -> None:
    spec = json.loads((python_env.kernels_dir / PYTHON_KERNEL / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    cell = run_cell(python_env, PYTHON_KERNEL, "print(sum([1,2,3])*2)\nimport polars\n6 * 7")
    assert cell.ok, cell
    assert cell.stdout == "12\n"
    assert cell.result == "42"


def test_python_error_is_reported(python_env: KernelEnvironment) -> None:
    cell = run_cell(python_env, PYTHON_KERNEL, "print('before')\n1 / 0")
    assert cell.stdout == "before\n"
    assert cell.error == "ZeroDivisionError: division by zero"
    assert not cell.ok
    assert cell.traceback


def test_r_kernel_is_registered_as_in_the_image(full_env: KernelEnvironment) -> None:
    assert sorted(p.name for p in full_env.kernels_dir.iterdir()) == [R_KERNEL, PYTHON_KERNEL]
    spec = json.loads((full_env.kernels_dir / R_KERNEL / "kernel.json").read_text())
    assert spec["language"] == "R"
    assert Path(spec["argv"][0]).name == "R"
    assert "IRkernel::main()" in spec["argv"]


def test_r_cell_runs_in_the_r_kernel(full_env: KernelEnvironment) -> None:
    cell = run_cell(full_env, R_KERNEL, R_CELL)
    assert cell.ok, cell
    assert "12" in cell.stdout
    assert '{"n":[3]}' in cell.stdout  # a package of the definition loads in the kernel
    assert cell.result == '[1] "R"'


def test_r_error_is_reported(full_env: KernelEnvironment) -> None:
    cell = run_cell(full_env, R_KERNEL, 'cat("before\\n"); stop("no such product")')
    assert cell.stdout == "before\n"
    assert cell.error is not None
    assert "no such product" in cell.error
    assert not cell.ok


def test_missing_r_package_is_named(tmp_path: Path) -> None:
    require_r()
    definition = image_definition([], ["jsonlite", "hdhNoSuchPackage"])
    with pytest.raises(KernelEnvironmentError, match=r"R package\(s\) hdhNoSuchPackage not"):
        build_kernel_environment(definition, tmp_path)


def test_missing_debian_package_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_r()  # needs dpkg-query, which the Debian machines running R have
    assert missing_apt_packages(("hdh-no-such-package", *APT_PACKAGES)) == ["hdh-no-such-package"]
    monkeypatch.setattr(
        "hdh_assets.workspaces.kernels.APT_PACKAGES", (*APT_PACKAGES, "hdh-no-such-package")
    )
    with pytest.raises(KernelEnvironmentError, match=r"package\(s\) hdh-no-such-package not"):
        build_kernel_environment(image_definition([], []), tmp_path)


def test_missing_python_package_is_named(tmp_path: Path) -> None:
    for packages, needle in [
        (["hdh-no-such-distribution"], "hdh-no-such-distribution is not installed"),
        (["polars<0.1"], "polars<0.1 is not satisfied"),
    ]:
        with pytest.raises(KernelEnvironmentError, match=needle):
            build_kernel_environment(image_definition(packages, []), tmp_path, [PYTHON_KERNEL])


def test_unknown_kernel_is_refused(python_env: KernelEnvironment) -> None:
    with pytest.raises(KernelEnvironmentError, match="'julia' is not registered"):
        run_cell(python_env, "julia", "1")
    with pytest.raises(KernelEnvironmentError, match="'ir' is not registered"):
        run_cell(python_env, R_KERNEL, "1")  # this environment only has Python


def test_a_cell_past_its_timeout_is_stopped(python_env: KernelEnvironment) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        run_cell(python_env, PYTHON_KERNEL, "import time\ntime.sleep(60)", timeout=3)
    assert time.monotonic() - started < 15


# JupyterLab itself, started with the image's command: it offers the R kernel and runs R cells.


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"token {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, token: str, body: dict) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def jupyterlab(full_env: KernelEnvironment, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The Dockerfile's CMD on a free port, with the environment's kernels first on its path."""
    port, token = free_port(), uuid.uuid4().hex
    command = [
        str(Path(sys.executable).parent / "jupyter"),
        *(f"--port={port}" if arg.startswith("--port=") else arg for arg in JUPYTER_COMMAND[1:]),
        f"--ServerApp.root_dir={tmp_path}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")  # CI runs as root; the image runs as uid 1000
    env = {
        **os.environ,
        **full_env.jupyter_env(),
        "JUPYTER_TOKEN": token,  # what the deployment sets from its secret
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    listed = subprocess.run(
        [command[0], "kernelspec", "list", "--json"], env=env, capture_output=True, check=True
    )
    for name, spec in json.loads(listed.stdout)["kernelspecs"].items():
        if name in full_env.kernels:  # the server resolves names as `jupyter kernelspec` does
            assert Path(spec["resource_dir"]) == full_env.kernels_dir / name
    log = (tmp_path / "jupyter.log").open("wb")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while _get_status(base) is None:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not start:\n{(tmp_path / 'jupyter.log').read_text()}")
            time.sleep(0.2)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _get_status(base: str) -> int | None:
    try:
        return _get(f"{base}/api/status")[0]
    except OSError:
        return None


async def _execute_over_websocket(url: str, token: str, code: str) -> tuple[str, list[str]]:
    """A cell sent the way the JupyterLab front end sends it: over the kernel's websocket."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    connection = await websocket_connect(
        HTTPRequest(url, headers={"Authorization": f"token {token}"})
    )
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex}
    content = {"code": code, "silent": False, "store_history": False, "allow_stdin": False}
    connection.write_message(
        json.dumps(
            {
                "header": {**header, "username": "test", "date": "", "version": "5.3"},
                "parent_header": {},
                "metadata": {},
                "content": {**content, "user_expressions": {}, "stop_on_error": True},
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    stdout, values = "", []
    while True:
        message = json.loads(await asyncio.wait_for(connection.read_message(), 30))
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, body = message["msg_type"], message["content"]
        if kind == "stream":
            stdout += body["text"]
        elif kind in ("display_data", "execute_result"):
            values.append(body["data"]["text/plain"])
        elif kind == "error":
            pytest.fail(f"the R cell failed in JupyterLab: {body['ename']}: {body['evalue']}")
        elif kind == "status" and body["execution_state"] == "idle":
            connection.close()
            return stdout, values


def test_jupyterlab_runs_r_next_to_python(jupyterlab: tuple[str, str]) -> None:
    base, token = jupyterlab
    assert _get(f"{base}/api/kernelspecs")[0] == 403  # no token, no server
    status, body = _get(f"{base}/api/kernelspecs", token)
    assert status == 200
    specs = json.loads(body)["kernelspecs"]
    assert {R_KERNEL, PYTHON_KERNEL} <= set(specs)
    assert specs[R_KERNEL]["spec"]["language"] == "R"
    assert _get(f"{base}/lab", token)[0] == 200
    kernel = _post(f"{base}/api/kernels", token, {"name": R_KERNEL})
    ws = f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/api/kernels/{kernel['id']}/channels"
    stdout, values = asyncio.run(_execute_over_websocket(ws, token, R_CELL))
    assert "12" in stdout
    assert values == ['[1] "R"']
