"""Licence normalisation to SPDX and its evaluation against the policy, also on real metadata."""

from __future__ import annotations

import importlib.metadata
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from package_manager.vetting.licence import (
    check_licence,
    declared_licence,
    evaluate_expression,
    normalise_licence,
)
from package_manager.vetting.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy

POLICY = load_policy()


@pytest.mark.parametrize(
    ("declared", "spdx"),
    [
        ("MIT", "MIT"),
        ("Apache-2.0", "Apache-2.0"),
        ("apache-2.0", "Apache-2.0"),
        ("Apache 2.0", "Apache-2.0"),
        ("Apache License, Version 2.0", "Apache-2.0"),
        ("MIT License", "MIT"),
        ("BSD 3-Clause", "BSD-3-Clause"),
        ("MIT OR Apache-2.0", "MIT OR Apache-2.0"),
        ("(MIT OR Apache-2.0) AND BSD-3-Clause", "(MIT OR Apache-2.0) AND BSD-3-Clause"),
        ("GPL-2.0+", "GPL-2.0-or-later"),
        ("GPL-2.0-only WITH Classpath-exception-2.0", "GPL-2.0-only WITH Classpath-exception-2.0"),
        ("License :: OSI Approved :: MIT License", "MIT"),
        ("License :: OSI Approved :: Apache Software License", "Apache-2.0"),
        (
            "License :: OSI Approved :: Apache Software License\n"
            "License :: OSI Approved :: BSD License",
            "Apache-2.0 OR BSD-3-Clause",
        ),
        ("License :: OSI Approved :: GNU General Public License v3 (GPLv3)", "GPL-3.0-only"),
        # R DESCRIPTION forms
        ("GPL (>= 2)", "GPL-2.0-or-later"),
        ("GPL-2", "GPL-2.0-only"),
        ("GPL-2 | GPL-3", "GPL-2.0-only OR GPL-3.0-only"),
        ("GPL (>= 3)", "GPL-3.0-or-later"),
        ("LGPL (>= 2.1)", "LGPL-2.1-or-later"),
        ("MIT + file LICENSE", "MIT"),
        ("BSD_3_clause + file LICENSE", "BSD-3-Clause"),
        ("Apache License (== 2.0)", "Apache-2.0"),
        ("GPL-3 + file LICENSE", "GPL-3.0-only AND LicenseRef-R-file-LICENSE"),
        ("Apache License 2.0 | file LICENSE", "Apache-2.0 OR LicenseRef-R-file-LICENSE"),
        ("AGPL-3", "AGPL-3.0-only"),
        ("CC BY-NC 4.0", "CC-BY-NC-4.0"),
        ("Proprietary", "LicenseRef-Proprietary"),
    ],
)
def test_declared_forms_normalise_to_spdx(declared: str, spdx: str) -> None:
    assert normalise_licence(declared).expression == spdx


@pytest.mark.parametrize(
    "declared",
    [None, "", "UNKNOWN", "file LICENSE", "Dual License", "GPLv2 with linking exception"],
)
def test_undeterminable_licences_go_to_review_with_the_raw_text(declared: str | None) -> None:
    result = check_licence(declared, POLICY)
    assert result.status == "needs_review"
    assert result.evidence["spdx"] is None
    assert result.evidence["declared"] == (declared or "")


@pytest.mark.parametrize(
    ("declared", "status"),
    [
        ("MIT", "passed"),
        ("BSD-3-Clause AND MIT AND Zlib", "passed"),
        ("MPL-2.0", "passed"),  # weak copyleft: allowed, see the policy's comment
        ("LGPL-2.1-or-later", "passed"),
        ("GPL-3.0-only", "needs_review"),  # strong copyleft
        ("AGPL-3.0-or-later", "needs_review"),
        ("GPL (>= 2)", "needs_review"),
        ("CC-BY-NC-4.0", "refused"),
        ("Proprietary", "refused"),
        ("MIT OR GPL-3.0-only", "passed"),  # OR: one allowed alternative suffices
        ("MIT AND GPL-3.0-only", "needs_review"),  # AND: every part must be allowed
        ("MIT AND CC-BY-NC-4.0", "refused"),
        ("GPL-3.0-only OR CC-BY-NC-4.0", "needs_review"),
        ("GPL-2.0-only WITH Classpath-exception-2.0", "passed"),
        ("GPL-3 + file LICENSE", "needs_review"),  # the file may add terms
        ("MIT + file LICENSE", "passed"),  # CRAN's MIT template names the holder only
        ("Zope Public License 9", "needs_review"),
    ],
)
def test_policy_evaluation(declared: str, status: str) -> None:
    result = check_licence(declared, POLICY)
    assert result.status == status, result
    assert result.check == "licence"


def test_per_licence_verdicts_are_evidence() -> None:
    verdict, per_licence = evaluate_expression("MIT AND GPL-3.0-only", POLICY)
    assert verdict == "needs_review"
    assert per_licence == {"MIT": "passed", "GPL-3.0-only": "needs_review"}


def _wheel(folder: Path, metadata: str) -> Path:
    path = folder / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("demo/__init__.py", "")
        zf.writestr("demo-1.0.dist-info/METADATA", metadata)
        zf.writestr("demo-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
        zf.writestr("demo-1.0.dist-info/RECORD", "")
    return path


def _r_package(folder: Path, description: str) -> Path:
    path = folder / "demo_1.0-1.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        data = description.encode()
        info = tarfile.TarInfo("demo/DESCRIPTION")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return path


def test_undeclared_licence_is_read_from_the_archive(tmp_path: Path) -> None:
    wheel = _wheel(
        tmp_path,
        "Metadata-Version: 2.4\nName: demo\nVersion: 1.0\nLicense-Expression: Apache-2.0\n\n",
    )
    result = check_licence(None, POLICY, wheel)
    assert (result.status, result.evidence["spdx"]) == ("passed", "Apache-2.0")

    r_archive = _r_package(
        tmp_path,
        "Package: demo\nVersion: 1.0-1\nLicense: GPL-2 |\n    GPL-3\nTitle: Demo\n",
    )
    result = check_licence(None, POLICY, r_archive)
    assert (result.status, result.evidence["spdx"]) == (
        "needs_review",
        "GPL-2.0-only OR GPL-3.0-only",
    )


def test_every_installed_distribution_normalises(capsys: pytest.CaptureFixture[str]) -> None:
    """Data nobody here wrote: the declared licences of this virtualenv's distributions."""
    distributions = {
        (d.metadata["Name"] or "").lower(): d for d in importlib.metadata.distributions()
    }
    expected = {
        "dagster": "Apache-2.0",
        "requests": "Apache-2.0",
        "pandas": "BSD-3-Clause",
        "packaging": "Apache-2.0 OR BSD-2-Clause",
        "click": "BSD-3-Clause",
        "pyyaml": "MIT",
        "certifi": "MPL-2.0",
        "scipy": "BSD-3-Clause",  # the whole licence text in the License field
        "guarddog": "Apache-2.0",
        "license-expression": "Apache-2.0",
    }
    for name, spdx in expected.items():
        assert declared_licence(distributions[name].metadata).expression == spdx, name
    # numpy declares its bundled code's licences too: the main one must be among them
    numpy = declared_licence(distributions["numpy"].metadata).expression or ""
    assert numpy.startswith("BSD-3-Clause")

    undeterminable = []
    for name, dist in sorted(distributions.items()):
        result = declared_licence(dist.metadata)
        if result.expression is None:
            undeterminable.append(f"{name}: {result.raw[:60]!r} ({'; '.join(result.notes)})")
    total = len(distributions)
    with capsys.disabled():
        print(f"\n{total - len(undeterminable)}/{total} installed distributions normalise to SPDX")
        for line in undeterminable:
            print(f"  undeterminable: {line}")
    assert (total - len(undeterminable)) / total >= 0.95


def test_the_default_policy_file_loads() -> None:
    policy = load_policy(DEFAULT_POLICY_PATH)
    assert policy.source == str(DEFAULT_POLICY_PATH)
    assert "MIT" in policy.licences.allowed
    assert policy.typosquatting_max_distance == 1


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("licences:\n  allowed: MIT\n", "licences.allowed"),
        ("licences:\n  allowed: [MIT]\n  forbidden: [GPL-3.0-only]\n", "licences.forbidden"),
        ("licences:\n  allowed: []\n", "licences.allowed"),
        ("licences: {allowed: [MIT]}\nvulnerabilities: {refuse_severities: [severe]}\n", "severe"),
        ("licences: {allowed: [MIT]}\ntyposquatting: {max_distance: two}\n", "max_distance"),
        (
            "licences: {allowed: [MIT]}\nmalicious_code: {high_risk_severities: [urgent]}\n",
            "urgent",
        ),
        ("licenses: {allowed: [MIT]}\n", "licenses"),
        ("licences: [MIT\n", "not valid YAML"),
    ],
)
def test_policy_errors_name_the_file_and_the_entry(tmp_path: Path, text: str, entry: str) -> None:
    path = tmp_path / "bad-policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert str(path) in str(error.value)
    assert entry in str(error.value)


def test_a_missing_policy_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")
