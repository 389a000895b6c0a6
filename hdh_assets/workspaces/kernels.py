"""The workspace image's kernels, built on this machine, and code run in them.

``build_kernel_environment`` makes the kernel side of an ``ImageDefinition`` real without a
container runtime: it checks that the Debian packages the Dockerfile installs are installed here,
registers the Python kernel (the current interpreter) and the R kernel with the same
``IRkernel::installspec`` call the Dockerfile runs, into a Jupyter data directory of its own, and
checks that the definition's packages are present. ``run_cell`` starts one of those kernels with
``jupyter_client``, as JupyterLab does, runs a cell and shuts the kernel down.

The definition's Python packages are checked against the current environment, not installed:
installing them is the image build's job, and the check already says which one is missing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import queue
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import KernelManager
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from hdh_assets.workspaces.image import APT_PACKAGES, IR_KERNEL_INSTALLSPEC, ImageDefinition

PYTHON_KERNEL = "python3"
R_KERNEL = "ir"
KERNEL_NAMES: tuple[str, ...] = (PYTHON_KERNEL, R_KERNEL)
# The kernels JupyterLab needs next to itself; the image's requirements must always hold them.
JUPYTER_DISTRIBUTIONS: tuple[str, ...] = ("jupyterlab", "ipykernel")
APT_HINT = f"apt-get install {' '.join(APT_PACKAGES)}"


class KernelEnvironmentError(RuntimeError):
    """This machine cannot provide the kernels an image definition describes (says why)."""


@dataclass(frozen=True)
class KernelEnvironment:
    """Kernelspecs registered under ``root``, for the packages of ``definition``."""

    definition: ImageDefinition
    root: Path
    kernels: tuple[str, ...]

    @property
    def data_dir(self) -> Path:
        """The Jupyter data directory: put it on JUPYTER_PATH and JupyterLab offers the kernels."""
        return self.root / "share" / "jupyter"

    @property
    def kernels_dir(self) -> Path:
        return self.data_dir / "kernels"

    @property
    def runtime_dir(self) -> Path:
        """Connection files of the kernels run_cell starts, kept out of the user's home."""
        return self.root / "runtime"

    def jupyter_env(self) -> dict[str, str]:
        """Environment variables that make `jupyter lab` find these kernels before any other."""
        paths = [
            str(self.data_dir),
            *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep)),
        ]
        return {"JUPYTER_PATH": os.pathsep.join(paths)}

    def kernel_spec_manager(self) -> KernelSpecManager:
        """Only this environment's kernels: not the user's, the virtualenv's or the system's."""
        return KernelSpecManager(kernel_dirs=[str(self.kernels_dir)], ensure_native_kernel=False)


@dataclass(frozen=True)
class CellResult:
    """What a cell printed, the text of the values it showed, and its error ("name: value").

    ``result`` joins the text/plain of execute_result and display_data messages: IPython sends
    the cell's last value as execute_result, IRkernel every visible value as display_data.
    """

    stdout: str
    result: str | None
    error: str | None
    stderr: str = ""
    traceback: tuple[str, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


def build_kernel_environment(
    definition: ImageDefinition, root: Path, kernels: Collection[str] = KERNEL_NAMES
) -> KernelEnvironment:
    """Register the image's kernels under ``root`` after checking this machine can run them."""
    unknown = sorted(set(kernels) - set(KERNEL_NAMES))
    if unknown:
        raise ValueError(f"unknown kernel(s) {unknown}: expected some of {list(KERNEL_NAMES)}")
    check_python_packages(definition)
    if R_KERNEL in kernels:
        missing = missing_apt_packages(APT_PACKAGES)
        if missing:
            raise KernelEnvironmentError(
                f"Debian package(s) {', '.join(missing)} not installed: the R kernel needs "
                f"them ({APT_HINT})"
            )
        check_r_packages(definition.r_packages)
    env = KernelEnvironment(
        definition=definition,
        root=root,
        kernels=tuple(name for name in KERNEL_NAMES if name in kernels),
    )
    env.kernels_dir.mkdir(parents=True, exist_ok=True)
    if PYTHON_KERNEL in kernels:
        _install_python_kernel(env)
    if R_KERNEL in kernels:
        _install_r_kernel(env)
    return env


def check_python_packages(definition: ImageDefinition) -> None:
    """The image's requirements, Jupyter's included, are installed here at matching versions."""
    names = {canonicalize_name(Requirement(text).name) for text in definition.requirements}
    absent = [name for name in JUPYTER_DISTRIBUTIONS if name not in names]
    if absent:
        raise KernelEnvironmentError(f"the image requirements lack {', '.join(absent)}")
    problems = [
        problem
        for text in definition.requirements
        if (problem := _requirement_problem(Requirement(text)))
    ]
    problems += [
        f"{name} is not importable"
        for name in JUPYTER_DISTRIBUTIONS
        if importlib.util.find_spec(name) is None
    ]
    if problems:
        raise KernelEnvironmentError(
            f"Python packages of the image missing in {sys.executable}: {'; '.join(problems)}"
        )


def _requirement_problem(requirement: Requirement) -> str | None:
    try:
        version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return f"{requirement} is not installed"
    if not requirement.specifier.contains(version, prereleases=True):
        return f"{requirement} is not satisfied by the installed {version}"
    return None


def missing_apt_packages(packages: Iterable[str]) -> list[str]:
    """The Debian packages among ``packages`` that dpkg does not report as installed."""
    if shutil.which("dpkg-query") is None:
        raise KernelEnvironmentError(
            f"dpkg-query not found: the kernels are checked against Debian packages ({APT_HINT})"
        )
    return [package for package in packages if not _apt_installed(package)]


def _apt_installed(package: str) -> bool:
    completed = subprocess.run(
        ["dpkg-query", "--show", "--showformat=${db:Status-Status}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.returncode == 0 and completed.stdout.strip() == "installed"


def check_r_packages(names: Iterable[str]) -> None:
    """Every R package of the definition loads in this machine's R, as install.R requires."""
    names = list(names)
    if not names:
        return
    expression = (
        "found <- vapply(commandArgs(trailingOnly = TRUE), requireNamespace, logical(1), "
        'quietly = TRUE); cat(names(found)[!found], sep = "\\n")'
    )
    completed = _run_r(["-e", expression, *names], env=None)
    missing = completed.stdout.split()
    if missing:
        raise KernelEnvironmentError(
            f"R package(s) {', '.join(missing)} not installed in {_rscript()}: install them "
            "(Debian: apt-get install r-cran-<name>; or install.packages) or remove them from "
            "the definition"
        )


def _install_python_kernel(env: KernelEnvironment) -> None:
    """The current interpreter as the Python kernel; ipykernel writes the kernelspec."""
    from ipykernel.kernelspec import install  # imported late: it pulls in the kernel's deps

    install(kernel_name=PYTHON_KERNEL, prefix=str(env.root))
    _check_kernelspec(env, PYTHON_KERNEL)


def _install_r_kernel(env: KernelEnvironment) -> None:
    """The Dockerfile's installspec call, with a prefix: IRkernel runs `jupyter kernelspec`."""
    jupyter_bin = Path(sys.executable).parent
    if not (jupyter_bin / "jupyter").exists():
        raise KernelEnvironmentError(f"no `jupyter` command next to {sys.executable}")
    # The prefix goes through the environment: no path is ever spliced into R or shell code.
    expression = IR_KERNEL_INSTALLSPEC.format(
        args=', prefix = shQuote(Sys.getenv("HDH_KERNEL_PREFIX"))'
    )
    env_vars = {
        **os.environ,
        "PATH": f"{jupyter_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "HDH_KERNEL_PREFIX": str(env.root),
    }
    _run_r(["-e", expression], env=env_vars)
    _check_kernelspec(env, R_KERNEL)


def _check_kernelspec(env: KernelEnvironment, name: str) -> None:
    if not (env.kernels_dir / name / "kernel.json").is_file():
        raise KernelEnvironmentError(f"kernel {name!r} was not registered in {env.kernels_dir}")


def _rscript() -> str:
    rscript = shutil.which("Rscript")
    if rscript is None:
        raise KernelEnvironmentError(f"Rscript not found on PATH ({APT_HINT})")
    return rscript


def _run_r(args: list[str], env: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [_rscript(), "--vanilla", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    if completed.returncode != 0:
        raise KernelEnvironmentError(
            f"Rscript {' '.join(args)} failed with exit code {completed.returncode}:\n"
            f"{completed.stderr.strip()}"
        )
    return completed


def run_cell(
    env: KernelEnvironment, kernel_name: str, code: str, timeout: float = 60
) -> CellResult:
    """Start the kernel, run ``code`` as one cell, shut the kernel down; ``timeout`` is overall."""
    spec_manager = env.kernel_spec_manager()
    try:
        spec_manager.get_kernel_spec(kernel_name)
    except NoSuchKernel as exc:
        raise KernelEnvironmentError(
            f"kernel {kernel_name!r} is not registered in {env.kernels_dir}: "
            f"the environment has {list(env.kernels)}"
        ) from exc
    env.runtime_dir.mkdir(parents=True, exist_ok=True)
    manager = KernelManager(
        kernel_name=kernel_name,
        kernel_spec_manager=spec_manager,
        connection_file=str(env.runtime_dir / f"kernel-{uuid.uuid4().hex}.json"),
    )
    deadline = time.monotonic() + timeout
    manager.start_kernel()
    finished = False
    try:
        result = _run_in_kernel(manager, kernel_name, code, deadline)
        finished = True
        return result
    finally:
        # A kernel still busy with the cell cannot answer a shutdown request: kill it then.
        manager.shutdown_kernel(now=not finished)


def _run_in_kernel(
    manager: KernelManager, kernel_name: str, code: str, deadline: float
) -> CellResult:
    client = manager.client()
    client.start_channels()
    try:
        try:
            client.wait_for_ready(timeout=_remaining(deadline))
        except RuntimeError as exc:
            raise KernelEnvironmentError(f"kernel {kernel_name!r} did not start: {exc}") from exc
        msg_id = client.execute(code, store_history=False, allow_stdin=False)
        result = _collect_output(client, msg_id, deadline)
        reply = _shell_reply(client, msg_id, deadline)
    finally:
        client.stop_channels()
    if reply.get("status") == "error" and result.error is None:
        return CellResult(
            stdout=result.stdout,
            result=result.result,
            error=f"{reply.get('ename', 'Error')}: {str(reply.get('evalue', '')).strip()}",
            stderr=result.stderr,
            traceback=tuple(reply.get("traceback", ())),
        )
    return result


def _collect_output(client: BlockingKernelClient, msg_id: str, deadline: float) -> CellResult:
    """The cell's iopub messages, until the kernel reports idle for it."""
    stdout: list[str] = []
    stderr: list[str] = []
    values: list[str] = []
    error: str | None = None
    traceback: tuple[str, ...] = ()
    while True:
        message = _next_message(client.get_iopub_msg, msg_id, deadline)
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            (stdout if content["name"] == "stdout" else stderr).append(content["text"])
        elif kind in ("execute_result", "display_data") and "text/plain" in content["data"]:
            values.append(content["data"]["text/plain"])
        elif kind == "error":
            error = f"{content['ename']}: {content['evalue'].strip()}"
            traceback = tuple(content.get("traceback", ()))
        elif kind == "status" and content["execution_state"] == "idle":
            result = "\n".join(values) if values else None
            return CellResult("".join(stdout), result, error, "".join(stderr), traceback)


def _shell_reply(client: BlockingKernelClient, msg_id: str, deadline: float) -> dict[str, Any]:
    return _next_message(client.get_shell_msg, msg_id, deadline)["content"]


def _next_message(get: Any, msg_id: str, deadline: float) -> dict[str, Any]:
    """The next message answering ``msg_id``, skipping the kernel's other traffic."""
    while True:
        try:
            message = get(timeout=_remaining(deadline))
        except queue.Empty:
            raise TimeoutError("the cell did not finish before the timeout") from None
        if message["parent_header"].get("msg_id") == msg_id:
            return message


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the cell did not finish before the timeout")
    return remaining
