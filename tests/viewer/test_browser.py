"""The OHIF Viewer v3 in Debian's chromium: the project's study list, a CT/MR study rendered,
its SEG listed. The DICOMweb service and the viewer's server run in threads on free ports; the
browser talks only to the viewer (same origin), which adds the project's token."""

from __future__ import annotations

import io
import re
import shutil
import time

import numpy as np
import polars as pl
import pydicom
import pytest

from dicomweb.app import create_app as create_dicomweb
from dicomweb.tokens import Tokens
from tests.dicomweb.servers import start_service
from tests.viewer.conftest import PROJECT, TOKEN_KEY
from viewer.server import DIST, TokenSource, create_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM_ARGS = ["--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"]
RENDER_SECONDS = 120


@pytest.fixture(scope="module")
def viewer_url(viewer_store):
    if not (DIST / "index.html").is_file():
        pytest.fail(f"the OHIF viewer is not installed ({DIST}): run `make viewer-deps`")
    tokens = Tokens(TOKEN_KEY)
    dicomweb = start_service(create_dicomweb(viewer_store.home, tokens))
    viewer = start_service(
        create_app(dicomweb.dicomweb, TokenSource(tokens.issue, PROJECT), f"Imaging: {PROJECT}")
    )
    yield f"http://127.0.0.1:{viewer.port}"
    viewer.stop()
    dicomweb.stop()


@pytest.fixture(scope="module")
def page(viewer_url):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian chromium not installed (make system-deps installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.requests_seen = []
        page.on("request", lambda r: page.requests_seen.append(r))
        yield page
        context.close()
        browser.close()


def dismiss(page) -> None:
    """OHIF's first-run tour and its investigational-use banner cover the viewport."""
    for name in ("Skip all", "Confirm and hide"):
        control = page.get_by_text(name, exact=True)
        if control.count() and control.first.is_visible():
            control.first.click()


def instances(cells: list[str]) -> int:
    """The study row's instance count: its last cell holding a number alone."""
    return int([c.strip() for c in cells if c.strip().isdigit()][-1])


def red_fraction(png: bytes) -> float:
    """The share of clearly red pixels: the SEG's first segment as OHIF colours it."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)
    red = (rgb[..., 0] - rgb[..., 1] > 50) & (rgb[..., 0] - rgb[..., 2] > 50)
    return float(red.mean())


def crop_to_content(image: np.ndarray) -> np.ndarray:
    """The image within the rows and columns where more than 5 % of pixels are lit (drops the
    black margins and the viewport's corner texts)."""
    lit = image > image.min() + 0.2 * (image.max() - image.min())
    rows = np.flatnonzero(lit.mean(axis=1) > 0.05)
    columns = np.flatnonzero(lit.mean(axis=0) > 0.05)
    return image[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


def similarity(shown: np.ndarray, expected: np.ndarray) -> float:
    """Correlation of the two images' content, both resampled to 64 x 64."""
    from PIL import Image

    def small(image):
        image = crop_to_content(image.astype(np.float64))
        span = np.ptp(image) or 1.0
        scaled = ((image - image.min()) / span * 255).astype(np.uint8)
        return np.asarray(Image.fromarray(scaled).resize((64, 64)), dtype=np.float64).ravel()

    return float(np.corrcoef(small(shown), small(expected))[0, 1])


def grey(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)


def test_the_study_list_shows_the_projects_studies(page, viewer_url, viewer_store, tmp_path):
    started = time.monotonic()
    page.goto(viewer_url + "/")
    expected = len(viewer_store.granted)
    page.get_by_text(f"1-{expected} of {expected}").wait_for(timeout=60_000)
    # The study rows (the filter row, also in the table body, holds no date)
    rows = page.locator("table tbody tr").filter(has_text=re.compile(r"\b(19|20)\d\d\b"))
    print(f"study list: {rows.count()} rows in {time.monotonic() - started:.1f} s")
    assert rows.count() == expected
    # Each row ends with the study's number of instances: the project's studies, no other.
    index = viewer_store.index.filter(pl.col("study_instance_uid").is_in(viewer_store.granted))
    counts = sorted(index.group_by("study_instance_uid").len()["len"].to_list())
    shown = sorted(instances(rows.nth(i).locator("td").all_inner_texts()) for i in range(expected))
    assert shown == counts
    page.screenshot(path=tmp_path / "study-list.png")
    # Every request left the browser for the viewer's own origin, none with a token.
    assert all(r.url.startswith(viewer_url) for r in page.requests_seen)
    assert not any("authorization" in r.headers for r in page.requests_seen)


def test_a_study_renders_in_the_viewport(page, viewer_url, viewer_store, tmp_path):
    started = time.monotonic()
    page.goto(f"{viewer_url}/viewer?StudyInstanceUIDs={viewer_store.study}")
    canvas = page.locator("[data-cy=viewport-pane] canvas").first
    canvas.wait_for(timeout=60_000)
    deadline = time.monotonic() + RENDER_SECONDS
    pixels = None
    while time.monotonic() < deadline:
        dismiss(page)
        shot = canvas.screenshot()
        pixels = grey(shot)
        if pixels.std() > 5 and len(np.unique(pixels.astype(int))) > 20:
            break
        time.sleep(1)
    elapsed = time.monotonic() - started
    (tmp_path / "viewport.png").write_bytes(shot)
    page.screenshot(path=tmp_path / "viewer.png")
    print(f"rendered in {elapsed:.1f} s; std {pixels.std():.1f}; screenshots in {tmp_path}")
    assert pixels.std() > 5, f"the viewport stayed blank ({tmp_path / 'viewer.png'})"
    assert len(np.unique(pixels.astype(int))) > 20
    # Roughly the stored pixels: the best match among the series' slices correlates well.
    files = viewer_store.index.filter(pl.col("series_instance_uid") == viewer_store.series)
    slices = [
        pydicom.dcmread(viewer_store.home.store / "dicom" / path).pixel_array
        for path in files["store_path"]
    ]
    inner = pixels[40:-40, 40:-40]  # without the viewport's border, scroll bar and corner texts
    best = max(similarity(inner, s) for s in slices)
    print(f"correlation with the stored slice: {best:.2f}")
    assert best > 0.9  # 0.96-0.99 when shown; a blank or other image scores ~0.4


def test_the_studys_seg_loads_as_an_overlay(page, viewer_url, viewer_store, tmp_path):
    """Runs after the study is open: the SEG's thumbnail, double-clicked, paints its segment
    (red) over the series in the viewport."""
    started = time.monotonic()
    dismiss(page)
    canvas = page.locator("[data-cy=viewport-pane] canvas").first
    before = red_fraction(canvas.screenshot())
    page.locator("[data-cy=studyBrowser-panel]").get_by_text("SEG", exact=True).first.dblclick()
    deadline = time.monotonic() + RENDER_SECONDS
    fraction = 0.0
    while time.monotonic() < deadline:
        dismiss(page)
        for name in ("Yes", "Load"):
            button = page.get_by_role("button", name=name, exact=True)
            if button.count() and button.first.is_visible():
                button.first.click()
        shot = page.locator("[data-cy=viewport-pane] canvas").first.screenshot()
        fraction = red_fraction(shot)
        if fraction > 0.01:
            break
        time.sleep(1)
    (tmp_path / "seg-viewport.png").write_bytes(shot)
    page.screenshot(path=tmp_path / "seg.png")
    print(
        f"SEG overlay after {time.monotonic() - started:.1f} s: {fraction:.1%} red pixels "
        f"(before {before:.1%}); screenshots in {tmp_path}"
    )
    assert before < 0.001
    assert fraction > 0.01, f"no overlay painted ({tmp_path / 'seg.png'})"
