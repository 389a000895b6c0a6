"""The Kubernetes page lists every setting and run kind the code has, so it cannot fall behind."""

from __future__ import annotations

from hdh_cli.deployment.settings import settings_table
from jobs.run_kinds import RUN_KINDS
from tests.deploy.conftest import ROOT

PAGE = ROOT / "docs" / "capabilities" / "kubernetes.md"


def test_the_page_lists_every_setting_and_run_kind():
    text = PAGE.read_text(encoding="utf-8")
    for variable, default in settings_table():
        assert f"`{variable}`" in text, variable
        assert f"`{default}`" in text, (variable, default)
    for kind in RUN_KINDS:
        assert f"| `{kind}` |" in text, kind
