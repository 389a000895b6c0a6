"""WADO-RS (PS3.18 10.4): instances as stored, metadata, frames, rendered images, bulk data.

Instances are the stored files, byte for byte: the service never transcodes, so a request
naming another transfer syntax is refused (406) and one naming none, ``*`` or the stored one
gets the files with their syntax in each part's Content-Type. Frames are offered as stored
first (native pixel data as ``application/octet-stream`` in Explicit VR Little Endian; a
compressed frame as its own media type), then decoded to ``application/octet-stream`` when the
stored syntax is compressed and pydicom can decode it here. Rendered images are windowed as the
platform's previews are (the image's own window, else its 1st-99th percentiles).
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame

from dicomweb.errors import bad_request, not_acceptable, not_found
from dicomweb.media import (
    COMPRESSED_MEDIA,
    DEFLATED,
    EXPLICIT_BE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    NATIVE_SYNTAXES,
    Offer,
    choose,
)
from hdh_assets.imaging.previews import _window as preview_window

DICOM_JSON = "application/dicom+json"
OCTET = "application/octet-stream"
RENDERED_MEDIA = ("image/jpeg", "image/png")
_FRAME_LIST = re.compile(r"^[0-9]+(,[0-9]+)*$")


def instance_offers(stored_syntaxes: set[str]) -> list[Offer]:
    """The files as they are: one syntax when the study is homogeneous, else ``*`` only."""
    if len(stored_syntaxes) == 1:
        (syntax,) = stored_syntaxes
        return [Offer("application/dicom", True, syntax)]
    return [Offer("application/dicom", True, "*")]


def choose_instances(accept: str | None, stored_syntaxes: set[str]) -> Offer:
    return choose(accept, instance_offers(stored_syntaxes))


def metadata_offer(accept: str | None) -> Offer:
    return choose(accept, [Offer(DICOM_JSON, False), Offer("application/json", False)])


def frame_numbers(text: str, number_of_frames: int) -> list[int]:
    """1-based frame numbers of a frame list; 400 when malformed, 404 when out of range."""
    if not _FRAME_LIST.match(text):
        raise bad_request(f"'{text}' is not a comma-separated list of frame numbers")
    numbers = [int(n) for n in text.split(",")]
    if any(n < 1 or n > number_of_frames for n in numbers):
        raise not_found(f"frame (the instance has {number_of_frames})")
    return numbers


def frame_count(dataset: Dataset) -> int:
    try:
        return max(int(dataset.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _stored_syntax(dataset: Dataset) -> str:
    return str(dataset.file_meta.TransferSyntaxUID)


def _decodable(dataset: Dataset) -> bool:
    from pydicom.pixels.decoders.base import get_decoder

    try:
        return get_decoder(_stored_syntax(dataset)).is_available
    except (NotImplementedError, ValueError):
        return False


def frame_offers(dataset: Dataset) -> list[Offer]:
    syntax = _stored_syntax(dataset)
    if syntax in NATIVE_SYNTAXES:
        return [Offer(OCTET, True, EXPLICIT_LE)]
    offers = [Offer(COMPRESSED_MEDIA.get(syntax, OCTET), True, syntax)]
    if syntax not in COMPRESSED_MEDIA:
        return offers
    offers.append(Offer(OCTET, True, syntax, default=False))  # octet-stream; transfer-syntax=*
    if _decodable(dataset):
        offers.append(Offer(OCTET, True, EXPLICIT_LE))
    return offers


def _little_endian_pixels(dataset: Dataset) -> bytes:
    """Native pixel data as Explicit VR Little Endian holds it: a big endian file's OW words
    (8- or 16-bit samples alike) and 32-bit samples are byte-swapped; OB never is."""
    pixels = bytes(dataset.PixelData)
    if _stored_syntax(dataset) != EXPLICIT_BE or dataset["PixelData"].VR == "OB":
        return pixels
    width = 4 if int(dataset.BitsAllocated) == 32 else 2
    usable = len(pixels) - len(pixels) % width
    swapped = np.frombuffer(pixels[:usable], dtype=f">u{width}").astype(f"<u{width}")
    return swapped.tobytes() + pixels[usable:]


def _native_frame(dataset: Dataset, number: int) -> bytes:
    pixels = _little_endian_pixels(dataset)
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    samples, bits = int(dataset.get("SamplesPerPixel", 1)), int(dataset.BitsAllocated)
    frame_bits = rows * columns * samples * bits
    if frame_bits % 8:  # 1-bit frames need not start on a byte
        unpacked = np.unpackbits(np.frombuffer(pixels, np.uint8), bitorder="little")
        chosen = unpacked[(number - 1) * frame_bits : number * frame_bits]
        return np.packbits(chosen, bitorder="little").tobytes()
    size = frame_bits // 8
    return pixels[(number - 1) * size : number * size]


def _decoded_frame(dataset: Dataset, number: int) -> bytes:
    """A compressed frame decoded to native bytes; YBR colour comes out as RGB, as DCMTK (and
    so Orthanc) decodes it, since the decoded bytes no longer carry the JPEG colour model."""
    from pydicom.pixels import pixel_array

    array = pixel_array(dataset, index=number - 1)
    if array.ndim == 3 and int(dataset.get("PlanarConfiguration", 0) or 0) == 1:
        array = array.transpose(2, 0, 1)
    bits = int(dataset.BitsAllocated)
    dtype = array.dtype.newbyteorder("<") if bits > 8 else array.dtype
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def frames(dataset: Dataset, numbers: list[int], offer: Offer) -> list[bytes]:
    """The bytes of each requested frame in the chosen form."""
    syntax = _stored_syntax(dataset)
    if syntax in (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED):
        return [_native_frame(dataset, n) for n in numbers]
    if offer.transfer_syntax == syntax:
        count = frame_count(dataset)
        return [get_frame(dataset.PixelData, n - 1, number_of_frames=count) for n in numbers]
    try:
        return [_decoded_frame(dataset, n) for n in numbers]
    except Exception as error:  # a decoder here, but not for this flavour (12-bit JPEG, ...)
        raise not_acceptable(
            f"{OCTET}: the stored transfer syntax {syntax} cannot be decoded here "
            f"({type(error).__name__}); ask for transfer-syntax={syntax} or *"
        ) from None


def _window_parameter(text: str) -> tuple[float, float]:
    try:
        center, width, *function = text.split(",")
        if function and function[0].lower() not in ("linear", ""):
            raise bad_request("window: only the linear function is supported")
        return float(center), float(width)
    except ValueError:
        raise bad_request("window must be center,width[,linear]") from None


def render(dataset: Dataset, number: int, media: str, params: dict[str, str]) -> bytes:
    """One frame as an 8-bit PNG or JPEG (``window``, ``viewport``, ``quality`` honoured)."""
    from pydicom.pixels import pixel_array

    if "PixelData" not in dataset:
        raise not_acceptable("this instance holds no pixel data to render")
    try:
        array = pixel_array(dataset, index=number - 1)
    except Exception as error:  # no decoder here for the stored syntax
        raise not_acceptable(
            f"{media}: the stored pixel data cannot be decoded here ({type(error).__name__})"
        ) from None
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples == 1:
        shown = dataset
        if "window" in params:
            center, width = _window_parameter(params["window"])
            shown = Dataset()
            shown.update(dataset.group_dataset(0x0028))
            shown.WindowCenter, shown.WindowWidth = center, width
        image = Image.fromarray(preview_window(array, shown), mode="L")
    else:
        if array.dtype != np.uint8:
            array = (array.astype(np.float64) / max(float(array.max()), 1.0) * 255).astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(array), mode="RGB")
    if "viewport" in params:
        try:
            width, height = (int(v) for v in params["viewport"].split(",")[:2])
        except ValueError:
            raise bad_request("viewport must be width,height") from None
        image.thumbnail((max(width, 1), max(height, 1)))
    buffer = io.BytesIO()
    if media == "image/png":
        image.save(buffer, format="PNG")
    else:
        try:
            quality = int(params.get("quality", "90"))
        except ValueError:
            raise bad_request("quality must be an integer from 1 to 100") from None
        image.save(buffer, format="JPEG", quality=min(max(quality, 1), 100))
    return buffer.getvalue()


def rendered_offer(accept: str | None, params: dict[str, str]) -> Offer:
    """JPEG by default (PS3.18 Table 8.7.4-2), PNG on request; the ``accept`` query parameter
    overrides the header, as browsers cannot set one on an image link."""
    return choose(params.get("accept") or accept, [Offer(m, False) for m in RENDERED_MEDIA])
