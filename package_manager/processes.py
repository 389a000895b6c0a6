"""Servers this platform starts: a loopback port for each, waiting until one is ready, and stopping
one by its whole process group, by the pid it was started with (``start_new_session=True``), never
by name."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

TERMINATE_FIRST = ((signal.SIGTERM, 15), (signal.SIGKILL, 10))
_HANDED_OUT: set[int] = set()


class ServerStartError(RuntimeError):
    """A server did not become ready; the message names it and ends with the tail of its log."""


class ServerExitedError(ServerStartError):
    """The server's process ended before the server was ready."""


class ServerTimeoutError(ServerStartError, TimeoutError):
    """The server was not ready in time (a ``TimeoutError`` too, for callers that catch that)."""


def make_stoppable() -> None:
    """Give SIGINT and SIGTERM back their default effect when this process was started ignoring
    them (a shell's background job ignores SIGINT).

    Dagster maps SIGTERM to SIGINT's handler after every run it executes in-process, so an
    ignored SIGINT becomes an ignored SIGTERM; an ignored signal is inherited by every program
    started afterwards, and the servers this platform starts and stops by SIGTERM (devpi, the
    upstreams, Orthanc, Spark, a Pool's workers) would then only stop at SIGKILL, or never.
    Called where a process begins: the ``hdh`` command and the test session."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def free_loopback_port() -> int:
    """A loopback port free now and not handed out before by this process: callers pick several
    ports before starting anything on them, and the system may offer a just-closed one again."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def log_tail(path: Path, size: int = 3000) -> str:
    """The last ``size`` characters of a log, or ``(no log)`` when it was never written."""
    try:
        return path.read_text(errors="replace")[-size:]
    except FileNotFoundError:
        return "(no log)"


def answers(url: str, timeout: float = 2) -> bool:
    """Whether a GET of ``url`` answers 200 now; ``False`` while nothing (or not yet the server)
    listens there."""
    import httpx  # here: the rest of this module is the standard library only

    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    process: subprocess.Popen | None = None,
    log: Path | None = None,
    interval: float = 0.25,
) -> None:
    """Poll ``ready`` every ``interval`` seconds until it is true.

    A server that exits while starting never becomes ready: when ``process`` has ended, fail at
    once (:class:`ServerExitedError`) rather than wait out the ``timeout``
    (:class:`ServerTimeoutError`). Both messages name ``what`` and end with the tail of ``log``,
    which is why a server failed. ``ready`` is asked at least once, and once more at the
    deadline; the caller stops what it started (this stops nothing).
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            headline = f"{what} exited with {process.returncode} before it was ready"
            raise ServerExitedError(_with_log(headline, log))
        if ready():
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerTimeoutError(_with_log(f"{what} not ready within {timeout:g} s", log))
        time.sleep(min(interval, remaining))


def _with_log(headline: str, log: Path | None) -> str:
    return headline if log is None else f"{headline}; the end of {log}:\n{log_tail(log)}"


def stop_process_group(process: subprocess.Popen, steps=TERMINATE_FIRST) -> None:
    """Each (signal, seconds) to the group until its leader ends, then SIGKILL to whatever of
    the group outlived it."""
    for sig, wait in steps:
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
