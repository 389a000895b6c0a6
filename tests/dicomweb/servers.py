"""The two servers the conformance tests compare: Orthanc (the reference) and ours.

Orthanc runs from Debian's packages with a temporary configuration: loopback only, DICOM
server disabled, storage under the test's folder; it is stopped by the process id it was
started with, never by name. Our service runs under uvicorn in a thread on a free port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import uvicorn

from package_manager.processes import free_loopback_port as free_port
from package_manager.processes import wait_until

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
MISSING = (
    "Orthanc is the reference these tests compare with, and it is missing: install the Debian "
    "packages orthanc and orthanc-dicomweb (expected {0})."
)


def _answers(url: str) -> bool:
    """Whether Orthanc answers ``url`` with anything but a server error."""
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.ConnectionError:
        return False


@dataclass
class Orthanc:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def upload(self, files: list[Path]) -> int:
        """Store files through the REST API; the number Orthanc accepted."""
        stored = 0
        with requests.Session() as session:
            for path in files:
                response = session.post(f"{self.url}/instances", data=path.read_bytes())
                if response.status_code == 200:
                    stored += 1
        return stored

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def missing_orthanc() -> list[str]:
    return [str(p) for p in (ORTHANC, DICOMWEB_PLUGIN) if not p.exists()]


def start_orthanc(folder: Path) -> Orthanc:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "hdh-conformance",
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = folder / "orthanc.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(ORTHANC), str(folder / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT
        )
    server = Orthanc(process, port)
    try:
        wait_until(
            lambda: _answers(f"{server.url}/system"),
            timeout=60,
            what=f"Orthanc on {server.url}",
            process=process,
            log=log,
            interval=0.1,
        )
    except Exception:
        server.stop()
        raise
    return server


@dataclass
class Service:
    server: uvicorn.Server
    thread: threading.Thread
    port: int

    @property
    def dicomweb(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def start_service(app, port: int | None = None, lifespan: str = "off") -> Service:
    """``app`` under uvicorn in a thread on ``port`` (a free one by default), once it listens."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the test server did not start on port {port}")
        time.sleep(0.02)
    return Service(server, thread, port)
