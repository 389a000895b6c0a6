"""Per-project R repositories: exactly the approved archives, an index R accepts, a read-only
server, and a real ``install.packages`` that installs the approved closure and nothing else."""

from __future__ import annotations

import hashlib
import http.client
import os
from pathlib import Path

import pytest

from package_manager.model import PackageRequest
from package_manager.r_closure import fetch_r_archive, parse_dcf, resolve_r
from package_manager.r_repository import RRepositories, project_url, serve_repositories
from synthetic.r_packages import (
    RPackageSpec,
    build_r_upstream,
    build_r_upstream_bulk,
    write_archive,
)
from tests.dicomweb.servers import free_port
from tests.packages.r_upstream import r_install, require_rscript, run_r, serve_folder


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_rscript()
    return build_r_upstream(tmp_path_factory.mktemp("cran"))


def archive(upstream: dict, name: str) -> Path:
    return Path(upstream["packages"][name]["path"])


def indexed(repositories: RRepositories, project: str) -> dict[str, str]:
    index = (repositories.contrib(project) / "PACKAGES").read_text()
    return {record["Package"]: record["Version"] for record in parse_dcf(index)}


@pytest.fixture
def served_root(tmp_path: Path):
    root = tmp_path / "repositories"
    root.mkdir()
    server, thread = serve_repositories(root)
    yield root, server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.mark.slow
def test_a_server_under_a_path_prefix(upstream: dict, tmp_path: Path) -> None:
    RRepositories(tmp_path).set_project("cohort-a", [archive(upstream, "hdhcore")])
    port = free_port()
    with serve_repositories(tmp_path, url=f"http://127.0.0.1:{port}/cran/") as served:
        assert served.url == f"http://127.0.0.1:{port}/cran"
        assert get(port, "/cran/cohort-a/src/contrib/PACKAGES")[0] == 200
        assert get(port, "/cohort-a/src/contrib/PACKAGES")[0] == 404
        assert get(port, "/cranx/cohort-a/src/contrib/PACKAGES")[0] == 404


def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_a_project_repository_holds_exactly_the_given_archives(
    upstream: dict, tmp_path: Path
) -> None:
    repositories = RRepositories(tmp_path / "repositories")
    first = repositories.set_project("cohort-a", [archive(upstream, "hdhcore")])
    assert first.added == ("hdhcore_1.2.0.tar.gz",) and first.index_rewritten
    assert indexed(repositories, "cohort-a") == {"hdhcore": "1.2.0"}

    second = repositories.set_project(
        "cohort-a", [archive(upstream, n) for n in ("hdhcore", "hdhstats")]
    )
    assert (second.added, second.kept, second.removed) == (
        ("hdhstats_2.0.1.tar.gz",),
        ("hdhcore_1.2.0.tar.gz",),
        (),
    )
    assert indexed(repositories, "cohort-a") == {"hdhcore": "1.2.0", "hdhstats": "2.0.1"}

    unchanged = repositories.set_project(
        "cohort-a", [archive(upstream, n) for n in ("hdhstats", "hdhcore")]
    )
    assert not unchanged.index_rewritten and unchanged.added == unchanged.removed == ()

    # Same file name, other bytes: replaced, and the index describes the new bytes.
    other = write_archive(
        RPackageSpec("hdhstats", "2.0.1", "Statistics, rebuilt", depends=("hdhcore",)),
        tmp_path / "other",
    )
    replaced = repositories.set_project("cohort-a", [archive(upstream, "hdhcore"), other])
    assert replaced.added == ("hdhstats_2.0.1.tar.gz",)
    index = parse_dcf((repositories.contrib("cohort-a") / "PACKAGES").read_text())
    md5 = {record["Package"]: record["MD5sum"] for record in index}
    assert md5["hdhstats"] == hashlib.md5(other.read_bytes()).hexdigest()

    third = repositories.set_project("cohort-a", [archive(upstream, "hdhstats")])
    assert third.removed == ("hdhcore_1.2.0.tar.gz",)
    assert repositories.archives("cohort-a") == ["hdhstats_2.0.1.tar.gz"]
    assert indexed(repositories, "cohort-a") == {"hdhstats": "2.0.1"}
    assert repositories.archives("cohort-b") == []
    leftovers = {p.name for p in (tmp_path / "repositories" / "cohort-a").iterdir()}
    assert leftovers == {"src", ".lock", ".indexed"}  # the staging folder is gone


@pytest.mark.slow
def test_an_interrupted_update_is_finished_by_the_next(
    upstream: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repositories = RRepositories(tmp_path / "repositories")
    repositories.set_project("cohort-a", [archive(upstream, "hdhcore")])
    both = [archive(upstream, n) for n in ("hdhcore", "hdhstats")]
    with monkeypatch.context() as patch:
        patch.setenv("PATH", str(tmp_path))  # no Rscript: the index cannot be written
        with pytest.raises(RuntimeError, match="Rscript"):
            repositories.set_project("cohort-a", both)
    assert indexed(repositories, "cohort-a") == {"hdhcore": "1.2.0"}  # still consistent
    retried = repositories.set_project("cohort-a", both)
    assert retried.added == () and retried.index_rewritten
    assert indexed(repositories, "cohort-a") == {"hdhcore": "1.2.0", "hdhstats": "2.0.1"}


def test_project_ids_and_archive_sets_are_checked(upstream: dict, tmp_path: Path) -> None:
    repositories = RRepositories(tmp_path)
    for project in ("../escape", "Cohort", "a/b", ""):
        with pytest.raises(ValueError, match="project id"):
            repositories.set_project(project, [])
    with pytest.raises(ValueError, match="two versions of hdhstats"):
        older = Path(upstream["archived"]["hdhstats"]["1.0.0"]["path"])
        repositories.set_project("cohort-a", [archive(upstream, "hdhstats"), older])
    assert project_url("http://127.0.0.1:8000/", "cohort-a") == "http://127.0.0.1:8000/cohort-a"


@pytest.mark.slow
def test_the_server_serves_project_files_only(upstream: dict, served_root, tmp_path: Path) -> None:
    root, port = served_root
    RRepositories(root).set_project("cohort-a", [archive(upstream, "hdhcore")])
    (tmp_path / "secret.tar.gz").write_bytes(b"secret")
    contrib = root / "cohort-a" / "src" / "contrib"
    os.symlink(tmp_path / "secret.tar.gz", contrib / "evil_1.0.tar.gz")
    (root / "notes.txt").write_text("not served")

    status, body = get(port, "/cohort-a/src/contrib/hdhcore_1.2.0.tar.gz")
    assert status == 200 and body == archive(upstream, "hdhcore").read_bytes()
    status, body = get(port, "/cohort-a/src/contrib/PACKAGES")
    assert status == 200 and b"Package: hdhcore" in body
    status, body = get(port, "/cohort-a/src/contrib/PACKAGES.rds", method="HEAD")
    assert status == 200 and body == b""
    for path in (
        "/",
        "/cohort-a/",
        "/cohort-a/src/contrib/",
        "/notes.txt",
        "/cohort-a/src/contrib/evil_1.0.tar.gz",  # a link out of the root
        "/cohort-a/src/contrib/../../../notes.txt",
        "/cohort-a/src/contrib/%2e%2e%2f%2e%2e%2f%2e%2e%2fnotes.txt",
        "/cohort-a/src/contrib/..%2f..%2f..%2fnotes.txt",
        "/..%2f..%2f/src/contrib/PACKAGES",
        "/cohort-b/src/contrib/PACKAGES",
    ):
        status, body = get(port, path)
        assert status == 404, path
        assert b"secret" not in body and b"not served" not in body
    for method in ("POST", "PUT", "DELETE"):
        assert get(port, "/cohort-a/src/contrib/PACKAGES", method=method)[0] == 405


@pytest.mark.slow
def test_r_installs_the_approved_closure_and_nothing_else(
    upstream: dict, served_root, tmp_path: Path
) -> None:
    root, port = served_root
    request = PackageRequest(
        "cohort-a", "cran", "hdhsurv", None, "survival", "alice", "2026-12-07T09:00:00Z"
    )
    store = tmp_path / "store"
    with serve_folder(Path(upstream["folder"])) as upstream_server:
        closure = resolve_r(request, upstream_server.url, work_dir=tmp_path, store=store)
    assert closure.error is None
    # The upstream is gone: the project installs from its own repository alone.
    archives = [fetch_r_archive(package, store) for package in closure.packages]
    RRepositories(root).set_project("cohort-a", archives)
    url = project_url(f"http://127.0.0.1:{port}", "cohort-a")

    approved = r_install("hdhsurv", url, tmp_path / "lib")
    assert approved.returncode == 0, approved.stderr
    assert "RESULT returned" in approved.stdout, approved.stdout + approved.stderr
    assert "INSTALLED TRUE" in approved.stdout
    assert "VERSION 1.0.0" in approved.stdout  # library(hdhsurv) loaded and ran its code

    refused = r_install("dplyt", url, tmp_path / "lib-refused")
    assert refused.returncode == 0, refused.stderr
    assert "not available" in refused.stdout
    assert "INSTALLED FALSE" in refused.stdout


@pytest.mark.slow
def test_rebuilding_a_large_project_after_one_approval(tmp_path: Path) -> None:
    described = build_r_upstream_bulk(tmp_path / "bulk", 301)
    paths = [Path(p["path"]) for p in described["packages"].values()]
    repositories = RRepositories(tmp_path / "repositories")
    full = repositories.set_project("cohort-a", paths[:300])
    one_more = repositories.set_project("cohort-a", paths)
    print(f"\n300 archives: {full.seconds:.2f} s; adding one to 300: {one_more.seconds:.2f} s")
    assert one_more.added == (paths[300].name,) and len(one_more.kept) == 300
    assert len(indexed(repositories, "cohort-a")) == 301
    # The incremental index is the one R writes from scratch over the same archives.
    result = run_r(
        'tools::write_PACKAGES(commandArgs(TRUE)[1], type = "source")',
        str(tmp_path / "bulk" / "src" / "contrib"),
    )
    assert result.returncode == 0, result.stderr
    from_scratch = (tmp_path / "bulk" / "src" / "contrib" / "PACKAGES").read_text()
    assert (repositories.contrib("cohort-a") / "PACKAGES").read_text() == from_scratch
