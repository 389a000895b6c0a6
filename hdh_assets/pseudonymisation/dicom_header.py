"""Annex E de-identification at the level of the header's bytes, pixel data copied unchanged.

The same rules as :class:`~hdh_assets.pseudonymisation.dicom.DicomPseudonymiser` (the same
actions, keyed UIDs, date shifts, dummies and marks), applied to the elements located by
:mod:`hdh_assets.imaging.elements` instead of a pydicom dataset: an element the profile keeps is
copied as its bytes, a changed one is encoded anew in the file's own byte order and VR encoding,
and the pixel data element (native or encapsulated, in any transfer syntax, known to pydicom or
not) is copied byte for byte. Nothing is decoded that no rule needs. The new file is walked
again, and verified like the pydicom path's output: no identifying value of the original in its
header (:func:`leaked`), no rule of Table E.1-1 broken (:func:`violations`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.datadict import tag_for_keyword

from hdh_assets.imaging.elements import (
    NUMBER_FORMATS,
    PIXEL_TAGS,
    TEXT_VRS,
    UNDEFINED,
    Element,
    Encoding,
    Header,
    HeaderValues,
    element_at,
    encode_element,
    encode_meta,
    encode_sequence,
    number_value,
    pad,
    read_header,
    text_values,
)
from hdh_assets.pseudonymisation.annex_e import Option, describe
from hdh_assets.pseudonymisation.dicom import (
    DEIDENTIFICATION_METHOD,
    DEVICE_KEYWORDS,
    DUMMY_BY_VR,
    IDENTIFYING_KEYWORDS,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    MAX_LENGTH,
    MIN_NEEDLE,
    PLACEHOLDER_UID,
    REAL_UID,
    TEXT_DUMMY,
    DeidentificationReport,
    DicomPseudonymiser,
    Subject,
    shift_date_text,
    subject_of,
)

SOP_CLASS, SOP_INSTANCE = 0x00080016, 0x00080018
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "SQ"})


@dataclass
class Rewritten:
    """A de-identified file and what the index and the checks need of it."""

    data: bytes
    header: Header  # the new file, walked
    subject: Subject
    report: DeidentificationReport
    transfer_syntax: str


class HeaderPseudonymiser:
    """One profile and key applied to files' headers; pixel data is copied, never decoded."""

    def __init__(self, engine: DicomPseudonymiser):
        self.engine = engine
        self.profile = engine.profile
        self.action = engine.action
        self._codes: dict[Encoding, bytes] = {}

    # -- the rewrite ------------------------------------------------------------------------
    def rewrite(self, original: Header, values: HeaderValues | None = None) -> Rewritten:
        """De-identify a walked file (:func:`~hdh_assets.imaging.elements.read_header`);
        ``values`` are its values when the caller has read them already."""
        data, encoding = original.data, original.encoding
        subject = subject_of(
            values or HeaderValues.of(original),
            self.engine.pseudonymiser,
            self.profile.subject_rule,
        )
        offset = self.engine.pseudonymiser.date_offset_days(subject.pseudonym)
        report = DeidentificationReport()
        written = self._clean(data, original.elements, encoding, offset, report, top=True)
        written.update(self._marks(subject, encoding))
        sop_class = _text(written.get(SOP_CLASS), encoding)
        sop_instance = _text(written.get(SOP_INSTANCE), encoding)
        syntax = original.transfer_syntax
        meta = encode_meta(
            {
                0x00020002: sop_class,
                0x00020003: sop_instance,
                0x00020010: syntax,
                0x00020012: IMPLEMENTATION_CLASS_UID,
                0x00020013: IMPLEMENTATION_VERSION_NAME,
            }
        )
        new = meta + b"".join(written[tag] for tag in sorted(written))
        return Rewritten(new, read_header(new), subject, report, syntax)

    def _clean(
        self,
        data: bytes,
        elements: list[Element],
        encoding: Encoding,
        offset: int,
        report: DeidentificationReport,
        top: bool = False,
    ) -> dict[int, bytes]:
        overlays = {
            e.tag >> 16
            for e in elements
            if 0x60003000 <= e.tag <= 0x601E3000 and e.tag & 0xFFFF == 0x3000
        }
        out: dict[int, bytes] = {}
        action = self.action
        for element in elements:
            tag = element.tag
            group = tag >> 16
            if group == 0x0002:
                continue
            if group & 1:
                report.private_removed += 1
                continue
            if group in overlays:
                report.removed += 1
                continue
            if not tag & 0xFFFF:  # a retired group length: it would be wrong after the rewrite
                continue
            if top and tag in PIXEL_TAGS:
                out[tag] = data[element.start : element.end]
                continue
            new = self._act(data, element, action(tag), encoding, offset, report)
            if new is not None:
                out[tag] = new
        return out

    def _act(
        self,
        data: bytes,
        element: Element,
        action: str,
        encoding: Encoding,
        offset: int,
        report: DeidentificationReport,
    ) -> bytes | None:
        tag, vr = element.tag, element.vr
        if action == "X":
            report.removed += 1
            return None
        if element.items is not None:
            if action == "Z":
                report.emptied += 1
                return encode_sequence(tag, [], encoding)
            items = []
            for item in element.items:
                cleaned = self._clean(data, item, encoding, offset, report)
                items.append(b"".join(cleaned[t] for t in sorted(cleaned)))
            return encode_sequence(tag, items, encoding)
        if action == "K":
            if not _well_formed(data, element):
                report.unreadable_removed += 1
                return None
            return data[element.start : element.end]
        if action == "Z":
            report.emptied += 1
            return encode_element(tag, vr, b"", encoding)
        if action in ("U", "U*"):
            report.uids_remapped += 1
            values = text_values(data, element)
            if not values:
                return data[element.start : element.end]
            remapped = [v if PLACEHOLDER_UID.match(v) else self._remap(v) for v in values]
            return encode_element(tag, vr, pad("\\".join(remapped).encode(), "UI"), encoding)
        if action == "C" and self.profile.shifts_dates and vr in ("DA", "DT", "TM", "SH", "OB"):
            report.dates_shifted += 1
            values = text_values(data, element) if vr in ("DA", "DT") else []
            if not values:  # times of day and empty dates stay as they are
                return data[element.start : element.end]
            shifted = "\\".join(shift_date_text(v, offset) for v in values)
            return encode_element(tag, vr, pad(shifted.encode(), vr), encoding)
        report.replaced += 1  # D, and C where we have no cleaner: a dummy is always safe
        return encode_element(tag, vr, _dummy_bytes(data, element, encoding), encoding)

    def _remap(self, uid: str) -> str:
        return self.engine.pseudonymiser.remap_uid(uid)

    def _marks(self, subject: Subject, encoding: Encoding) -> dict[int, bytes]:
        pseudonym = pad(subject.pseudonym.encode(), "LO")
        longitudinal = "MODIFIED" if self.profile.shifts_dates else "REMOVED"
        return {
            0x00100010: encode_element(0x00100010, "PN", pseudonym, encoding),
            0x00100020: encode_element(0x00100020, "LO", pseudonym, encoding),
            0x00120062: encode_element(0x00120062, "CS", b"YES ", encoding),
            0x00120063: encode_element(
                0x00120063, "LO", pad(DEIDENTIFICATION_METHOD.encode(), "LO"), encoding
            ),
            0x00120064: self._code_sequence(encoding),
            0x00280303: encode_element(
                0x00280303, "CS", pad(longitudinal.encode(), "CS"), encoding
            ),
        }

    def _code_sequence(self, encoding: Encoding) -> bytes:
        if encoding not in self._codes:
            items = [
                encode_element(0x00080100, "SH", pad(option.value.encode(), "SH"), encoding)
                + encode_element(0x00080102, "SH", b"DCM ", encoding)
                + encode_element(0x00080104, "LO", pad(option.meaning.encode(), "LO"), encoding)
                for option in [Option.BASIC, *self.profile.options]
            ]
            self._codes[encoding] = encode_sequence(0x00120064, items, encoding)
        return self._codes[encoding]


def _text(encoded: bytes | None, encoding: Encoding) -> str:
    """The text value of one encoded element (a UID), however its header was written."""
    if not encoded:
        return ""
    element = element_at(encoded, 0, len(encoded), encoding, top=False)
    return "\\".join(text_values(encoded, element))


def _well_formed(data: bytes, element: Element) -> bool:
    """Numbers written as text that are not numbers would not re-read (pydicom drops them too):
    read as :class:`HeaderValues` reads them, such a value stays text."""
    if element.vr not in ("IS", "DS") or element.length == 0:
        return True
    values = text_values(data, element)
    return not any(isinstance(number_value(v, element.vr), str) for v in values if v)


def _dummy_bytes(data: bytes, element: Element, encoding: Encoding) -> bytes:
    vr = element.vr
    if vr in _BINARY_VRS or vr == "UI":
        return b""
    if vr in NUMBER_FORMATS:
        size = struct.calcsize(NUMBER_FORMATS[vr])
        count = max(1, element.length // size) if element.length != UNDEFINED else 1
        return struct.pack(f"{encoding.order}{count}{NUMBER_FORMATS[vr]}", *([0] * count))
    if vr == "AT":
        return b""
    known = DUMMY_BY_VR.get(vr)
    dummy = str(known) if known is not None else TEXT_DUMMY[: MAX_LENGTH.get(vr, 64)]
    count = max(1, len(text_values(data, element))) if vr in TEXT_VRS else 1
    if vr in ("LT", "ST", "UT", "UR"):
        count = 1  # no backslash separates values in these VRs
    return pad("\\".join([dummy] * count).encode(), vr)


# -- verification ------------------------------------------------------------------------------
def _needles(header: Header, engine: HeaderPseudonymiser) -> set[bytes]:
    """Identifying values of the original, as the bytes it wrote them with (names split)."""
    keywords = IDENTIFYING_KEYWORDS
    if Option.RETAIN_DEVICE_IDENTITY not in engine.profile.options:
        keywords = keywords + DEVICE_KEYWORDS
    identifying = {tag_for_keyword(k) for k in keywords}
    data = header.data
    found: set[bytes] = set()
    kept: list[bytes] = []

    def visit(elements: list[Element]) -> None:
        for element in elements:
            if element.items is not None:
                for item in element.items:
                    visit(item)
                continue
            if element.tag in PIXEL_TAGS or element.vr in _BINARY_VRS or element.length == 0:
                continue
            value = data[element.value_start : element.end].rstrip(b"\0 ")
            if element.tag not in identifying:
                if not element.is_private and engine.action(element.tag) == "K":
                    kept.append(value)
                continue
            for part in value.split(b"\\"):
                part = part.strip(b" \0")
                found.add(part)
                if element.vr == "PN":
                    found.update(p.strip() for p in part.replace(b"=", b"^").split(b"^"))

    visit(header.elements)
    kept_text = b"\n".join(kept)
    return {v for v in found if len(v) >= MIN_NEEDLE and v not in kept_text}


def leaked(original: Header, rewritten: Rewritten, engine: HeaderPseudonymiser) -> int:
    """How many identifying values of the original occur in the new header (never which)."""
    new = rewritten.header
    pixel = new.pixel_element()
    searched = new.data if pixel is None else new.data[: pixel.start] + new.data[pixel.end :]
    return sum(1 for needle in _needles(original, engine) if needle in searched)


def violations(rewritten: Rewritten, engine: HeaderPseudonymiser) -> list[str]:
    """Attributes of the new header left with a value Table E.1-1 does not allow (by keyword)."""
    data = rewritten.header.data
    problems: list[str] = []

    def visit(elements: list[Element]) -> None:
        for element in elements:
            if element.group == 0x0002:
                continue
            if element.is_private:
                problems.append(f"private {describe(element.tag)}")
                continue
            action = engine.action(element.tag)
            if action == "X" and not 0x6000 <= element.group <= 0x601E:
                problems.append(f"{describe(element.tag)} should be removed")
            elif action in ("U", "U*") and element.vr == "UI" and element.length:
                values = text_values(data, element)
                if any(REAL_UID.match(v) and not v.startswith("2.25.") for v in values):
                    problems.append(f"{describe(element.tag)} is not a remapped UID")
            for item in element.items or []:
                visit(item)

    visit(rewritten.header.elements)
    removed = [e for e in rewritten.header.elements if e.tag == 0x00120062]
    if not removed or text_values(data, removed[0]) != ["YES"]:
        problems.append("PatientIdentityRemoved is not YES")
    return problems
