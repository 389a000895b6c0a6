"""wait_until: the one loop that waits for a server the platform (or a test) started."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from package_manager.processes import (
    ServerExitedError,
    ServerStartError,
    ServerTimeoutError,
    answers,
    free_loopback_port,
    log_tail,
    stop_process_group,
    wait_until,
)


def test_returns_as_soon_as_ready_answers_true() -> None:
    asked: list[int] = []

    def ready() -> bool:
        asked.append(1)
        return len(asked) == 3

    wait_until(ready, timeout=3600, what="the test server", interval=0)

    assert len(asked) == 3  # two refusals, then ready: no fourth question


def test_a_process_that_exits_fails_at_once_naming_it_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    script = "import sys; print('address already in use'); sys.exit(3)"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", script], stdout=out, stderr=subprocess.STDOUT
        )
    process.wait(timeout=60)

    def ready() -> bool:
        raise AssertionError("asked whether an exited server is ready")

    with pytest.raises(ServerExitedError) as raised:
        wait_until(ready, timeout=3600, what="the test server", process=process, log=log)

    message = str(raised.value)
    assert message.startswith("the test server exited with 3")
    assert str(log) in message and message.endswith("address already in use\n")
    assert isinstance(raised.value, ServerStartError) and isinstance(raised.value, RuntimeError)
    assert not isinstance(raised.value, TimeoutError)


def test_not_ready_in_time_names_it_with_the_tail_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("x" * 5000 + "still loading plugins\n")
    asked: list[int] = []

    with pytest.raises(ServerTimeoutError) as raised:
        wait_until(
            lambda: bool(asked.append(1)), timeout=0, what="the test server", log=log, interval=0
        )

    message = str(raised.value)
    assert message.startswith("the test server not ready within 0 s")
    assert message.endswith("still loading plugins\n") and "x" * 3000 not in message
    assert asked == [1]  # asked once, even with no time left to wait
    # Callers that caught RuntimeError (pypiserver, Orthanc) or TimeoutError (devpi) still do.
    assert isinstance(raised.value, RuntimeError) and isinstance(raised.value, TimeoutError)


def test_a_running_process_without_a_log_times_out_with_a_bare_message() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    try:
        with pytest.raises(ServerTimeoutError) as raised:
            wait_until(lambda: False, timeout=0, what="the sleeper", process=process)
    finally:
        stop_process_group(process)
    assert str(raised.value) == "the sleeper not ready within 0 s"


def test_log_tail_of_a_log_never_written(tmp_path: Path) -> None:
    assert log_tail(tmp_path / "absent.log") == "(no log)"
    (tmp_path / "short.log").write_text("started\n")
    assert log_tail(tmp_path / "short.log") == "started\n"


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_answers_only_a_200(health_server: str) -> None:
    assert answers(f"{health_server}/health")
    assert not answers(f"{health_server}/starting")  # 503: up, not ready
    assert not answers(f"http://127.0.0.1:{free_loopback_port()}/health")  # nothing listens
