"""app-config.js as the platform renders it: JavaScript that defines window.config."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from viewer.config import DATA_SOURCE, ViewerOptions, render_app_config

NODE = shutil.which("node")


def evaluate(text: str) -> dict:
    """Run the text as a browser would (a window object, a document) and return window.config."""
    if NODE is None:
        pytest.skip("node is not installed (the viewer's set-up needs it: npm ci)")
    script = (
        "const vm = require('vm'); const fs = require('fs');"
        "const ctx = {window: {}, document: {}}; vm.createContext(ctx);"
        "vm.runInContext(fs.readFileSync(0, 'utf8'), ctx);"
        "process.stdout.write(JSON.stringify({config: ctx.window.config,"
        " title: ctx.document.title}));"
    )
    done = subprocess.run(
        [NODE, "-e", script], input=text, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_the_rendered_config_defines_the_dicomweb_data_source():
    result = evaluate(render_app_config("/dicom-web", "Imaging of cohort-a"))
    config = result["config"]
    assert result["title"] == "Imaging of cohort-a"
    assert config["defaultDataSourceName"] == "hdh"
    (source,) = config["dataSources"]
    assert source["namespace"] == DATA_SOURCE
    assert source["sourceName"] == "hdh"
    settings = source["configuration"]
    assert settings["qidoRoot"] == settings["wadoRoot"] == settings["wadoUriRoot"] == "/dicom-web"
    assert settings["imageRendering"] == settings["thumbnailRendering"] == "wadors"
    assert settings["acceptHeader"] == [
        "multipart/related; type=application/octet-stream; transfer-syntax=*"
    ]
    assert settings["bulkDataURI"]["enabled"] is True
    assert settings["friendlyName"] == "Imaging of cohort-a"
    assert config["showStudyList"] is True


def test_roots_lose_their_trailing_slash_and_options_apply():
    options = ViewerOptions(
        show_study_list=False,
        max_web_workers=1,
        extra={"investigationalUseDialog": {"option": "never"}},
    )
    config = evaluate(render_app_config("https://pacs.example/dicom-web/", "t", options))["config"]
    assert config["dataSources"][0]["configuration"]["qidoRoot"] == "https://pacs.example/dicom-web"
    assert config["showStudyList"] is False
    assert config["maxNumberOfWebWorkers"] == 1
    assert config["investigationalUseDialog"] == {"option": "never"}


def test_a_hostile_title_stays_a_string():
    title = "x'; alert(1); '</script><script>alert(2)</script>\u2028"
    result = evaluate(render_app_config("/dicom-web", title))
    assert result["title"] == title
    assert result["config"]["dataSources"][0]["configuration"]["friendlyName"] == title


def test_the_data_source_is_a_store_target_but_not_an_upload_one():
    settings = evaluate(render_app_config())["config"]["dataSources"][0]["configuration"]
    assert settings["supportsStow"] is True  # segmentations are saved to it (STOW-RS)
    assert settings["dicomUploadEnabled"] is False  # no upload of arbitrary local files
