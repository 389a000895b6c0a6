"""Stopping what a test started: a server's whole process group, by the pid it was started with
(``start_new_session=True``), never by name; ``dagster`` servers may ignore SIGTERM."""

from __future__ import annotations

import signal
import subprocess

from package_manager.processes import stop_process_group

INTERRUPT_FIRST = ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 10))
TERMINATE_FIRST = ((signal.SIGTERM, 20), (signal.SIGKILL, 10))


def stop_group(process: subprocess.Popen, steps=INTERRUPT_FIRST) -> None:
    """Each (signal, seconds) to the group until its leader ends, then SIGKILL to whatever of
    the group outlived it."""
    stop_process_group(process, steps)
