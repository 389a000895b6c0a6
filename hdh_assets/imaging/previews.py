"""One PNG thumbnail per series: the middle instance, middle frame, windowed as a reader would."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

THUMBNAIL_SIZE = 128


def _window(image: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    values = image.astype(np.float64) * slope + intercept
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    try:
        center = float(center[0] if type(center).__name__ == "MultiValue" else center)
        width = float(width[0] if type(width).__name__ == "MultiValue" else width)
    except (TypeError, ValueError):
        center = width = None
    if not width or width <= 1:
        low, high = np.percentile(values, [1, 99]) if values.size else (0.0, 1.0)
    else:
        low, high = center - width / 2, center + width / 2
    if high <= low:
        high = low + 1
    scaled = np.clip((values - low) / (high - low), 0, 1) * 255
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = 255 - scaled
    return scaled.astype(np.uint8)


def render_preview(path: Path, size: int = THUMBNAIL_SIZE) -> bytes:
    """PNG bytes of a thumbnail; raises when the pixel data cannot be decoded."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[frames // 2]
    if samples == 1:
        image = Image.fromarray(_window(pixels, ds), mode="L")
    else:
        if str(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, str(ds.PhotometricInterpretation), "RGB")
        image = Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode="RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
