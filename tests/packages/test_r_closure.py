"""R closures against the synthetic upstream: R's own dependency answer, real files and hashes,
and a stated reason for every request that cannot be satisfied."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tarfile
from pathlib import Path

import pytest

from hdh_assets.workspaces.image import BASE_R_PACKAGES
from package_manager.model import PackageRequest, UpstreamUnavailable
from package_manager.r_closure import (
    RscriptNotFound,
    fetch_r_archive,
    parse_dcf,
    resolve_r,
    store_path,
)
from synthetic.r_packages import (
    FIXED_MTIME,
    RPackageSpec,
    archive_bytes,
    build_r_upstream,
    build_r_upstream_bulk,
    upstream_specs,
    write_archive,
)
from tests.dicomweb.servers import free_port
from tests.packages.r_upstream import (
    archive_requests,
    r_install,
    require_rscript,
    run_r,
    serve_folder,
)

BASE_DEPENDENCIES = {"stats", "utils", "methods", "base"}


def request(name: str, version: str | None = None, project: str = "cohort-a") -> PackageRequest:
    return PackageRequest(
        project, "cran", name, version, "analysis", "alice", "2026-12-07T09:00:00Z"
    )


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_rscript()
    return build_r_upstream(tmp_path_factory.mktemp("cran"))


@pytest.fixture(scope="module")
def served(upstream: dict):
    with serve_folder(Path(upstream["folder"])) as served:
        yield served


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_archives_are_byte_identical_and_carry_fixed_times(tmp_path: Path) -> None:
    for spec in upstream_specs():
        assert archive_bytes(spec) == archive_bytes(spec)
    spec = upstream_specs()[0]
    path = write_archive(spec, tmp_path)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert {m.mtime for m in members} == {FIXED_MTIME}
    assert f"{spec.name}/DESCRIPTION" in {m.name for m in members}
    changed = RPackageSpec(spec.name, "9.9.9", spec.title)
    assert archive_bytes(changed) != archive_bytes(spec)


def test_rscript_missing_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: dict
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RscriptNotFound, match="r-base-core"):
        resolve_r(request("hdhsurv"), upstream["url"], work_dir=tmp_path / "work")


@pytest.mark.slow
def test_index_parsing_agrees_with_r(upstream: dict) -> None:
    """The Python reading of PACKAGES (used to check versions before R runs) is R's reading."""
    index = Path(upstream["contrib"]) / "PACKAGES"
    code = (
        "d <- read.dcf(commandArgs(TRUE)[1]); for (i in seq_len(nrow(d))) for (f in colnames(d))"
        ' if (!is.na(d[i, f])) cat(d[i, "Package"], f, d[i, f], sep = "\\t", fill = FALSE, "\\n")'
    )
    result = run_r(code, str(index))
    assert result.returncode == 0, result.stderr
    from_r = {tuple(line.split("\t")[:3]) for line in result.stdout.splitlines() if line}
    from_python = {
        (record["Package"], key, value)
        for record in parse_dcf(index.read_text())
        for key, value in record.items()
    }
    assert from_python == from_r


@pytest.mark.slow
def test_closure_of_hdhsurv_is_exact_with_real_hashes(
    upstream: dict, served, tmp_path: Path
) -> None:
    closure = resolve_r(request("hdhsurv"), served.url, work_dir=tmp_path)
    assert closure.error is None
    names = [p.name for p in closure.packages]
    assert names == ["hdhsurv", "hdhcore", "hdhstats"]  # requested first, then by name
    assert set(names) == set(upstream["closures"]["hdhsurv"])
    assert not BASE_DEPENDENCIES & set(names)
    store = tmp_path / "store"
    for package in closure.packages:
        expected = upstream["packages"][package.name]
        assert package.version == expected["version"]
        assert package.sha256 == expected["sha256"] == sha256_of(Path(expected["path"]))
        stored = store_path(store, package.sha256, package.filename)
        assert sha256_of(stored) == package.sha256
        assert package.url == f"{served.url}/src/contrib/{expected['filename']}"
        assert package.license == "MIT + file LICENSE"
        assert package.requested == (package.name == "hdhsurv")
    requires = {p.name: p.requires for p in closure.packages}
    assert requires == {"hdhsurv": ("hdhstats",), "hdhstats": ("hdhcore",), "hdhcore": ()}
    assert closure.resolver.startswith("R 4.") and closure.upstream == served.url
    assert closure.request_id == "cohort-a--cran--hdhsurv--latest"


@pytest.mark.slow
def test_closures_over_file_urls_linking_to_and_archived_versions(
    upstream: dict, tmp_path: Path
) -> None:
    url = upstream["url"]
    linked = resolve_r(request("hdhlinked"), url, work_dir=tmp_path)
    assert {p.name for p in linked.packages} == set(upstream["closures"]["hdhlinked"])
    assert linked.packages[0].requires == ("hdhcore",)
    archived = resolve_r(request("hdhstats", "1.0.0"), url, work_dir=tmp_path)
    assert archived.error is None
    [package] = archived.packages
    expected = upstream["archived"]["hdhstats"]["1.0.0"]
    assert (package.version, package.sha256) == ("1.0.0", expected["sha256"])
    assert package.url.endswith("/src/contrib/Archive/hdhstats/hdhstats_1.0.0.tar.gz")
    current = resolve_r(request("hdhstats", "2.0.1"), url, work_dir=tmp_path)
    assert [p.name for p in current.packages] == ["hdhstats", "hdhcore"]


@pytest.mark.slow
def test_licences_are_the_declared_text(upstream: dict, tmp_path: Path) -> None:
    unknown = resolve_r(request("hdhunknown"), upstream["url"], work_dir=tmp_path)
    gpl = resolve_r(request("hdhgpl"), upstream["url"], work_dir=tmp_path)
    assert [p.license for p in unknown.packages] == ["file LICENSE"]
    assert [p.license for p in gpl.packages] == ["GPL-3"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "version", "must_name"),
    [
        ("hdhabsent", None, ["hdhabsent", "not in the repository"]),
        ("hdhsurv", "9.9.9", ["hdhsurv (9.9.9)", "hdhsurv 1.0.0", "Archive"]),
        ("hdhmissingdep", None, ["unsatisfiable", "hdhnowhere", "required by hdhmissingdep"]),
    ],
)
def test_unsatisfiable_requests_are_refused_with_the_reason(
    upstream: dict, served, tmp_path: Path, name: str, version: str | None, must_name: list[str]
) -> None:
    closure = resolve_r(request(name, version), served.url, work_dir=tmp_path)
    assert closure.packages == ()
    assert closure.error is not None
    assert closure.error.startswith(f"{request(name, version).requirement}: ")
    for text in must_name:
        assert text in closure.error


@pytest.mark.slow
def test_a_version_constraint_the_repository_cannot_meet(tmp_path: Path) -> None:
    folder = tmp_path / "cran"
    build_r_upstream(folder)
    contrib = folder / "src" / "contrib"
    (contrib / "hdhstats_2.0.1.tar.gz").unlink()
    write_archive(RPackageSpec("hdhstats", "1.5.0", "Statistics", depends=("stats",)), contrib)
    run_r('tools::write_PACKAGES(commandArgs(TRUE)[1], type = "source")', str(contrib))
    closure = resolve_r(request("hdhsurv"), folder.as_uri(), work_dir=tmp_path / "work")
    assert closure.error is not None
    assert "hdhsurv 1.0.0 requires hdhstats (>= 2.0.0)" in closure.error
    assert "1.5.0" in closure.error


@pytest.mark.slow
def test_an_archive_that_does_not_match_the_index_md5_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cran"
    build_r_upstream(folder)
    tampered = RPackageSpec("hdhcore", "1.2.0", "Core Helpers", extra_code="x <- 1\n")
    write_archive(tampered, folder / "src" / "contrib")  # same name, other bytes; index unchanged
    closure = resolve_r(request("hdhsurv"), folder.as_uri(), work_dir=tmp_path / "work")
    assert closure.error is not None
    assert "hdhcore_1.2.0.tar.gz" in closure.error and "MD5" in closure.error


@pytest.mark.slow
def test_each_archive_is_downloaded_once(upstream: dict, tmp_path: Path) -> None:
    with serve_folder(Path(upstream["folder"])) as served:
        first = resolve_r(request("hdhsurv"), served.url, work_dir=tmp_path)
        assert sorted(archive_requests(served)) == sorted(
            f"/src/contrib/{upstream['packages'][n]['filename']}"
            for n in ("hdhsurv", "hdhstats", "hdhcore")
        )
        resolve_r(request("hdhlinked", project="cohort-b"), served.url, work_dir=tmp_path)
        again = resolve_r(request("hdhsurv"), served.url, work_dir=tmp_path)
        archives = archive_requests(served)
    assert again == first
    assert len(archives) == 4  # hdhlinked was the only new archive
    for package in first.packages:  # a known sha256 is found in the store without a request
        assert fetch_r_archive(package, tmp_path / "store").parent.name == package.sha256


def test_unreachable_repositories_raise(tmp_path: Path) -> None:
    portal = tmp_path / "portal" / "src" / "contrib"
    portal.mkdir(parents=True)
    (portal / "PACKAGES").write_text('<html><a href="https://login.example">Sign in</a></html>\n')
    with serve_folder(tmp_path / "portal") as login_page:
        for url in (
            f"http://127.0.0.1:{free_port()}",  # nothing listens
            (tmp_path / "nowhere").as_uri(),  # no such folder
            f"{login_page.url}/elsewhere",  # answers, without an index
            login_page.url,  # answers with a page that is not an index
        ):
            with pytest.raises(UpstreamUnavailable):
                resolve_r(request("hdhsurv"), url, work_dir=tmp_path)


@pytest.mark.slow
def test_a_large_closure(tmp_path: Path) -> None:
    described = build_r_upstream_bulk(tmp_path / "bulk", 300)
    closure = resolve_r(request(described["largest"]), described["url"], work_dir=tmp_path)
    assert closure.error is None
    assert sorted(p.name for p in closure.packages) == described["closure_of_largest"]
    assert len(closure.packages) > 50
    for package in closure.packages:
        assert package.sha256 == described["packages"][package.name]["sha256"]
    shutil.rmtree(tmp_path / "bulk")


@pytest.mark.slow
def test_base_packages_come_from_r_and_match_the_image(upstream: dict) -> None:
    result = run_r('cat(rownames(installed.packages(priority = "base")), sep = "\\n")')
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == BASE_R_PACKAGES


@pytest.mark.slow
def test_versions_for_another_r_and_several_listed_versions(tmp_path: Path) -> None:
    folder = tmp_path / "cran"
    build_r_upstream(folder)
    contrib = folder / "src" / "contrib"
    write_archive(RPackageSpec("hdhfuture", "1.0.0", "Future", depends=("R (>= 99.0)",)), contrib)
    write_archive(RPackageSpec("hdhwaits", "1.0.0", "Waits", imports=("hdhfuture",)), contrib)
    write_archive(RPackageSpec("hdhcore", "1.1.0", "Core Helpers, older"), contrib)
    code = 'tools::write_PACKAGES(commandArgs(TRUE)[1], type = "source", latestOnly = FALSE)'
    assert run_r(code, str(contrib)).returncode == 0
    url, work = folder.as_uri(), tmp_path / "work"

    future = resolve_r(request("hdhfuture"), url, work_dir=work)
    assert future.error is not None and "cannot be installed on R 4." in future.error
    waits = resolve_r(request("hdhwaits"), url, work_dir=work)
    assert waits.error is not None
    assert "hdhfuture (required by hdhwaits) is in the repository but cannot be installed" in (
        waits.error
    )
    latest = resolve_r(request("hdhcore"), url, work_dir=work)
    assert [p.version for p in latest.packages] == ["1.2.0"]
    older = resolve_r(request("hdhcore", "1.1.0"), url, work_dir=work)
    assert older.error is None
    assert [(p.version, p.url) for p in older.packages] == [
        ("1.1.0", f"{url}/src/contrib/hdhcore_1.1.0.tar.gz")
    ]


@pytest.mark.slow
def test_the_fetching_package_installs_offline(upstream: dict, tmp_path: Path) -> None:
    """Its payload is for the vetting to find: installing it (which loads it) must not fail."""
    source = archive_bytes(next(s for s in upstream_specs() if s.name == "hdhfetch"))
    code = gzip.decompress(source)
    assert b"utils::download.file(url" in code and b"source(url)" in code
    result = r_install("hdhfetch", upstream["url"], tmp_path / "lib")
    assert "INSTALLED TRUE" in result.stdout, result.stdout + result.stderr
