"""The OHIF Viewer v3 in Debian's chromium: the project's study list, a CT/MR study rendered,
its SEG listed, a segmentation painted and saved (STOW-RS). The DICOMweb service and the viewer's
server run in threads on free ports; the browser talks only to the viewer (same origin), which
adds the project's token."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pydicom
import pytest
from playwright.sync_api import Error as PlaywrightError

from dicomweb.app import create_app as create_dicomweb
from dicomweb.stow import split_parts
from dicomweb.tokens import Tokens
from tests.browser import chromium_browser
from tests.dicomweb.servers import start_service
from tests.viewer.conftest import PROJECT, TOKEN_KEY
from viewer.server import DIST, TokenSource, create_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]
RENDER_SECONDS = 120
SEG_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
REPORT_NAME = "HDH brush test"


@pytest.fixture(scope="module")
def servers(viewer_store) -> tuple[str, str]:
    """(the viewer's URL, the DICOMweb service's root)."""
    if not (DIST / "index.html").is_file():
        pytest.fail(f"the OHIF viewer is not installed ({DIST}): run `make viewer-deps`")
    tokens = Tokens(TOKEN_KEY)
    dicomweb = start_service(create_dicomweb(viewer_store.home, tokens))
    viewer = start_service(
        create_app(dicomweb.dicomweb, TokenSource(tokens.issue, PROJECT), f"Imaging: {PROJECT}")
    )
    yield f"http://127.0.0.1:{viewer.port}", dicomweb.dicomweb
    viewer.stop()
    dicomweb.stop()


@pytest.fixture(scope="module")
def viewer_url(servers) -> str:
    return servers[0]


@pytest.fixture(scope="module")
def page(viewer_url):
    with chromium_browser() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.requests_seen = []
        page.on("request", lambda r: page.requests_seen.append(r))
        yield page
        context.close()


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
        shot = viewport_shot(page)
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
    before = red_fraction(viewport_shot(page))
    page.locator("[data-cy=studyBrowser-panel]").get_by_text("SEG", exact=True).first.dblclick()
    deadline = time.monotonic() + RENDER_SECONDS
    fraction = 0.0
    while time.monotonic() < deadline:
        dismiss(page)
        for name in ("Yes", "Load"):
            button = page.get_by_role("button", name=name, exact=True)
            if button.count() and button.first.is_visible():
                button.first.click()
        shot = viewport_shot(page)
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


def seg_series(dicomweb: str, study: str) -> set[str]:
    """The SEG series of the study, as QIDO-RS lists them to the project's token."""
    token = Tokens(TOKEN_KEY).issue(PROJECT, 600)
    answer = httpx.get(
        f"{dicomweb}/studies/{study}/series",
        params={"Modality": "SEG"},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"},
    )
    answer.raise_for_status()
    return {s["0020000E"]["Value"][0] for s in (answer.json() if answer.content else [])}


def viewport_shot(page) -> bytes:
    """The first viewport's canvas as PNG. OHIF replaces the canvas when a viewport changes
    (a SEG loaded, a layout redrawn), so a screenshot may catch the old one detached: retry."""
    for attempt in range(10):
        try:
            return page.locator("[data-cy=viewport-pane] canvas").first.screenshot()
        except PlaywrightError:
            if attempt == 9:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def wait_for_image(page, tmp_path: Path) -> None:
    """Until the first viewport shows an image (not blank)."""
    canvas = page.locator("[data-cy=viewport-pane] canvas").first
    canvas.wait_for(timeout=60_000)
    deadline = time.monotonic() + RENDER_SECONDS
    while time.monotonic() < deadline:
        dismiss(page)
        if grey(viewport_shot(page)).std() > 5:
            return
        time.sleep(1)
    page.screenshot(path=tmp_path / "blank.png")
    pytest.fail(f"the viewport stayed blank ({tmp_path / 'blank.png'})")


def paint(page) -> None:
    """Add a segmentation, take the brush and drag it across the middle of the first viewport."""
    page.get_by_text("Add segmentation", exact=True).click()
    page.locator("[data-cy=Brush-btn]").click()
    box = page.locator("[data-cy=viewport-pane]").first.bounding_box()
    x, y = box["x"] + box["width"] / 2 - 60, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(30):
        page.mouse.move(x + 4 * step, y + 3 * (step % 5), steps=2)
    page.mouse.up()


def save_to_data_source(page, viewer_url: str):
    """Segmentation menu > Export > DICOM SEG, name the report, Save: OHIF's STOW-RS request."""
    page.locator("[data-cy=segmentation-collapsed-more-btn-Labelmap]").click()
    page.get_by_role("menuitem", name="Export").hover()
    page.get_by_role("menuitem", name="DICOM SEG").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_placeholder("Report name").fill(REPORT_NAME)
    stow = f"{viewer_url}/dicom-web/studies"
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.split("?")[0] == stow, timeout=60_000
    ) as answer:
        dialog.get_by_role("button", name="Save", exact=True).click()
    return answer.value


def test_a_segmentation_painted_in_ohif_is_stored_by_stow_and_found_after_reload(
    page, servers, viewer_store, tmp_path
):
    """Segmentation mode on the MR series: add a segmentation, paint with the brush, save it to
    the data source. OHIF's SEG (the painted pixels, over the MR series) goes through the proxy,
    which removes the viewer's free text (the typed report name, dcmjs's comment) and adds the
    project's token, to STOW-RS, whose checks are the same as for any caller. It is stored,
    QIDO lists it, WADO returns it, and after a reload the viewer lists it from the server."""
    viewer_url, dicomweb = servers
    study, series = viewer_store.study, viewer_store.series
    quarantine = viewer_store.home.quarantine / "dicomweb"
    sidecars = set(quarantine.glob("*/*.json"))
    segs = seg_series(dicomweb, study)
    assert viewer_store.seg_series in segs  # QIDO answers; the conftest SEG is listed
    started = time.monotonic()
    page.goto(
        f"{viewer_url}/segmentation?StudyInstanceUIDs={study}&initialSeriesInstanceUID={series}"
    )
    wait_for_image(page, tmp_path)
    wait_for_seg_thumbnails(page, len(segs), tmp_path)  # what the server holds, before saving
    before = red_fraction(viewport_shot(page))
    paint(page)
    painted = red_fraction(viewport_shot(page))
    page.screenshot(path=tmp_path / "painted.png")
    assert before < 0.001 and painted > 0.01, f"nothing painted ({tmp_path / 'painted.png'})"

    answer = save_to_data_source(page, viewer_url)
    request = answer.request
    print(
        f"painted {painted:.1%} red, STOW answered {answer.status} after "
        f"{time.monotonic() - started:.1f} s; screenshots in {tmp_path}"
    )
    # The browser sent the SEG as STOW-RS to its own origin, with no token.
    assert "authorization" not in request.headers
    assert request.headers["content-type"].startswith("multipart/related")
    assert REPORT_NAME.encode() in request.post_data_buffer
    # Stored: every instance accepted, nothing quarantined, one more SEG series in the study.
    assert answer.status == 200, answer.text()
    (stored,) = answer.json()["00081199"]["Value"]
    assert "00081198" not in answer.json()
    assert set(quarantine.glob("*/*.json")) == sidecars
    (new_series,) = seg_series(dicomweb, study) - segs
    token = Tokens(TOKEN_KEY).issue(PROJECT, 600)
    sop = stored["00081155"]["Value"][0]
    retrieved = httpx.get(
        f"{dicomweb}/studies/{study}/series/{new_series}/instances/{sop}",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": 'multipart/related; type="application/dicom"',
        },
    )
    retrieved.raise_for_status()
    boundary = retrieved.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    (part,) = split_parts(retrieved.content, boundary)
    seg = pydicom.dcmread(io.BytesIO(part))
    assert seg.SOPClassUID in SEG_CLASSES and seg.Modality == "SEG"
    assert seg.StudyInstanceUID == study and seg.SeriesInstanceUID == new_series
    # The viewer's free text is gone; the painted pixels and the references are OHIF's.
    assert "SeriesDescription" not in seg and "ImageComments" not in seg
    assert seg.PatientIdentityRemoved == "YES" and REPORT_NAME.encode() not in part
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == series
    mr = set(viewer_store.index.filter(pl.col("series_instance_uid") == series)["sop_instance_uid"])
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} <= mr
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    assert (frames > 0).sum() > 50, "the SEG holds no painted pixel"
    print(f"OHIF's SEG: {seg.file_meta.TransferSyntaxUID.name}, {(frames > 0).sum()} pixels set")
    # After a reload the viewer lists both SEG series from the server (its local copy is gone).
    page.reload()
    wait_for_image(page, tmp_path)
    wait_for_seg_thumbnails(page, len(segs) + 1, tmp_path)


def wait_for_seg_thumbnails(page, count: int, tmp_path: Path) -> None:
    """Until the study browser lists ``count`` SEG series."""
    browser = page.locator("[data-cy=studyBrowser-panel]")
    deadline = time.monotonic() + 60
    while (listed := browser.get_by_text("SEG", exact=True).count()) != count:
        if time.monotonic() > deadline:
            page.screenshot(path=tmp_path / "study-browser.png")
            pytest.fail(f"{listed} SEG series listed, not {count} ({tmp_path})")
        time.sleep(1)
