"""The dependency closure of an R package request, resolved against a CRAN-like repository.

R itself computes the closure (``tools::package_dependencies`` over Depends, Imports and
LinkingTo, on ``available.packages``' view of the index), so the answer is the one
``install.packages`` would act on. Python fetches the index once, hands R that snapshot (one
download, and R and the checks below see the same bytes), downloads every archive of the closure
once into a content-addressed store, and records what a referent needs: file, sha256, declared
licence, direct dependencies.

Packages R ships with (priority "base") never enter a closure: they cannot be installed from a
repository and need no vetting. Everything else a closure names must be served by the
repository, at a version that satisfies every constraint, or the request is refused with the
reason. A repository that cannot be reached raises ``UpstreamUnavailable``: the request waits.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from package_manager.files import file_sha256, store_path
from package_manager.model import Closure, PackageRequest, ResolvedPackage, UpstreamUnavailable

DEPENDENCY_FIELDS = ("Depends", "Imports", "LinkingTo")
TIMEOUT_SECONDS = 60
RSCRIPT_MISSING = (
    "Rscript is not on PATH: R package closures and repositories are computed by R itself "
    "(install Debian r-base-core)"
)

# One Rscript call. Arguments: the index snapshot's repository URL, the requested name, a
# DESCRIPTION replacing the index's row for that name (an archived version) or "", the output.
# Output lines are tab-separated: R <version>; BASE <names>; ABSENT <name> <absent|filtered>;
# PKG <name> <version> <direct deps> <md5> <Depends> <Imports> <LinkingTo>; MISSING <name>.
_CLOSURE_R = r"""
args <- commandArgs(TRUE)
repo <- args[1]; wanted <- args[2]; override <- args[3]; out <- file(args[4], "w")
which <- c("Depends", "Imports", "LinkingTo")
clean <- function(x) if (is.null(x) || is.na(x)) "" else gsub("[\t\r\n]+", " ", x)
emit <- function(...) writeLines(paste(c(...), collapse = "\t"), out)
base <- rownames(installed.packages(priority = "base"))
emit("R", as.character(getRversion()))
emit("BASE", paste(base, collapse = ","))
db <- available.packages(repos = repo, type = "source")
if (!(wanted %in% rownames(db))) {
  unfiltered <- available.packages(repos = repo, type = "source", filters = list())
  emit("ABSENT", wanted, if (wanted %in% rownames(unfiltered)) "filtered" else "absent")
} else {
  if (nzchar(override)) {
    d <- read.dcf(override)
    for (f in c("Version", which))
      db[wanted, f] <- if (f %in% colnames(d)) d[1, f] else NA_character_
    db[wanted, "MD5sum"] <- NA_character_
  }
  deps <- tools::package_dependencies(wanted, db = db, which = which, recursive = TRUE)[[1]]
  closure <- setdiff(unique(c(wanted, deps)), base)
  direct <- tools::package_dependencies(closure, db = db, which = which, recursive = FALSE)
  for (p in closure) {
    if (p %in% rownames(db)) {
      emit("PKG", p, db[p, "Version"], paste(setdiff(direct[[p]], base), collapse = ","),
           clean(db[p, "MD5sum"]), clean(db[p, "Depends"]), clean(db[p, "Imports"]),
           clean(db[p, "LinkingTo"]))
    } else emit("MISSING", p)
  }
}
close(out)
"""


class RscriptNotFound(RuntimeError):
    """R is part of the platform's image; without it no R closure or repository can be made."""


class ArchiveMismatch(ValueError):
    """The bytes served are not the ones the index (or an earlier resolution) promised."""


class _NotFound(Exception):
    """The server answered, and the file is not there (unlike an unreachable server)."""


@dataclass(frozen=True)
class RArchive:
    """A source archive to fetch: where it is and what the index says its hashes are."""

    name: str
    version: str
    url: str
    md5: str | None = None
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class _Row:
    """One package of R's answer."""

    name: str
    version: str
    requires: tuple[str, ...]
    md5: str | None
    constraints: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Answer:
    r_version: str
    base: frozenset[str]
    rows: tuple[_Row, ...] = ()
    missing: tuple[str, ...] = ()
    absent: str | None = None  # "absent" or "filtered" when the requested name is not served


def rscript() -> str:
    """The Rscript executable, or a clear error naming what to install."""
    path = shutil.which("Rscript")
    if path is None:
        raise RscriptNotFound(RSCRIPT_MISSING)
    return path


def run_rscript(code: str, args: list[str], *, timeout: float = 300) -> str:
    """Run R code with arguments in a fresh ``Rscript --vanilla``; its stdout, or an error with
    R's own message."""
    result = subprocess.run(
        [rscript(), "--vanilla", "-e", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"Rscript failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def parse_dcf(text: str) -> list[dict[str, str]]:
    """Records of a Debian control file (DESCRIPTION, PACKAGES): continuation lines folded."""
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                records.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key is not None:
            current[key] = f"{current[key]}\n{line.strip()}"
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            current[key] = value.strip()
    if current:
        records.append(current)
    return records


_DEPENDENCY = re.compile(r"^\s*([A-Za-z0-9.]+)\s*(?:\(\s*([<>=!]+)\s*([^)\s]+)\s*\))?\s*$")


def parse_dependencies(text: str) -> list[tuple[str, str | None, str | None]]:
    """``"R (>= 3.5), hdhcore (>= 1.0), stats"`` -> ``[(name, operator, version), ...]``."""
    parsed = []
    for part in text.replace("\n", " ").split(","):
        if not part.strip():
            continue
        match = _DEPENDENCY.match(part)
        if match:
            parsed.append((match.group(1), match.group(2), match.group(3)))
    return parsed


def r_version_key(version: str) -> tuple[int, ...]:
    """R compares versions as integers separated by ``.`` or ``-`` (1.0-2 == 1.0.2)."""
    return tuple(int(part) for part in re.split(r"[.-]", version.strip()) if part.isdigit())


def satisfies(version: str, operator: str, required: str) -> bool:
    """Whether ``version`` meets ``operator required`` (the operators DESCRIPTION allows)."""
    have, want = r_version_key(version), r_version_key(required)
    return {
        ">=": have >= want,
        ">": have > want,
        "<=": have <= want,
        "<": have < want,
        "==": have == want,
        "!=": have != want,
    }.get(operator, False)


def contrib_url(repo_url: str) -> str:
    """Where a CRAN-like repository keeps its source packages."""
    return f"{repo_url.rstrip('/')}/src/contrib"


def _open(url: str):
    """Open a URL, telling 'not there' (_NotFound) from 'cannot reach' (UpstreamUnavailable)."""
    try:
        return urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        if error.code in (404, 410):
            raise _NotFound(url) from error
        raise UpstreamUnavailable(f"{url} answered HTTP {error.code}") from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, FileNotFoundError):
            raise _NotFound(url) from error
        raise UpstreamUnavailable(f"{url} could not be reached: {error.reason}") from error
    except (OSError, ValueError) as error:
        raise UpstreamUnavailable(f"{url} could not be reached: {error}") from error


def fetch_index(repo_url: str) -> str:
    """The repository's PACKAGES index (plain, else gzip), once per resolution."""
    contrib = contrib_url(repo_url)
    for name in ("PACKAGES", "PACKAGES.gz"):
        try:
            with _open(f"{contrib}/{name}") as response:
                data = response.read()
        except _NotFound:
            continue
        except OSError as error:
            raise UpstreamUnavailable(f"{contrib}/{name} could not be read: {error}") from error
        return (gzip.decompress(data) if name.endswith(".gz") else data).decode("utf-8")
    raise UpstreamUnavailable(f"{repo_url} has no PACKAGES index under src/contrib")


def _seen_path(store: Path, archive: RArchive) -> Path:
    """A note that this URL, with this MD5 in the index, was already downloaded (and as what)."""
    key = hashlib.sha256(f"{archive.url}\n{archive.md5}".encode()).hexdigest()
    return store / "seen" / key


def _already_stored(archive: RArchive | ResolvedPackage, store: Path) -> Path | None:
    sha256 = archive.sha256
    if isinstance(archive, RArchive) and not sha256 and archive.md5:
        seen = _seen_path(store, archive)
        sha256 = seen.read_text().strip() if seen.exists() else None
    if not sha256:
        return None
    path = store_path(store, sha256, archive.filename)
    return path if path.exists() and file_sha256(path) == sha256 else None


def fetch_r_archive(archive: RArchive | ResolvedPackage, store: Path) -> Path:
    """The archive's path in the store, downloading it only if the store does not hold it yet.
    Checks the index's MD5sum when it has one, and the sha256 when the caller knows it."""
    found = _already_stored(archive, store)
    if found is not None:
        return found
    (store / "tmp").mkdir(parents=True, exist_ok=True)
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with tempfile.NamedTemporaryFile(dir=store / "tmp", delete=False) as handle:
        partial = Path(handle.name)
        try:
            with _open(archive.url) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    sha.update(block)
                    md5.update(block)
                    handle.write(block)
        except _NotFound as error:
            partial.unlink(missing_ok=True)
            raise UpstreamUnavailable(f"{archive.url} is listed but not served") from error
        except OSError as error:  # a connection dropped or timed out mid-download
            partial.unlink(missing_ok=True)
            raise UpstreamUnavailable(f"{archive.url} could not be read: {error}") from error
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    sha256 = sha.hexdigest()
    expected_md5 = archive.md5 if isinstance(archive, RArchive) else None
    for kind, expected, got in (("MD5", expected_md5, md5), ("sha256", archive.sha256, sha)):
        if expected and expected.lower() != got.hexdigest():
            partial.unlink(missing_ok=True)
            raise ArchiveMismatch(f"{archive.url}: {kind} {got.hexdigest()}, expected {expected}")
    target = store_path(store, sha256, archive.filename)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, target)
    if isinstance(archive, RArchive) and archive.md5:
        seen = _seen_path(store, archive)
        seen.parent.mkdir(parents=True, exist_ok=True)
        seen.write_text(sha256)
    return target


def description_text(archive: Path, name: str) -> str:
    """The DESCRIPTION inside a source archive, without unpacking anything else."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.extractfile(f"{name}/DESCRIPTION")
            if member is None:
                raise ValueError(f"{archive.name} has no {name}/DESCRIPTION")
            return member.read().decode("utf-8", errors="replace")
    except (KeyError, tarfile.TarError) as error:
        raise ValueError(f"{archive.name} is not a source archive of {name}: {error}") from error


def read_description(archive: Path, name: str) -> dict[str, str]:
    """The DESCRIPTION's fields (continuation lines folded)."""
    records = parse_dcf(description_text(archive, name))
    return records[0] if records else {}


def _parse_answer(text: str) -> _Answer:
    r_version, base, rows, missing, absent = "", frozenset(), [], [], None
    for line in text.splitlines():
        kind, *fields = line.split("\t")
        if kind == "R":
            r_version = fields[0]
        elif kind == "BASE":
            base = frozenset(fields[0].split(","))
        elif kind == "ABSENT":
            absent = fields[1]
        elif kind == "MISSING":
            missing.append(fields[0])
        elif kind == "PKG":
            name, version, requires, md5, *constraints = fields
            rows.append(
                _Row(
                    name,
                    version,
                    tuple(r for r in requires.split(",") if r),
                    md5 or None,
                    dict(zip(DEPENDENCY_FIELDS, constraints, strict=True)),
                )
            )
    return _Answer(r_version, base, tuple(rows), tuple(missing), absent)


def run_package_dependencies(
    index_text: str, name: str, override: Path | None, work_dir: Path
) -> _Answer:
    """R's closure of ``name`` over the given index snapshot (one Rscript call)."""
    contrib = work_dir / "index" / "src" / "contrib"
    contrib.mkdir(parents=True, exist_ok=True)
    (contrib / "PACKAGES").write_text(index_text)
    output = work_dir / "closure.tsv"
    repo = (work_dir / "index").resolve().as_uri()
    run_rscript(_CLOSURE_R, [repo, name, str(override or ""), str(output)])
    return _parse_answer(output.read_text())


def _unsatisfied(answer: _Answer, indexed: dict[str, list[dict[str, str]]]) -> str | None:
    """Why the closure cannot be installed: a dependency nobody serves (or served for another R
    or OS), or a version constraint (on R too) that the served version does not meet."""
    if answer.missing:
        name = answer.missing[0]
        by = ", ".join(row.name for row in answer.rows if name in row.requires)
        where = (
            f"is in the repository but cannot be installed on R {answer.r_version}"
            if name in indexed
            else "is not in the repository"
        )
        return f"{name} (required by {by}) {where}"
    versions = {row.name: row.version for row in answer.rows} | {"R": answer.r_version}
    for row in answer.rows:
        for text in row.constraints.values():
            for dep, operator, required in parse_dependencies(text):
                if (
                    operator
                    and dep in versions
                    and not satisfies(versions[dep], operator, required)
                ):
                    return (
                        f"{row.name} {row.version} requires {dep} ({operator} {required}), "
                        f"and the version available is {versions[dep]}"
                    )
    return None


@dataclass(frozen=True)
class _Pinned:
    """A requested version other than the one the index resolves to, fetched ahead of R."""

    path: Path
    url: str


def _pinned_version(
    repo_url: str, name: str, version: str, listed: bool, store: Path
) -> _Pinned | None:
    """An older version still listed in ``src/contrib`` (some repositories list several), or
    kept in ``src/contrib/Archive/<name>/`` as CRAN does; None when neither has it."""
    filename = f"{name}_{version}.tar.gz"
    folder = contrib_url(repo_url) if listed else f"{contrib_url(repo_url)}/Archive/{name}"
    url = f"{folder}/{filename}"
    try:
        return _Pinned(fetch_r_archive(RArchive(name, version, url), store), url)
    except UpstreamUnavailable as error:
        if isinstance(error.__cause__, _NotFound):
            return None
        raise


def _index_by_name(index_text: str) -> dict[str, list[dict[str, str]]]:
    """Name -> its records (a repository may list several versions), newest first."""
    indexed: dict[str, list[dict[str, str]]] = {}
    for record in parse_dcf(index_text):
        indexed.setdefault(record.get("Package", ""), []).append(record)
    for records in indexed.values():
        records.sort(key=lambda record: r_version_key(record.get("Version", "")), reverse=True)
    return indexed


def resolve_r(
    request: PackageRequest, repo_url: str, *, work_dir: Path, store: Path | None = None
) -> Closure:
    """The request's closure over Depends, Imports and LinkingTo, each archive in the store
    (``work_dir/store`` unless given), or the reason the request cannot be satisfied."""
    if request.ecosystem != "cran":
        raise ValueError(f"not an R request: {request.request_id}")
    store = store or work_dir / "store"
    work_dir.mkdir(parents=True, exist_ok=True)
    index_text = fetch_index(repo_url)
    indexed = _index_by_name(index_text)
    if not any(indexed) and index_text.strip():
        raise UpstreamUnavailable(f"{repo_url} answered with something that is not an index")
    name, wanted = request.name, request.version

    def refused(reason: str, r_version: str = "") -> Closure:
        return _closure(request, repo_url, (), r_version, f"{request.requirement}: {reason}")

    if name not in indexed:
        return refused(f"{name} is not in the repository {repo_url}")
    served = indexed[name][0].get("Version", "")
    pinned: _Pinned | None = None
    if wanted and r_version_key(wanted) != r_version_key(served):
        listed = any(
            r_version_key(r.get("Version", "")) == r_version_key(wanted) for r in indexed[name]
        )
        pinned = _pinned_version(repo_url, name, wanted, listed, store)
        if pinned is None:
            return refused(
                f"{name} {wanted} is not in the repository {repo_url} "
                f"(it serves {name} {served}, and keeps no {wanted} in its Archive)"
            )
    try:
        with tempfile.TemporaryDirectory(dir=work_dir, prefix="r-closure-") as scratch:
            description = None
            if pinned is not None:
                description = Path(scratch) / "DESCRIPTION"
                description.write_text(description_text(pinned.path, name))
            answer = run_package_dependencies(index_text, name, description, Path(scratch))
    except ValueError as error:
        return refused(f"the repository serves an inconsistent file: {error}")
    if answer.absent is not None:
        return refused(
            f"{name} is in the repository {repo_url} but cannot be installed on R "
            f"{answer.r_version} (its R version or OS type excludes it)",
            answer.r_version,
        )
    reason = _unsatisfied(answer, indexed)
    if reason is not None:
        return refused(f"unsatisfiable: {reason}", answer.r_version)
    try:
        packages = tuple(
            _resolved(row, repo_url, store, pinned if row.name == name else None, name)
            for row in _ordered(answer.rows, name)
        )
    except ValueError as error:  # ArchiveMismatch included
        return refused(f"the repository serves inconsistent files: {error}", answer.r_version)
    return _closure(request, repo_url, packages, answer.r_version, None)


def _ordered(rows: tuple[_Row, ...], requested: str) -> list[_Row]:
    """The requested package first, then its dependencies by name: stable for diffs and keys."""
    return sorted(rows, key=lambda row: (row.name != requested, row.name))


def _resolved(
    row: _Row, repo_url: str, store: Path, pinned: _Pinned | None, requested: str
) -> ResolvedPackage:
    """Fetch (or find) one archive, check it is the package the index says, record it."""
    if pinned is not None:
        path, url = pinned.path, pinned.url
    else:
        url = f"{contrib_url(repo_url)}/{row.name}_{row.version}.tar.gz"
        path = fetch_r_archive(RArchive(row.name, row.version, url, md5=row.md5), store)
    fields = read_description(path, row.name)
    if fields.get("Package") != row.name or fields.get("Version") != row.version:
        raise ValueError(
            f"{path.name} holds {fields.get('Package')} {fields.get('Version')}, "
            f"the index says {row.name} {row.version}"
        )
    return ResolvedPackage(
        ecosystem="cran",
        name=row.name,
        version=row.version,
        filename=path.name,
        url=url,
        sha256=path.parent.name,
        license=fields.get("License"),
        requires=row.requires,
        requested=row.name == requested,
    )


def _closure(
    request: PackageRequest,
    repo_url: str,
    packages: tuple[ResolvedPackage, ...],
    r_version: str,
    error: str | None,
) -> Closure:
    return Closure(
        request_id=request.request_id,
        ecosystem="cran",
        packages=packages,
        resolver=f"R {r_version or '(not run)'} tools::package_dependencies",
        target=f"R {r_version}" if r_version else "R",
        upstream=repo_url,
        error=error,
    )
