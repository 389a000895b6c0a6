"""The Python closure resolver against real archives served by pypiserver.

What matters: the closure holds exactly the packages an install needs, each with the hash of the
very file the index serves; pip and uv agree; every kind of impossible request is refused with a
reason naming the requirement; an unreachable index is never mistaken for a refusal; and nothing of
the machine's own pip or uv configuration leaks into a closure.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from package_manager.model import PackageRequest, ResolvedPackage, UpstreamUnavailable
from package_manager.python_closure import fetch_archive, read_metadata, resolve_python
from synthetic.python_packages import (
    SyntheticPackage,
    build_python_upstream,
    build_python_upstream_bulk,
    bulk_name,
    sdist,
    wheel,
)
from tests.packages.upstream import Upstream, start_pypiserver

RESOLVERS = ("uv", "pip")


def request(name: str, version: str | None = None, project: str = "p1") -> PackageRequest:
    return PackageRequest(
        project, "pypi", name, version, "analysis", "alice", "2026-12-01T10:00:00Z"
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- the synthetic upstream


def test_archives_are_reproducible_byte_for_byte(tmp_path: Path) -> None:
    first = build_python_upstream(tmp_path / "a")
    second = build_python_upstream(tmp_path / "b")
    assert first["packages"] == second["packages"]
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for package in first["packages"]:
        for filename, digest in package["files"].items():
            assert sha256(tmp_path / "a" / filename) == digest


def test_upstream_holds_every_special_case(tmp_path: Path) -> None:
    description = build_python_upstream(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"hdh_tabular-1.0.0-py3-none-any.whl", "hdh_tabular-1.1.0-py3-none-any.whl"} <= files
    assert {
        "hdh_vulnerable-1.0.0-py3-none-any.whl",
        "hdh_vulnerable-1.0.1-py3-none-any.whl",
    } <= files
    assert [f for f in files if f.startswith("hdh_setup_fetch")] == ["hdh_setup_fetch-0.1.0.tar.gz"]
    assert [f for f in files if f.startswith("hdh_windows_only")] == [
        "hdh_windows_only-1.0.0-cp27-cp27m-win32.whl"
    ]
    assert "reqests-2.31.0-py3-none-any.whl" in files
    assert description["special"]["typosquat_of_requests"] == "reqests"
    assert description["special"]["unsatisfiable"] == "hdh-conflict-a"
    assert description["special"]["no_licence"] == "hdh-unknown-licence"


def test_wheels_carry_complete_metadata_and_a_true_record(tmp_path: Path) -> None:
    name, data = wheel(SyntheticPackage("hdh-core", "1.0.0", license="Apache-2.0"))
    path = tmp_path / name
    path.write_bytes(data)
    with zipfile.ZipFile(path) as archive:
        metadata = archive.read("hdh_core-1.0.0.dist-info/METADATA").decode()
        assert "Metadata-Version: 2.2\nName: hdh-core\nVersion: 1.0.0\n" in metadata
        assert "License: Apache-2.0" in metadata
        assert "Tag: py3-none-any" in archive.read("hdh_core-1.0.0.dist-info/WHEEL").decode()
        record = archive.read("hdh_core-1.0.0.dist-info/RECORD").decode().splitlines()
        listed = {line.split(",")[0] for line in record}
        assert listed == set(archive.namelist())
        for line in record:
            member, digest, size = line.split(",")
            if digest:
                content = archive.read(member)
                expected = hashlib.sha256(content).digest()
                assert (
                    digest == "sha256=" + base64.urlsafe_b64encode(expected).rstrip(b"=").decode()
                )
                assert int(size) == len(content)


def test_metadata_is_read_from_the_archive_without_running_it(tmp_path: Path) -> None:
    build_python_upstream(tmp_path)
    expected = {
        "hdh_tabular-1.1.0-py3-none-any.whl": ("MIT", ("hdh-numbers",)),
        "hdh_numbers-1.0.0-py3-none-any.whl": ("BSD-3-Clause", ("hdh-core",)),
        "hdh_core-1.2.0-py3-none-any.whl": ("Apache-2.0", ()),
        "hdh_core-1.2.0.tar.gz": ("Apache-2.0", ()),
        "hdh_unknown_licence-1.0.0-py3-none-any.whl": (None, ()),
        "hdh_gpl-1.0.0-py3-none-any.whl": ("GPL-3.0-only", ()),
        "hdh_vulnerable-1.0.0-py3-none-any.whl": ("License :: OSI Approved :: MIT License", ()),
        "hdh_setup_fetch-0.1.0.tar.gz": ("MIT", ()),
        "hdh_conflict_a-1.0.0-py3-none-any.whl": ("MIT", ("hdh-conflict-b", "hdh-core")),
    }
    for filename, declared in expected.items():
        assert read_metadata(tmp_path / filename) == declared, filename
    tabular = tmp_path / "hdh_tabular-1.1.0-py3-none-any.whl"
    assert read_metadata(tabular, extras=["plots"])[1] == ("hdh-numbers", "hdh-plotting")


def test_the_setup_fetch_sdist_downloads_and_executes(tmp_path: Path) -> None:
    build_python_upstream(tmp_path)
    with tarfile.open(tmp_path / "hdh_setup_fetch-0.1.0.tar.gz") as archive:
        setup_py = archive.extractfile("hdh_setup_fetch-0.1.0/setup.py").read().decode()
    assert "urllib.request.urlopen(" in setup_py and "exec(code)" in setup_py
    assert "except Exception" in setup_py  # the build itself still succeeds offline


def test_bulk_upstream_is_deterministic_and_closed(tmp_path: Path) -> None:
    first = build_python_upstream_bulk(tmp_path / "a", 40)
    second = build_python_upstream_bulk(tmp_path / "b", 40)
    assert first["packages"] == second["packages"]
    names = {p["name"] for p in first["packages"]}
    assert names == {bulk_name(i) for i in range(40)}
    for package in first["packages"]:
        for requirement in package["requires"]:
            assert requirement.split(">=")[0] in names
    assert any(len(p["requires"]) == 2 for p in first["packages"])


# ---------------------------------------------------------------- closures


@pytest.mark.slow
@pytest.mark.parametrize("resolver", RESOLVERS)
def test_closure_of_tabular_is_exact(
    python_upstream: Upstream, tmp_path: Path, resolver: str
) -> None:
    closure = resolve_python(
        request("hdh-tabular"), python_upstream.url, work_dir=tmp_path, resolver=resolver
    )
    assert closure.error is None
    by_name = {p.name: p for p in closure.packages}
    assert set(by_name) == {"hdh-tabular", "hdh-numbers", "hdh-core"}
    assert {p.version for p in closure.packages} == {"1.1.0", "1.0.0", "1.2.0"}
    assert by_name["hdh-tabular"].version == "1.1.0"
    for package in closure.packages:
        served = python_upstream.folder / package.filename
        assert package.filename.endswith("-py3-none-any.whl")
        assert package.sha256 == sha256(served)
        assert package.url.startswith(f"http://127.0.0.1:{python_upstream.port}/")
        assert package.url.endswith("/" + package.filename)
    assert [p.name for p in closure.packages if p.requested] == ["hdh-tabular"]
    assert by_name["hdh-tabular"].requires == ("hdh-numbers",)
    assert by_name["hdh-numbers"].requires == ("hdh-core",)
    assert by_name["hdh-core"].requires == ()
    assert by_name["hdh-tabular"].license == "MIT"
    assert by_name["hdh-numbers"].license == "BSD-3-Clause"
    assert by_name["hdh-core"].license == "Apache-2.0"
    assert closure.resolver.startswith(f"{resolver} ")
    assert closure.target.startswith("Python 3.")
    assert closure.upstream == python_upstream.url
    assert closure.request_id == "p1--pypi--hdh-tabular--latest"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "version"),
    [("hdh-tabular", None), ("hdh-tabular", "1.0.0"), ("HDH_Core", None), ("reqests", None)],
)
def test_pip_and_uv_give_the_same_closure(
    python_upstream: Upstream, tmp_path: Path, name: str, version: str | None
) -> None:
    closures = {
        resolver: resolve_python(
            request(name, version), python_upstream.url, work_dir=tmp_path, resolver=resolver
        )
        for resolver in RESOLVERS
    }
    assert closures["uv"].error is None
    assert closures["uv"].packages == closures["pip"].packages
    assert closures["uv"].target == closures["pip"].target


@pytest.mark.slow
def test_sdist_only_package_resolves_to_its_sdist_without_running_setup_py(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "setup-py-ran"
    folder = tmp_path / "upstream"
    folder.mkdir()
    setup_py = (
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from setuptools import setup\nsetup(name='hdh-probe', version='0.1.0')\n"
    )
    probe = SyntheticPackage(
        "hdh-probe", "0.1.0", license="MIT", wheel_tag=None, sdist=True, setup_py=setup_py
    )
    filename, data = sdist(probe)
    (folder / filename).write_bytes(data)
    upstream = start_pypiserver(folder)
    try:
        closure = resolve_python(request("hdh-probe"), upstream.url, work_dir=tmp_path / "work")
    finally:
        upstream.stop()
    assert closure.error is None
    assert [(p.filename, p.license) for p in closure.packages] == [
        ("hdh_probe-0.1.0.tar.gz", "MIT")
    ]
    assert not marker.exists()  # static PKG-INFO: uv read it, nothing of the sdist ran


@pytest.mark.slow
def test_setup_fetch_closure_is_its_sdist(python_upstream: Upstream, tmp_path: Path) -> None:
    closure = resolve_python(request("hdh-setup-fetch"), python_upstream.url, work_dir=tmp_path)
    assert closure.error is None
    (package,) = closure.packages
    assert package.filename == "hdh_setup_fetch-0.1.0.tar.gz"
    assert package.sha256 == sha256(python_upstream.folder / package.filename)


# ---------------------------------------------------------------- refusals


REFUSALS = [
    (("hdh-does-not-exist", None), "not found:", "hdh-does-not-exist"),
    (("hdh-core", "9.0"), "no matching version:", "hdh-core==9.0"),
    (("hdh-conflict-a", None), "unsatisfiable:", "hdh-conflict-a"),
    (("hdh-windows-only", None), "no installable file:", "hdh-windows-only"),
]


@pytest.mark.slow
@pytest.mark.parametrize("resolver", RESOLVERS)
@pytest.mark.parametrize(("asked", "kind", "named"), REFUSALS)
def test_impossible_requests_are_refused_naming_the_requirement(
    python_upstream: Upstream,
    tmp_path: Path,
    resolver: str,
    asked: tuple[str, str | None],
    kind: str,
    named: str,
) -> None:
    closure = resolve_python(
        request(*asked), python_upstream.url, work_dir=tmp_path, resolver=resolver
    )
    assert closure.packages == ()
    assert closure.error is not None
    assert closure.error.startswith(kind), closure.error
    assert named in closure.error


@pytest.mark.slow
def test_refusal_reasons_carry_the_evidence(python_upstream: Upstream, tmp_path: Path) -> None:
    missing = resolve_python(request("hdh-core", "9.0"), python_upstream.url, work_dir=tmp_path)
    assert "available: 1.0.0, 1.2.0" in missing.error
    windows = resolve_python(request("hdh-windows-only"), python_upstream.url, work_dir=tmp_path)
    assert "hdh_windows_only-1.0.0-cp27-cp27m-win32.whl" in windows.error
    conflict = resolve_python(request("hdh-conflict-a"), python_upstream.url, work_dir=tmp_path)
    assert "hdh-core<1" in conflict.error


def test_a_request_that_is_not_a_plain_requirement_is_refused(tmp_path: Path) -> None:
    for name in ("--index-url=http://elsewhere/", "x @ https://example.org/x.whl"):
        closure = resolve_python(request(name), "http://127.0.0.1:9/simple/", work_dir=tmp_path)
        assert closure.error is not None and closure.error.startswith("invalid requirement:")


# ---------------------------------------------------------------- the upstream itself


@pytest.mark.slow
@pytest.mark.parametrize("resolver", RESOLVERS)
def test_a_stopped_upstream_raises_instead_of_refusing(tmp_path: Path, resolver: str) -> None:
    folder = tmp_path / "upstream"
    build_python_upstream(folder)
    upstream = start_pypiserver(folder)
    upstream.stop()
    with pytest.raises(UpstreamUnavailable):
        resolve_python(request("hdh-tabular"), upstream.url, work_dir=tmp_path, resolver=resolver)


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b"maintenance")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_index() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("resolver", RESOLVERS)
def test_an_upstream_answering_5xx_raises(
    failing_index: str, tmp_path: Path, resolver: str
) -> None:
    with pytest.raises(UpstreamUnavailable):
        resolve_python(request("hdh-tabular"), failing_index, work_dir=tmp_path, resolver=resolver)


@pytest.mark.slow
@pytest.mark.parametrize("resolver", RESOLVERS)
def test_machine_pip_and_uv_settings_do_not_leak(
    python_upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resolver: str
) -> None:
    """A newer hdh-core offered through find-links and extra indexes must not be chosen."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    filename, data = wheel(SyntheticPackage("hdh-core", "9.9.9", license="MIT"))
    (elsewhere / filename).write_bytes(data)
    for variable in ("PIP_FIND_LINKS", "UV_FIND_LINKS"):
        monkeypatch.setenv(variable, str(elsewhere))
    for variable in ("PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_INDEX"):
        monkeypatch.setenv(variable, elsewhere.as_uri())
    monkeypatch.setenv("PIP_INDEX_URL", elsewhere.as_uri())
    closure = resolve_python(
        request("hdh-core"), python_upstream.url, work_dir=tmp_path / "work", resolver=resolver
    )
    assert closure.error is None
    (package,) = closure.packages
    assert package.version == "1.2.0"
    assert package.url.startswith(f"http://127.0.0.1:{python_upstream.port}/")


# ---------------------------------------------------------------- the archive store


@pytest.mark.slow
def test_fetch_archive_stores_by_content_and_checks_the_hash(
    python_upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    filename = "hdh_numbers-1.0.0-py3-none-any.whl"
    digest = sha256(python_upstream.folder / filename)
    url = f"http://127.0.0.1:{python_upstream.port}/packages/{filename}"
    package = ResolvedPackage("pypi", "hdh-numbers", "1.0.0", filename, url, digest)
    store = tmp_path / "store"
    path = fetch_archive(package, store)
    assert path == store / digest[:2] / digest / filename
    assert sha256(path) == digest

    import package_manager.python_closure as closure_module

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("downloaded twice")

    monkeypatch.setattr(closure_module.httpx, "stream", no_network)
    assert fetch_archive(package, store) == path
    monkeypatch.undo()

    wrong = ResolvedPackage("pypi", "hdh-numbers", "1.0.0", filename, url, "0" * 64)
    with pytest.raises(ValueError) as refused:
        fetch_archive(wrong, store)
    assert filename in str(refused.value)
    assert digest in str(refused.value) and "0" * 64 in str(refused.value)
    assert not (store / "00").exists() or not any((store / "00").rglob("*.whl"))


def _half_failing_handler(upstream: str) -> type[http.server.BaseHTTPRequestHandler]:
    """Serves the requested project's page and files from ``upstream``; 503 for everything else."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith(("/simple/hdh-tabular/", "/packages/")):
                answer = httpx.get(upstream + self.path)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "text/html"))
                self.end_headers()
                self.wfile.write(answer.content)
                return
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.mark.slow
@pytest.mark.parametrize("resolver", RESOLVERS)
def test_an_upstream_failing_during_resolution_raises(
    python_upstream: Upstream, tmp_path: Path, resolver: str
) -> None:
    """The requested name answers, a dependency's page does not: no partial closure, a retry."""
    base = f"http://127.0.0.1:{python_upstream.port}"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _half_failing_handler(base))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        index = f"http://127.0.0.1:{server.server_address[1]}/simple/"
        with pytest.raises(UpstreamUnavailable):
            resolve_python(request("hdh-tabular"), index, work_dir=tmp_path, resolver=resolver)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_pip_cannot_prepare_an_sdist_without_its_build_backend(
    python_upstream: Upstream, tmp_path: Path
) -> None:
    """pip builds every sdist's metadata; setuptools is not on this upstream, so it refuses."""
    closure = resolve_python(
        request("hdh-setup-fetch"), python_upstream.url, work_dir=tmp_path, resolver="pip"
    )
    assert closure.packages == ()
    assert closure.error.startswith("build failed: hdh-setup-fetch"), closure.error
