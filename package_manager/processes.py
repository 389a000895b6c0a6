"""Servers this platform starts: a loopback port for each, and stopping one by its whole process
group, by the pid it was started with (``start_new_session=True``), never by name."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess

TERMINATE_FIRST = ((signal.SIGTERM, 15), (signal.SIGKILL, 10))
_HANDED_OUT: set[int] = set()


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
