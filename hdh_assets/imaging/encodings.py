"""The same instance in another encoding, or a real conflict?

Two pseudonymised files with one SOP Instance UID but different bytes are the same instance when
only their encoding differs: another transfer syntax (implicit or explicit VR, byte order, a
lossless compression), the same attributes once decoded, and the same pixel values once
decompressed. Anything else (an attribute changed, one pixel different, a lossy re-encoding) is a
conflict. Decoding happens only here, for the rare files whose UID is already taken.
"""

from __future__ import annotations

import enum
import io

import numpy as np
import pydicom
from pydicom.dataset import Dataset

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class Comparison(enum.StrEnum):
    SAME = "same"
    DIFFERENT = "different"
    UNDECIDED = "undecided"  # the pixel data could not be decoded to compare


def compare_instances(stored: bytes, candidate: bytes) -> tuple[Comparison, str]:
    """Whether ``candidate`` is ``stored`` in another encoding, and why not (no value quoted)."""
    first, second = (pydicom.dcmread(io.BytesIO(b)) for b in (stored, candidate))
    if first.file_meta.TransferSyntaxUID == second.file_meta.TransferSyntaxUID:
        return Comparison.DIFFERENT, "same transfer syntax, different bytes"
    changed = _changed_attributes(first, second)
    if changed:
        return Comparison.DIFFERENT, f"{len(changed)} attribute(s) differ once decoded"
    has_pixels = [any(k in ds for k in PIXEL_KEYWORDS) for ds in (first, second)]
    if not any(has_pixels):
        return Comparison.SAME, ""
    if not all(has_pixels):
        return Comparison.DIFFERENT, "only one of the two has pixel data"
    try:
        pixels = [ds.pixel_array for ds in (first, second)]
    except Exception as error:  # no decoder for this syntax here, or corrupt fragments
        return Comparison.UNDECIDED, f"pixel data could not be decoded ({type(error).__name__})"
    if pixels[0].shape != pixels[1].shape or not np.array_equal(pixels[0], pixels[1]):
        return Comparison.DIFFERENT, "pixel values differ"
    return Comparison.SAME, ""


def _changed_attributes(first: Dataset, second: Dataset) -> list[str]:
    """Attributes (File Meta and pixel data aside) whose decoded values differ."""
    tags = set(first.keys()) | set(second.keys())
    keys = {t for t in tags if t.group != 0x7FE0 and t.element != 0}  # group lengths: encoding
    changed = []
    for tag in sorted(keys):
        a, b = first.get(tag), second.get(tag)
        if a is None or b is None or a.value != b.value:
            changed.append(str(tag))
    return changed
