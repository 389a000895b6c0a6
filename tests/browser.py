"""Debian's chromium under Playwright, as the browser tests start it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

# WebGL in software: the viewer's images are drawn with it, and there is no GPU here.
CHROMIUM_ARGS = ["--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"]


@contextmanager
def chromium_browser() -> Iterator:
    """A headless chromium; skipped (a failure in CI) when the Debian package is missing."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian chromium not installed (make system-deps installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
