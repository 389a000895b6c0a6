"""Stopping a server this platform started: its whole process group, by the pid it was started
with (``start_new_session=True``), never by name."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

TERMINATE_FIRST = ((signal.SIGTERM, 15), (signal.SIGKILL, 10))


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
