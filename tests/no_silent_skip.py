"""With ``CI=true`` a skipped test fails the run: CI must run everything, so a test skipped for a
missing dependency means a missing install step, to be fixed, not hidden in a summary line.

Only skips count: an expected failure (``xfail``) and tests left out by ``-m`` are not skips.
Locally the skip stays a skip, with its reason.
"""

from __future__ import annotations

import os

import pytest


def skips_fail() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and skips_fail():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"
    return report
