"""Two `hdh` commands started at the same moment on a fresh HDH_HOME both create the instance.

Each process runs the `hdh` console script's entry point (``hdh_cli.main:cli``) with
``status --json``, a command that opens the Dagster instance. Importing the platform and building
its definitions take seconds, and their jitter between two processes is wider than the window in
which they race to create the SQLite storage; so each process stops at the door of
``platform_instance``, says so, and waits on its stdin: the test lets both in at once.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROUNDS = 4

# .venv/bin/hdh status --json, with a barrier in front of platform_instance.
STATUS_WITH_BARRIER = """
import sys
import tempfile

import hdh_cli.instance
from dagster import DagsterInstance
from hdh_cli.main import cli

open_instance = hdh_cli.instance.platform_instance


def at_the_barrier(home):
    with tempfile.TemporaryDirectory() as warm_up:  # Dagster's lazy imports, done before the door
        DagsterInstance.local_temp(warm_up).dispose()
    print("ready", flush=True)
    sys.stdin.readline()
    return open_instance(home)


hdh_cli.instance.platform_instance = at_the_barrier
sys.argv = ["hdh", "status", "--json"]
sys.exit(cli())
"""


def _start(home: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "HDH_HOME": str(home), "HDH_PSEUDONYM_KEY": "ef" * 32}
    env.pop("DAGSTER_HOME", None)  # each falls back to HDH_HOME/dagster, as in a user's shell
    env.pop("HDH_DAGSTER_PROFILE", None)
    return subprocess.Popen(
        [sys.executable, "-c", STATUS_WITH_BARRIER],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_commands_started_together_on_a_fresh_home_both_succeed(tmp_path, round_):
    home = tmp_path / "hdh"
    processes = [_start(home, tmp_path), _start(home, tmp_path)]
    try:
        for process in processes:
            assert process.stdout.readline() == "ready\n", process.communicate()[1][-3000:]
        for process in processes:  # the same moment: both are at the door
            process.stdin.write("go\n")
            process.stdin.flush()
        outcomes = [p.communicate(timeout=120) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (stdout, stderr) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        assert str(home) == json.loads(stdout)["home"]
    config = home / "dagster" / "dagster.yaml"
    assert (
        config.read_text() == (Path(__file__).parents[2] / "deploy/dagster/sqlite.yaml").read_text()
    )
