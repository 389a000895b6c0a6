"""A Spark standalone cluster on this machine, from the installed pyspark distribution: a master,
workers and, on demand, a Spark Connect server. For trying the cluster path (``hdh spark
cluster``), the tests and the benchmarks; production runs a real cluster with the same settings.

pyspark ships ``bin/spark-class`` and ``bin/spark-submit`` but no ``sbin/`` scripts, so the
daemons are started as the scripts would start them. Every process is its own process group,
started and stopped by its pid, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from package_manager.processes import free_loopback_port, log_tail, stop_process_group

HOST = "127.0.0.1"
CONNECT_SERVER = "org.apache.spark.sql.connect.service.SparkConnectServer"


class ClusterStartError(RuntimeError):
    """A daemon exited or did not become ready; the message carries the end of its log."""


def spark_home() -> Path:
    """The Spark distribution inside the installed pyspark package."""
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home())


@dataclass
class LocalSparkCluster:
    """``with LocalSparkCluster(work_dir) as cluster:`` a master and ``workers`` workers on
    loopback, ready (every worker ALIVE at the master) when the block starts, stopped after."""

    work_dir: Path
    workers: int = 2
    cores_per_worker: int = 1
    memory_per_worker: str = "2g"
    start_timeout: float = 120.0
    master_port: int = field(default_factory=free_loopback_port)
    master_ui_port: int = field(default_factory=free_loopback_port)
    connect_port: int | None = None
    _processes: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.master_port}"

    @property
    def connect_url(self) -> str | None:
        return f"sc://{HOST}:{self.connect_port}" if self.connect_port else None

    def __enter__(self) -> LocalSparkCluster:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        (self.work_dir / "logs").mkdir(parents=True, exist_ok=True)
        try:
            self._spawn(
                "master",
                [
                    str(spark_home() / "bin" / "spark-class"),
                    "org.apache.spark.deploy.master.Master",
                    *("--host", HOST, "--port", str(self.master_port)),
                    *("--webui-port", str(self.master_ui_port)),
                ],
            )
            self._wait(lambda: self.master_state() is not None, "master")
            for index in range(self.workers):
                work = self.work_dir / f"worker-{index}"
                work.mkdir(parents=True, exist_ok=True)
                self._spawn(
                    f"worker-{index}",
                    [
                        str(spark_home() / "bin" / "spark-class"),
                        "org.apache.spark.deploy.worker.Worker",
                        *("--host", HOST, "--webui-port", str(free_loopback_port())),
                        *("--cores", str(self.cores_per_worker)),
                        *("--memory", self.memory_per_worker, "--work-dir", str(work)),
                        self.master_url,
                    ],
                )
            self._wait(lambda: len(self.alive_workers()) == self.workers, "workers")
        except BaseException:
            self.stop()
            raise

    def start_connect_server(self, **conf: str) -> str:
        """A Spark Connect server whose driver runs on this cluster; its ``sc://`` URL.

        ``conf`` adds session settings (``spark.cores.max`` so it leaves room for others)."""
        if self.connect_port is not None:
            return self.connect_url or ""
        port = free_loopback_port()
        settings = {
            "spark.connect.grpc.binding.address": HOST,
            "spark.connect.grpc.binding.port": str(port),
            "spark.driver.host": HOST,
            "spark.ui.enabled": "false",
            "spark.sql.session.timeZone": "UTC",
            **conf,
        }
        command = [
            str(spark_home() / "bin" / "spark-submit"),
            *("--class", CONNECT_SERVER, "--name", "hdh-spark-connect"),
            *("--master", self.master_url),
        ]
        for key, value in settings.items():
            command += ["--conf", f"{key}={value}"]
        self._spawn("connect", [*command, "spark-internal"])
        self._wait(lambda: _accepts(port), "Spark Connect server")
        self.connect_port = port
        return self.connect_url or ""

    def master_state(self) -> dict | None:
        """The master's ``/json/`` report (workers, applications), or None while it starts."""
        url = f"http://{HOST}:{self.master_ui_port}/json/"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.load(response)
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            return None

    def alive_workers(self) -> list[dict]:
        state = self.master_state() or {}
        return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]

    def applications(self) -> list[dict]:
        """Applications running on the master now (a classic driver, the Connect server...)."""
        return (self.master_state() or {}).get("activeapps", [])

    def pids(self) -> dict[str, int]:
        """Process id of each daemon by name (``master``, ``worker-0``, ``connect``)."""
        return {name: process.pid for name, process in self._processes.items()}

    def log(self, name: str) -> Path:
        return self.work_dir / "logs" / f"{name}.log"

    def stop(self) -> None:
        """Connect server first, then workers (and their executors), then the master."""
        for name in sorted(self._processes, key=_stop_order):
            stop_process_group(self._processes.pop(name))

    def _spawn(self, name: str, command: list[str]) -> None:
        env = {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": HOST,
            "SPARK_LOG_DIR": str(self.work_dir / "logs"),
            "SPARK_WORKER_DIR": str(self.work_dir),
            "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        }
        with self.log(name).open("ab") as log:
            self._processes[name] = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.work_dir,
                start_new_session=True,
            )

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    raise ClusterStartError(
                        f"Spark {name} exited with {process.returncode} while starting the "
                        f"{what}:\n{log_tail(self.log(name))}"
                    )
            if ready():
                return
            time.sleep(0.25)
        logs = "\n".join(f"--- {name}\n{log_tail(self.log(name))}" for name in self._processes)
        raise ClusterStartError(f"the Spark {what} not ready in {self.start_timeout:.0f} s\n{logs}")


def _stop_order(name: str) -> int:
    return {"connect": 0, "master": 2}.get(name, 1)


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
        return True
    return False
