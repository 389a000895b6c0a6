"""The workspace image: JupyterLab with a Python and an R (IRkernel) kernel, as build files.

A workspace's approved Python and R packages become an ``ImageDefinition``; ``files()`` renders
the Dockerfile, ``requirements.txt`` and ``install.R`` a registry builds, and ``digest`` names the
image after exactly those files, so the same packages always give the same tag and any change
gives a new one. ``hdh_assets.workspaces.kernels`` builds the same kernels on the current machine
to prove that R runs inside Jupyter next to Python.

Package names end up in build files run by pip and R as root, so every name is validated here:
a requirement is a name, optional extras and version specifiers (no URLs, markers, options or
shell characters), and an R package is a CRAN name.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

IMAGE_NAME = "hdh/jupyter-workspace"
BASE_IMAGE = "python:3.11-slim-bookworm"  # Debian bookworm: the R the kernel test runs
JUPYTER_PORT = 8888
WORKSPACE_UID = 1000
WORKSPACE_USER = "hdh"
# The server's command. No --IdentityProvider.token='': see the comment above CMD in the Dockerfile.
JUPYTER_COMMAND: tuple[str, ...] = (
    "jupyter",
    "lab",
    "--ip=0.0.0.0",
    f"--port={JUPYTER_PORT}",
    "--no-browser",
)

# Debian packages that put R and its Jupyter kernel in the image; kernels.py checks the same list.
APT_PACKAGES: tuple[str, ...] = ("r-base-core", "r-cran-irkernel")
# Compilers and headers for CRAN source packages, only installed when there are some to build.
R_BUILD_APT_PACKAGES: tuple[str, ...] = ("r-base-dev",)
# What JupyterLab needs to offer the kernels, and to run as a member's server of the Hub
# (jupyterhub-singleuser, the same major version as the Hub); always in requirements.txt.
JUPYTER_REQUIREMENTS: tuple[str, ...] = ("jupyterlab>=4.4", "ipykernel>=6.29", "jupyterhub>=6.1,<7")
# RStudio inside each member's Jupyter server, behind the Hub's sign-in (only when asked).
RSTUDIO_REQUIREMENTS: tuple[str, ...] = ("jupyter-server-proxy>=4.4", "jupyter-rsession-proxy>=2.2")
DEFAULT_PIP_INDEX = "https://pypi.org/simple"
DEFAULT_CRAN_MIRROR = "https://cloud.r-project.org"

# Shipped with R itself: never installed from CRAN (install.packages refuses them), only checked.
BASE_R_PACKAGES = frozenset(
    {
        "base",
        "compiler",
        "datasets",
        "grDevices",
        "graphics",
        "grid",
        "methods",
        "parallel",
        "splines",
        "stats",
        "stats4",
        "tcltk",
        "tools",
        "utils",
    }
)

# installspec returns the exit code of `jupyter kernelspec install` instead of failing: quit with it.
IR_KERNEL_INSTALLSPEC = "quit(status = IRkernel::installspec(user = FALSE{args}))"

_REQUIREMENT_CHARS = re.compile(r"[A-Za-z0-9._\-\[\],<>=!~*+ ]")
_CRAN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9.]*[A-Za-z0-9]")


@dataclass(frozen=True)
class ImageDefinition:
    """The packages of one workspace image; fields are normalised, sorted and validated."""

    python_packages: tuple[str, ...]  # pip requirement strings, normalised and sorted
    r_packages: tuple[str, ...]  # CRAN package names, sorted
    rstudio: bool = False  # RStudio Server, opened through jupyter-rsession-proxy

    def __post_init__(self) -> None:
        object.__setattr__(self, "python_packages", normalise_requirements(self.python_packages))
        object.__setattr__(self, "r_packages", normalise_r_packages(self.r_packages))

    @property
    def requirements(self) -> tuple[str, ...]:
        """What requirements.txt installs: Jupyter's own requirements merged with the project's."""
        extra = RSTUDIO_REQUIREMENTS if self.rstudio else ()
        return normalise_requirements((*JUPYTER_REQUIREMENTS, *extra, *self.python_packages))

    @property
    def cran_packages(self) -> tuple[str, ...]:
        """The R packages install.R fetches: all but those shipped with R."""
        return tuple(name for name in self.r_packages if name not in BASE_R_PACKAGES)

    def files(self) -> dict[str, str]:
        """The build context: the same definition always renders the same bytes."""
        return {
            "Dockerfile": _dockerfile(self),
            "requirements.txt": _requirements_txt(self),
            "install.R": _install_r(self),
        }

    @property
    def digest(self) -> str:
        """12 hex characters of sha256 over the build files: the image tag."""
        sha = hashlib.sha256()
        for name, text in sorted(self.files().items()):
            for part in (name.encode(), text.encode()):
                sha.update(len(part).to_bytes(8, "big"))
                sha.update(part)
        return sha.hexdigest()[:12]

    def reference(self, registry: str) -> str:
        """Where the image is pushed and pulled from, tagged by its digest."""
        registry = registry.strip().rstrip("/")
        if not registry or any(c.isspace() for c in registry):
            raise ValueError(
                f"registry {registry!r} refused: expected a host[/path] like ghcr.io/org"
            )
        return f"{registry}/{IMAGE_NAME}:{self.digest}"


def image_definition(
    python_packages: Sequence[str], r_packages: Sequence[str], *, rstudio: bool = False
) -> ImageDefinition:
    """Validate and normalise a workspace's approved packages into an image definition."""
    return ImageDefinition(
        python_packages=tuple(_strings(python_packages, "python_packages")),
        r_packages=tuple(_strings(r_packages, "r_packages")),
        rstudio=rstudio,
    )


def normalise_requirements(requirements: Iterable[str]) -> tuple[str, ...]:
    """Canonical names, sorted extras and specifiers; one line per project, sorted by name."""
    merged: dict[str, tuple[set[str], SpecifierSet]] = {}
    for text in _strings(requirements, "python_packages"):
        requirement = parse_requirement(text)
        name = canonicalize_name(requirement.name)
        extras, specifier = merged.get(name, (set(), SpecifierSet()))
        extras |= {canonicalize_name(extra) for extra in requirement.extras}
        merged[name] = (extras, specifier & requirement.specifier)
    return tuple(
        name + (f"[{','.join(sorted(extras))}]" if extras else "") + str(specifier)
        for name, (extras, specifier) in sorted(merged.items())
    )


def parse_requirement(text: str) -> Requirement:
    """A requirement limited to name, extras and versions: nothing pip or a shell could run."""
    if not text.strip():
        raise ValueError("Python package '' refused: the requirement is empty")
    bad = sorted({c for c in text if not _REQUIREMENT_CHARS.fullmatch(c)})
    if "@" in bad:
        raise ValueError(
            f"Python package {text!r} refused: direct URL references bypass the package index"
        )
    if bad:
        raise ValueError(
            f"Python package {text!r} refused: character(s) {''.join(bad)!r} not allowed; a "
            "requirement is a name, optional [extras] and version specifiers"
        )
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(
            f"Python package {text!r} refused: not a valid requirement ({exc})"
        ) from exc


def normalise_r_packages(names: Iterable[str]) -> tuple[str, ...]:
    """Valid CRAN names, deduplicated, in a case-insensitive then exact order."""
    unique = set()
    for name in _strings(names, "r_packages"):
        if not _CRAN_NAME.fullmatch(name):
            raise ValueError(
                f"R package {name!r} refused: a CRAN name has letters, digits and '.', starts "
                "with a letter, does not end with '.' and has at least two characters"
            )
        unique.add(name)
    return tuple(sorted(unique, key=lambda name: (name.casefold(), name)))


def _strings(values: Iterable[str], field: str) -> list[str]:
    """Refuse a bare string (it would be read as a list of characters) and non-strings."""
    if isinstance(values, str):
        raise TypeError(f"{field} must be a sequence of strings, not the string {values!r}")
    values = list(values)
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"{field} must hold strings, got {value!r}")
    return values


def _apt_install(packages: Iterable[str]) -> str:
    return (
        "RUN apt-get update \\\n"
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\\n"
        f"      {' '.join(packages)} \\\n"
        " && rm -rf /var/lib/apt/lists/*\n"
    )


def _dockerfile(definition: ImageDefinition) -> str:
    apt = APT_PACKAGES + (R_BUILD_APT_PACKAGES if definition.cran_packages else ())
    installspec = IR_KERNEL_INSTALLSPEC.format(args="")
    return (
        "# syntax=docker/dockerfile:1\n"
        "# Generated by hdh_assets.workspaces.image: JupyterLab with Python and R (IRkernel)\n"
        "# kernels and the workspace's approved packages. Do not edit: change the definition.\n"
        f"FROM {BASE_IMAGE}\n"
        "\n"
        "# The package proxies; build arguments, so they do not change the image digest.\n"
        f"ARG PIP_INDEX_URL={DEFAULT_PIP_INDEX}\n"
        f"ARG CRAN_MIRROR={DEFAULT_CRAN_MIRROR}\n"
        "ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1\n"
        "\n"
        "# R and its Jupyter kernel from Debian, so R runs inside JupyterLab next to Python.\n"
        + _apt_install(apt)
        + "\n"
        "COPY requirements.txt /tmp/hdh/requirements.txt\n"
        "RUN pip install -r /tmp/hdh/requirements.txt\n"
        "\n"
        "# install.R fails the build when a package did not install (install.packages only warns).\n"
        "COPY install.R /tmp/hdh/install.R\n"
        "RUN Rscript /tmp/hdh/install.R && rm -rf /tmp/hdh\n"
        "\n"
        "# Registers the IR kernel system-wide; it calls `jupyter kernelspec install`, hence after pip.\n"
        f'RUN Rscript -e "{installspec}" \\\n'
        " && jupyter kernelspec list\n"
        "\n"
        + (_rstudio_server() if definition.rstudio else "")
        + f"RUN useradd --create-home --uid {WORKSPACE_UID} --user-group --shell /bin/bash "
        f"{WORKSPACE_USER}\n"
        f"USER {WORKSPACE_UID}:{WORKSPACE_UID}\n"
        f"WORKDIR /home/{WORKSPACE_USER}\n"
        f"EXPOSE {JUPYTER_PORT}\n"
        "\n"
        "# In a workspace the Hub starts this image with jupyterhub-singleuser: members sign in at\n"
        "# the Hub. Run alone, Jupyter's own token stays on (it is not disabled with\n"
        "# --IdentityProvider.token=''), because the server listens on all interfaces: without\n"
        "# JUPYTER_TOKEN, Jupyter makes a random token, so nothing is ever left open.\n"
        f"CMD {json.dumps(list(JUPYTER_COMMAND))}\n"
    )


def _rstudio_server() -> str:
    """RStudio Server from Posit's .deb (in no Debian or PyPI registry): the build names the
    file and its sha256, from the package proxy, so the image is what was approved."""
    return (
        "# RStudio Server, opened inside Jupyter by jupyter-rsession-proxy (Posit's .deb).\n"
        "ARG RSTUDIO_SERVER_DEB_URL\n"
        "ARG RSTUDIO_SERVER_DEB_SHA256\n"
        'RUN test -n "$RSTUDIO_SERVER_DEB_URL" && test -n "$RSTUDIO_SERVER_DEB_SHA256" \\\n'
        ' && python -c "import sys, urllib.request; '
        "urllib.request.urlretrieve(sys.argv[1], '/tmp/rstudio-server.deb')\" "
        '"$RSTUDIO_SERVER_DEB_URL" \\\n'
        ' && echo "$RSTUDIO_SERVER_DEB_SHA256  /tmp/rstudio-server.deb" | sha256sum -c - \\\n'
        " && apt-get update \\\n"
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\\n"
        "      /tmp/rstudio-server.deb \\\n"
        " && rm -rf /var/lib/apt/lists/* /tmp/rstudio-server.deb\n"
        "\n"
    )


def _requirements_txt(definition: ImageDefinition) -> str:
    lines = [
        "# Generated by hdh_assets.workspaces.image: Jupyter and the workspace's approved packages.",
        *definition.requirements,
    ]
    return "\n".join(lines) + "\n"


def _r_vector(names: Iterable[str]) -> str:
    quoted = [f'"{name}"' for name in names]  # CRAN names hold no quote or backslash
    return f"c({', '.join(quoted)})" if quoted else "character(0)"


def _install_r(definition: ImageDefinition) -> str:
    return (
        "# Generated by hdh_assets.workspaces.image: the workspace's approved R packages.\n"
        "# The mirror (a CRAN proxy in production) comes from the CRAN_MIRROR build argument.\n"
        f'options(repos = c(CRAN = Sys.getenv("CRAN_MIRROR", "{DEFAULT_CRAN_MIRROR}")))\n'
        f"install <- {_r_vector(definition.cran_packages)}\n"
        f"required <- {_r_vector(definition.r_packages)}\n"
        "if (length(install) > 0) install.packages(install, Ncpus = parallel::detectCores())\n"
        "# install.packages only warns when a package fails: fail the build instead.\n"
        "found <- vapply(required, requireNamespace, logical(1), quietly = TRUE)\n"
        "if (!all(found)) {\n"
        '  stop("R packages not installed: ", paste(required[!found], collapse = ", "))\n'
        "}\n"
    )
