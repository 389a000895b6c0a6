"""make_stoppable: what a background job starts after an in-process Dagster run still stops on
SIGTERM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Started as a shell's background job starts it (SIGINT ignored), runs one asset in-process, then
# starts a program and reports which of SIGINT and SIGTERM that program inherits ignored.
PROBE = """
import signal, subprocess, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
if sys.argv[1] == "stoppable":
    from package_manager.processes import make_stoppable
    make_stoppable()
import dagster as dg

@dg.asset
def one() -> int:
    return 1

assert dg.materialize([one]).success
child = subprocess.run(["grep", "SigIgn", "/proc/self/status"], capture_output=True, text=True)
ignored = int(child.stdout.split()[1], 16)
print(sorted(n for n, s in (("SIGINT", 2), ("SIGTERM", 15)) if ignored & (1 << (s - 1))))
"""


def _ignored_by_a_child(mode: str, tmp_path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "ignored"),
    [
        # the trap itself: Dagster's run maps SIGTERM to the ignored SIGINT, children inherit it
        ("as-started", "['SIGINT', 'SIGTERM']"),
        ("stoppable", "[]"),
    ],
)
def test_children_of_a_background_job_stop_on_sigterm(mode, ignored, tmp_path):
    assert _ignored_by_a_child(mode, tmp_path) == ignored
