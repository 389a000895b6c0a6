"""Run the gateway: Debian's ``apache2`` with the rendered configuration, in the foreground as
a child process with its own run folder, stopped by the pid started here (never by name).

Apache refuses to serve as root: started as root, its workers run as ``www-data``. The secrets
reach Apache through its environment only (a minimal one: nothing else of the caller's
environment is passed on).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from auth.settings import OidcSettings
from gateway.config import (
    DEBIAN_MODULES,
    Application,
    GatewayConfig,
    new_passphrase,
    render_httpd_conf,
    render_landing_page,
    secret_environment,
)

APACHE = Path("/usr/sbin/apache2")
ROOT_RUN_USER = "www-data"
PACKAGES = "apache2 libapache2-mod-auth-openidc"


class GatewayError(RuntimeError):
    """The gateway cannot be prepared or started; the message says what to do."""


def check_installed() -> None:
    """Apache and mod_auth_openidc are there, else say which packages install them."""
    if not APACHE.exists() or not (DEBIAN_MODULES / "mod_auth_openidc.so").exists():
        raise GatewayError(f"Apache with mod_auth_openidc is needed: apt-get install {PACKAGES}")


def apache_environment(secrets: Mapping[str, str] | None = None) -> dict[str, str]:
    """What Apache's process gets: a plain PATH and locale, and the configuration's secrets."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", **(secrets or {})}


def prepare(
    settings: OidcSettings,
    applications: tuple[Application, ...],
    *,
    public_url: str,
    run_dir: Path | None = None,
    listen_host: str | None = None,
    listen_port: int | None = None,
) -> GatewayConfig:
    """Create the run folder and write ``httpd.conf`` and the landing page into it.

    The folder stays the caller's: Apache's parent (root or the caller) writes the pid file and
    the logs, the workers only read the landing page, so they need the folder readable, not
    writable. Without ``run_dir``, a new folder under the system's temporary directory: a
    private parent (a 0700 home) would hide the landing page from ``www-data``. The logs name
    users: they are created private.
    """
    run = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="hdh-gateway-"))
    run.mkdir(parents=True, exist_ok=True)
    gateway = GatewayConfig(
        public_url=public_url,
        run_dir=run,
        applications=applications,
        listen_host=listen_host,
        listen_port=listen_port,
        run_user=ROOT_RUN_USER if os.geteuid() == 0 else None,
    )
    gateway.htdocs.mkdir(exist_ok=True)
    gateway.conf_path.write_text(render_httpd_conf(settings, gateway))
    (gateway.htdocs / "index.html").write_text(render_landing_page(gateway))
    for folder in (run, gateway.htdocs):
        folder.chmod(0o755)
    for public in (gateway.conf_path, gateway.htdocs / "index.html"):
        public.chmod(0o644)  # no secret in either
    for log in (gateway.error_log, gateway.access_log, gateway.stderr_log):
        log.touch(mode=0o600)
        log.chmod(0o600)
    return gateway


def config_test(
    gateway: GatewayConfig, secrets: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``apache2 -t`` on the rendered file: Apache's own syntax and module check."""
    return subprocess.run(
        [str(APACHE), "-t", "-f", str(gateway.conf_path)],
        env=apache_environment(secrets),
        capture_output=True,
        text=True,
        timeout=30,
    )


class Gateway:
    """A running gateway; :meth:`stop` ends the process group it started, by its pid."""

    def __init__(self, process: subprocess.Popen, config: GatewayConfig, remove_run_dir: bool):
        self.process = process
        self.config = config
        self._remove_run_dir = remove_run_dir

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return self.config.root_url

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.config.error_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to Apache's parent (it stops its workers), SIGKILL to the group if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # workers left behind, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        if self._remove_run_dir:
            shutil.rmtree(self.config.run_dir, ignore_errors=True)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start(
    settings: OidcSettings,
    applications: tuple[Application, ...],
    *,
    public_url: str,
    run_dir: Path | None = None,
    listen_host: str | None = None,
    listen_port: int | None = None,
    timeout: float = 30.0,
) -> Gateway:
    """Render, check and start Apache in the foreground; wait until it accepts connections."""
    gateway = prepare(
        settings,
        applications,
        public_url=public_url,
        run_dir=run_dir,
        listen_host=listen_host,
        listen_port=listen_port,
    )
    check_installed()
    secrets = secret_environment(settings, new_passphrase())
    checked = config_test(gateway, secrets)
    if checked.returncode != 0:
        raise GatewayError(f"apache2 -t refused {gateway.conf_path}:\n{checked.stderr}")
    with open(gateway.stderr_log, "ab") as stderr:
        process = subprocess.Popen(
            [str(APACHE), "-f", str(gateway.conf_path), "-D", "FOREGROUND"],
            env=apache_environment(secrets),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own group: stop() can clear stray workers by our pid
        )
    running = Gateway(process, gateway, remove_run_dir=run_dir is None)
    try:
        _wait_listening(running, timeout)
    except BaseException:
        running.stop()
        raise
    return running


def _wait_listening(gateway: Gateway, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    address = (gateway.config.host, gateway.config.port)
    while time.monotonic() < deadline:
        if not gateway.running():
            raise GatewayError(
                f"apache2 exited with {gateway.process.returncode}:\n{gateway.log_tail()}"
            )
        if gateway.config.pid_file.exists():
            with contextlib.suppress(OSError), socket.create_connection(address, timeout=1):
                return
        time.sleep(0.1)
    raise GatewayError(f"apache2 did not listen on {address} within {timeout:.0f} s")
