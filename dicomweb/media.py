"""Content negotiation (PS3.18 8.7) and multipart/related bodies.

A resource lists what it can produce as :class:`Offer` objects, in the order the service
prefers them (as stored first: nothing to decode); the client's ``Accept`` ranges are tried by
quality, and the first offer a range admits wins. Nothing admitted is a 406 naming what was
asked and what is available. Ranges are read leniently where clients differ: a
``multipart/related`` range without ``type`` or with ``type="*/*"`` (dicomweb-client's default
for frames), the transfer syntax given inside the quoted ``type`` (Orthanc's form) or beside
it, and ``transfer-syntax=*`` (anything, as stored).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from dicomweb.errors import not_acceptable

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
NATIVE_SYNTAXES = {EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE, DEFLATED}
COMPRESSED_MEDIA = {
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}
ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


@dataclass(frozen=True)
class MediaRange:
    media: str  # type/subtype, lower case: */*, multipart/related, image/png, ...
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def __str__(self) -> str:
        extra = "".join(f'; {k}="{v}"' for k, v in self.params.items())
        return f"{self.media}{extra}"


@dataclass(frozen=True)
class Offer:
    media: str  # the part's (or body's) media type
    multipart: bool
    transfer_syntax: str | None = None
    default: bool = True  # chosen when a range names no transfer syntax

    def __str__(self) -> str:
        text = f'multipart/related; type="{self.media}"' if self.multipart else self.media
        return f"{text}; transfer-syntax={self.transfer_syntax}" if self.transfer_syntax else text


def _split(text: str, separator: str) -> list[str]:
    """Split outside double quotes."""
    parts, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_accept(header: str | None) -> list[MediaRange]:
    """The ranges of an Accept header, best quality first; none given means ``*/*``."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = []
    for item in _split(header, ","):
        media, *raw = _split(item, ";")
        params: dict[str, str] = {}
        for parameter in raw:
            key, _, value = parameter.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        if ";" in params.get("type", ""):  # type="application/octet-stream; transfer-syntax=*"
            inner, *inner_params = _split(params["type"], ";")
            params["type"] = inner
            for parameter in inner_params:
                key, _, value = parameter.partition("=")
                params.setdefault(key.strip().lower(), value.strip().strip('"'))
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        ranges.append(MediaRange(media.lower(), params, q))
    return sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q)


def _media_admits(pattern: str | None, media: str) -> bool:
    if pattern is None or pattern in ("*/*", "*"):
        return True
    pattern = ALIASES.get(pattern.lower(), pattern.lower())
    if pattern.endswith("/*"):
        return media.startswith(pattern[:-1])
    return pattern == media


def _syntax_admits(asked: str | None, offer: Offer) -> bool:
    if asked is None:
        return offer.default
    return asked == "*" or asked == offer.transfer_syntax


def admits(accepted: MediaRange, offer: Offer) -> bool:
    syntax = accepted.params.get("transfer-syntax")
    if accepted.media == "*/*":
        return _syntax_admits(syntax, offer)
    if accepted.media in ("multipart/related", "multipart/*"):
        return (
            offer.multipart
            and _media_admits(accepted.params.get("type"), offer.media)
            and _syntax_admits(syntax, offer)
        )
    return (
        not offer.multipart
        and _media_admits(accepted.media, offer.media)
        and _syntax_admits(syntax, offer)
    )


def choose(header: str | None, offers: list[Offer]) -> Offer:
    """The offer for the best accepted range; 406 naming what was asked otherwise."""
    for accepted in parse_accept(header):
        for offer in offers:
            if admits(accepted, offer):
                return offer
    asked = header or "*/*"
    available = "; or ".join(str(o) for o in offers) or "nothing"
    raise not_acceptable(f"cannot produce what Accept asks ({asked}); available: {available}")


def part_type(offer: Offer) -> str:
    """The Content-Type of one part: its media type and, when known, its transfer syntax."""
    if offer.transfer_syntax and offer.media != "application/dicom+json":
        return f"{offer.media}; transfer-syntax={offer.transfer_syntax}"
    return offer.media


def multipart_type(offer: Offer, boundary: str) -> str:
    text = f'multipart/related; type="{offer.media}"; boundary={boundary}'
    return f"{text}; transfer-syntax={offer.transfer_syntax}" if offer.transfer_syntax else text


def new_boundary() -> str:
    return f"hdh-{uuid.uuid4().hex}"


def multipart_chunks(
    parts: Iterable[tuple[str, bytes, str | None]], boundary: str
) -> Iterator[bytes]:
    """A multipart/related body, one chunk per part: (content type, bytes, content location)."""
    for content_type, data, location in parts:
        head = f"--{boundary}\r\nContent-Type: {content_type}\r\n"
        if location:
            head += f"Content-Location: {location}\r\n"
        yield head.encode() + b"\r\n" + data + b"\r\n"
    yield f"--{boundary}--\r\n".encode()
