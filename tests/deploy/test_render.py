"""The committed deploy/kubernetes/ is what the default settings render, and the command says
when it is not."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hdh_cli.commands.deploy import deploy
from hdh_cli.deployment.render import drift, render
from hdh_cli.deployment.settings import DeploymentSettings, SettingsError, settings_table
from tests.deploy.conftest import COMMITTED


def _committed_files() -> dict[str, str]:
    return {
        path.relative_to(COMMITTED).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(COMMITTED.rglob("*"))
        if path.is_file()
    }


def test_the_committed_folder_is_the_default_rendering():
    rendered = render(DeploymentSettings())
    committed = _committed_files()
    assert sorted(committed) == sorted(rendered)
    for name, text in rendered.items():
        assert committed[name] == text, f"{name} differs: run `hdh deploy kubernetes`"
    assert drift(COMMITTED, rendered) == []


def test_rendering_follows_the_settings():
    default = render(DeploymentSettings())
    other = render(DeploymentSettings(namespace="hdh-prod", image_tag="2.0.0"))
    assert "name: hdh-prod" in other["manifests/00-namespace.yaml"]
    assert "tag: 2.0.0" in other["values.yaml"]
    assert "registry.hdh.example/hdh-platform:2.0.0" in other["Dockerfile"]
    assert {name for name in default if default[name] != other[name]} >= {
        "values.yaml",
        "dagster.yaml",
        "Dockerfile",
        "manifests/00-namespace.yaml",
    }


def test_settings_come_from_the_environment_and_bad_values_are_refused():
    settings = DeploymentSettings.from_env(
        {
            "HDH_DEPLOY_NAMESPACE": "hdh-prod",
            "HDH_DEPLOY_SPARK_MODE": "connect",
            "HDH_DEPLOY_SPARK_EXECUTOR_CORES": "4",
            "HDH_DEPLOY_IMAGE_TAG": "",  # empty: the default
        }
    )
    assert (settings.namespace, settings.spark_mode, settings.spark_executor_cores) == (
        "hdh-prod",
        "connect",
        4,
    )
    assert settings.image_tag == DeploymentSettings().image_tag
    with pytest.raises(SettingsError, match="HDH_DEPLOY_SPARK_MODE"):
        DeploymentSettings.from_env({"HDH_DEPLOY_SPARK_MODE": "cluster"})
    with pytest.raises(SettingsError, match="HDH_DEPLOY_SPARK_EXECUTOR_CORES"):
        DeploymentSettings.from_env({"HDH_DEPLOY_SPARK_EXECUTOR_CORES": "two"})
    assert ("HDH_DEPLOY_SPARK_MODE", "client") in settings_table()


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, _ in settings_table():
        monkeypatch.delenv(variable, raising=False)


def test_the_command_renders_then_check_passes_then_reports_drift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _clean_env(monkeypatch)
    out = tmp_path / "kubernetes"
    runner = CliRunner()
    written = runner.invoke(deploy, ["kubernetes", "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert (out / "values.yaml").is_file() and (out / "manifests" / "00-namespace.yaml").is_file()

    clean = runner.invoke(deploy, ["kubernetes", "--out", str(out), "--check"])
    assert clean.exit_code == 0, clean.output
    assert "up to date" in clean.output

    values = out / "values.yaml"
    values.write_text(values.read_text() + "# edited by hand\n")
    (out / "manifests" / "30-storage.yaml").unlink()
    (out / "manifests" / "99-extra.yaml").write_text("---\n")
    drifted = runner.invoke(deploy, ["kubernetes", "--out", str(out), "--check"])
    assert drifted.exit_code == 1
    for name in ("values.yaml", "manifests/30-storage.yaml", "manifests/99-extra.yaml"):
        assert name in drifted.output, drifted.output
    assert "dagster.yaml" not in drifted.output.replace("values.yaml", "")
    assert values.read_text().endswith("# edited by hand\n")  # --check writes nothing

    again = runner.invoke(deploy, ["kubernetes", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert not (out / "manifests" / "99-extra.yaml").exists()
    assert runner.invoke(deploy, ["kubernetes", "--out", str(out), "--check"]).exit_code == 0


def test_the_command_follows_environment_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _clean_env(monkeypatch)
    out = tmp_path / "kubernetes"
    runner = CliRunner()
    assert runner.invoke(deploy, ["kubernetes", "--out", str(out)]).exit_code == 0
    monkeypatch.setenv("HDH_DEPLOY_SPARK_EXECUTOR_MEMORY", "16g")
    changed = runner.invoke(deploy, ["kubernetes", "--out", str(out), "--check"])
    assert changed.exit_code == 1
    assert "manifests/40-spark.yaml" in changed.output
    monkeypatch.setenv("HDH_DEPLOY_SPARK_MODE", "both")
    refused = runner.invoke(deploy, ["kubernetes", "--out", str(out)])
    assert refused.exit_code != 0 and "HDH_DEPLOY_SPARK_MODE" in refused.output
