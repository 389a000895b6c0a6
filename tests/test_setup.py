"""Set-up a newcomer can trust: `make test` and `make demo` install the system packages the tests
need through one target, CI uses the same target, and the UI opens on the platform."""

import re
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import yaml

from hdh_assets.workspaces.image import APT_PACKAGES

ROOT = Path(__file__).resolve().parents[1]


def _system_packages() -> dict[str, str]:
    lines = (ROOT / "tools" / "system-packages.txt").read_text().splitlines()
    rows = [line.split(None, 1) for line in lines if line.strip() and not line.startswith("#")]
    return {package: purpose for package, purpose in rows}


def _prerequisites(target: str) -> list[str]:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:([^#\n]*)", makefile, re.MULTILINE)
    assert match, f"no {target} target in the Makefile"
    return match.group(1).split()


def test_make_test_and_make_demo_install_the_system_packages():
    assert "system-deps" in _prerequisites("test")
    assert "system-deps" in _prerequisites("demo")
    assert "tools/system-deps.sh" in (ROOT / "Makefile").read_text()


def test_the_package_list_covers_what_the_tests_use():
    packages = _system_packages()
    assert set(APT_PACKAGES) <= set(packages)  # the workspace image's R kernel
    assert {"chromium", "dicom3tools"} <= set(packages)  # browser and dciodvfy tests
    assert all(purpose.strip() for purpose in packages.values())


def test_ci_installs_through_the_makefile_not_a_list_of_its_own():
    script = (ROOT / ".ci" / "run").read_text()
    assert "apt-get" not in script and "make test" in script


def test_on_this_machine_every_system_package_is_installed():
    """The script itself, with CI=true: it exits 0 only when nothing is missing (or it installed
    what was), and its checks are the same dpkg queries the tests' dependencies answer to."""
    result = subprocess.run(
        ["bash", str(ROOT / "tools" / "system-deps.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CI": "true"},
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr
    assert shutil.which("dciodvfy") and shutil.which("chromium") and shutil.which("R")


def test_the_instance_profiles_do_not_show_dagsters_sign_up_dialog(tmp_path):
    for profile in sorted((ROOT / "deploy" / "dagster").glob("*.yaml")):
        assert yaml.safe_load(profile.read_text())["nux"] == {"enabled": False}, profile.name
    shutil.copy(ROOT / "deploy" / "dagster" / "sqlite.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.nux_enabled is False
