"""DICOM data elements read straight from a file's bytes: where each element is, not its value.

Ingestion only needs to understand the header. A walk over the elements (tag, VR, length, where
the value sits) costs a few microseconds each, while building pydicom objects for every element
costs ten times that; the pixel data element is located (native or encapsulated) and never read.
Values are decoded only for the few elements a rule needs (:func:`text_values`), and the header
is written back from byte slices (:func:`encode_element`), so unchanged elements keep their exact
bytes, in the file's own character set and byte order.

Anything this walk cannot follow (a file without File Meta, elements out of order, a sequence
written as ``UN``) raises :class:`NotWalkable`; the caller then parses the file
with pydicom as before. Anything broken (an element running past the end of the file, an item
outside a sequence) raises :class:`Truncated` or :class:`Malformed`.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # pixel, float and double pixels
LONG_LENGTH_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI"}
    | {"UR", "UT"}
)


class NotWalkable(Exception):
    """The file is valid DICOM that this walk does not follow: parse it with pydicom instead."""


class Malformed(Exception):
    """The bytes are not a well-formed DICOM dataset (the message never quotes a value)."""


class Truncated(Malformed):
    """An element or item runs past the end of the data."""


@dataclass(frozen=True, slots=True)
class Encoding:
    implicit: bool
    little: bool

    @property
    def order(self) -> str:
        return "<" if self.little else ">"


EXPLICIT_LE = Encoding(False, True)
IMPLICIT_LE = Encoding(True, True)


# binary number VRs and their struct codes
NUMBER_FORMATS = dict(US="H", SS="h", UL="I", SL="i", UV="Q", SV="q", FL="f", FD="d")
_VR_NAMES = {vr.encode(): vr for vr in LONG_LENGTH_VRS | TEXT_VRS | NUMBER_FORMATS.keys() | {"AT"}}

IMPLICIT_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.20"})  # Papyrus 3 too
BIG_ENDIAN = "1.2.840.10008.1.2.2"
INFLATED_SYNTAX = {  # a deflated dataset (PS3.5 A.5) and the syntax of the same dataset inflated
    "1.2.840.10008.1.2.1.99": "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.4.95": "1.2.840.10008.1.2.4.94",  # JPIP Referenced Deflate
    "1.2.840.10008.1.2.4.205": "1.2.840.10008.1.2.4.204",  # JPIP HTJ2K Referenced Deflate
}


def encoding_of(transfer_syntax: str) -> Encoding:
    """How the dataset is encoded: every transfer syntax but a few (JPEG, JPEG XL, HTJ2K,
    deflated image frames, MPEG, any future one) encodes it explicit VR little endian (PS3.5
    A.4), whether or not pydicom's table lists it."""
    if transfer_syntax in IMPLICIT_SYNTAXES:
        return Encoding(True, True)
    if transfer_syntax == BIG_ENDIAN:
        return Encoding(False, False)
    if transfer_syntax in INFLATED_SYNTAX:
        raise NotWalkable("a deflated dataset must be inflated first")
    return EXPLICIT_LE


@dataclass(slots=True)
class Element:
    tag: int
    vr: str  # as written (explicit VR) or from the dictionary (implicit VR); UN when unknown
    start: int  # offset of the element's tag in the data
    value_start: int
    length: int  # value length as written (UNDEFINED for undefined length)
    end: int  # offset just after the element (delimiters included)
    items: list[list[Element]] | None = None  # sequences only: each item's elements

    @property
    def is_private(self) -> bool:
        return bool((self.tag >> 16) & 1)

    @property
    def group(self) -> int:
        return self.tag >> 16

    @property
    def value_end(self) -> int:
        return self.start if self.length == UNDEFINED else self.value_start + self.length


@dataclass(slots=True)
class Header:
    """A file's File Meta and the elements of its dataset, the pixel data's place included."""

    data: bytes
    meta: dict[int, str]  # File Meta text values by tag (UIDs, implementation name)
    dataset_start: int
    encoding: Encoding
    elements: list[Element]  # top level, in file order; the pixel data element included

    @property
    def transfer_syntax(self) -> str:
        return self.meta.get(0x00020010, "")

    @property
    def has_pixel_data(self) -> bool:
        """Pixel Data proper (7FE0,0010), as an index row counts frames."""
        return any(e.tag == 0x7FE00010 for e in self.elements)

    def pixel_element(self) -> Element | None:
        for element in reversed(self.elements):
            if element.tag in PIXEL_TAGS:
                return element
        return None


@cache
def vr_from_dictionary(tag: int) -> str:
    if (tag & 0xFFFF) == 0:
        return "UL"  # group lengths
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]  # "US or SS", "OB or OW": the first reads and writes the same


def _known_vr(tag: int) -> str:
    """A public element written as UN reads as its dictionary VR (as pydicom reads it); one that
    the dictionary calls a sequence holds implicit-VR items, which this walk does not follow."""
    vr = vr_from_dictionary(tag)
    if vr == "SQ":
        raise NotWalkable("a sequence written as UN")
    return vr


_UNPACK = {
    (True, True): struct.Struct("<HHI"),  # implicit little: tag, 4-byte length
    (False, True): struct.Struct("<HH2sH"),  # explicit little: tag, VR, 2-byte length
    (False, False): struct.Struct(">HH2sH"),
}
_LONG = {True: struct.Struct("<I"), False: struct.Struct(">I")}
_TAG_LENGTH = {True: struct.Struct("<HHI"), False: struct.Struct(">HHI")}
_DELIMITERS = (ITEM, ITEM_END, SEQUENCE_END)


def walk(data: bytes, start: int, end: int, encoding: Encoding, *, top: bool) -> list[Element]:
    """The elements between ``start`` and ``end`` (an item's or the dataset's bounds)."""
    elements, _ = _elements(data, start, end, encoding, top=top, delimited=False)
    return elements


def _elements(
    data: bytes, start: int, end: int, encoding: Encoding, *, top: bool, delimited: bool
) -> tuple[list[Element], int]:
    """Elements in tag order from ``start`` up to ``end`` or, when ``delimited``, up to an item
    delimiter; and where they stop (after the delimiter)."""
    elements: list[Element] = []
    position, previous = start, -1
    while position < end or delimited:
        if delimited and _item_header(data, position, end, encoding.little)[0] == ITEM_END:
            return elements, position + 8
        element = element_at(data, position, end, encoding, top=top)
        if element.tag <= previous:
            raise NotWalkable("elements out of order")  # pydicom sorts them; let it
        previous = element.tag
        elements.append(element)
        position = element.end
    return elements, position


def element_at(data: bytes, position: int, end: int, encoding: Encoding, *, top: bool) -> Element:
    """The element whose tag is at ``position``, with its items when it is a sequence."""
    if position + 8 > end:
        raise Truncated("the data ends inside an element's tag")
    little = encoding.little
    if encoding.implicit:
        group, number, length = _UNPACK[(True, True)].unpack_from(data, position)
        tag = group << 16 | number
        vr = "" if tag in _DELIMITERS else vr_from_dictionary(tag)
        value_start = position + 8
    else:
        group, number, raw_vr, short = _UNPACK[(False, little)].unpack_from(data, position)
        tag = group << 16 | number
        if group == 0xFFFE:
            vr, value_start = "", position + 8
            _, _, length = _TAG_LENGTH[little].unpack_from(data, position)
        else:
            vr = _VR_NAMES.get(raw_vr)
            if vr is None:  # pydicom may still read it, guessing another encoding
                raise Malformed("an element's VR is not a known VR")
            if vr in LONG_LENGTH_VRS:
                if position + 12 > end:
                    raise Truncated("the data ends inside an element's header")
                (length,) = _LONG[little].unpack_from(data, position + 8)
                value_start = position + 12
            else:
                length, value_start = short, position + 8
            if vr == "UN" and group & 1 and length == UNDEFINED:
                # a private sequence written as UN: implicit VR items (CP-246), removed anyway
                _, element_end = _items_until_delimiter(data, value_start, end, IMPLICIT_LE)
                return Element(tag, vr, position, value_start, length, element_end)
            if vr == "UN" and not group & 1:
                vr = _known_vr(tag)
    if tag in _DELIMITERS:
        raise Malformed("an item or delimiter outside a sequence")
    if top and tag in PIXEL_TAGS:
        return Element(
            tag,
            vr,
            position,
            value_start,
            length,
            _pixel_end(data, value_start, length, end, little),
        )
    if length == UNDEFINED:
        if vr == "UN" and not encoding.implicit:
            raise NotWalkable("an explicit-VR UN sequence of undefined length")
        if vr not in ("SQ", "UN"):
            raise NotWalkable("an undefined length on a non-sequence element")
        items, element_end = _items_until_delimiter(data, value_start, end, encoding)
        return Element(tag, "SQ", position, value_start, length, element_end, items)
    element_end = value_start + length
    if element_end > end:
        raise Truncated("an element runs past the end of the data")
    items = _items_within(data, value_start, element_end, encoding) if vr == "SQ" else None
    return Element(tag, vr, position, value_start, length, element_end, items)


def _item_header(data: bytes, position: int, end: int, little: bool) -> tuple[int, int]:
    if position + 8 > end:
        raise Truncated("the data ends inside an item header")
    group, number, length = _TAG_LENGTH[little].unpack_from(data, position)
    return group << 16 | number, length


def _item(data: bytes, position: int, end: int, encoding: Encoding) -> tuple[list[Element], int]:
    """One item starting at ``position`` (its tag is ITEM): its elements, and where it ends."""
    _, length = _item_header(data, position, end, encoding.little)
    body = position + 8
    if length != UNDEFINED:
        if body + length > end:
            raise Truncated("an item runs past the end of its sequence")
        return walk(data, body, body + length, encoding, top=False), body + length
    return _elements(data, body, end, encoding, top=False, delimited=True)


def _items_within(data: bytes, start: int, end: int, encoding: Encoding) -> list[list[Element]]:
    items = []
    position = start
    while position < end:
        tag, _ = _item_header(data, position, end, encoding.little)
        if tag != ITEM:
            raise Malformed("a sequence holds something other than items")
        elements, position = _item(data, position, end, encoding)
        items.append(elements)
    return items


def _items_until_delimiter(
    data: bytes, start: int, end: int, encoding: Encoding
) -> tuple[list[list[Element]], int]:
    items = []
    position = start
    while True:
        tag, _ = _item_header(data, position, end, encoding.little)
        if tag == SEQUENCE_END:
            return items, position + 8
        if tag != ITEM:
            raise Malformed("a sequence holds something other than items")
        elements, position = _item(data, position, end, encoding)
        items.append(elements)


def _pixel_end(data: bytes, value_start: int, length: int, end: int, little: bool) -> int:
    """Where the pixel data element ends: after its value, or after the fragments' delimiter."""
    if length != UNDEFINED:
        if value_start + length > end:
            raise Truncated("the pixel data runs past the end of the file")
        return value_start + length
    position = value_start
    while True:
        tag, fragment = _item_header(data, position, end, little)
        if tag == SEQUENCE_END:
            return position + 8
        if tag != ITEM or fragment == UNDEFINED:
            raise Malformed("encapsulated pixel data holds something other than fragments")
        position += 8 + fragment
        if position > end:
            raise Truncated("a pixel data fragment runs past the end of the file")


# -- File Meta -------------------------------------------------------------------------------------
_META_TEXT = {0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013, 0x00020016}


def read_header(data: bytes) -> Header:
    """The File Meta and the dataset's elements of a file with preamble, ``DICM`` and File Meta.
    A deflated dataset is inflated first, and its File Meta then names the inflated syntax."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise NotWalkable("no preamble")
    meta_elements = []
    position = 132
    while position + 8 <= len(data) and data[position : position + 2] == b"\x02\x00":
        element = element_at(data, position, len(data), EXPLICIT_LE, top=False)
        meta_elements.append(element)
        position = element.end
    if not meta_elements:
        raise NotWalkable("no File Meta elements")
    meta = {
        e.tag: data[e.value_start : e.value_end].decode("ascii", "replace").strip("\0 ")
        for e in meta_elements
        if e.tag in _META_TEXT
    }
    syntax = meta.get(0x00020010, "")
    if not syntax:
        raise NotWalkable("no transfer syntax")
    if syntax in INFLATED_SYNTAX:  # walked, and rewritten, inflated
        try:
            data = data[:position] + zlib.decompress(data[position:], -zlib.MAX_WBITS)
        except zlib.error:
            raise Malformed("the deflated dataset does not inflate") from None
        meta[0x00020010] = syntax = INFLATED_SYNTAX[syntax]
    encoding = encoding_of(syntax)
    elements = walk(data, position, len(data), encoding, top=True)
    return Header(data, meta, position, encoding, elements)


def native_pixel_length(header: Header) -> int | None:
    """The length of the native pixel data (None when there is none or it is encapsulated)."""
    pixel = header.pixel_element()
    if pixel is None or pixel.tag != 0x7FE00010 or pixel.length == UNDEFINED:
        return None
    return pixel.length


# -- values --------------------------------------------------------------------------------------
def raw_value(data: bytes, element: Element) -> bytes:
    return data[element.value_start : element.value_end]


def text_values(data: bytes, element: Element) -> list[str]:
    """The values of a text element split on backslashes, padding stripped (ASCII-safe VRs)."""
    text = raw_value(data, element).decode("latin-1").rstrip("\0 ")
    return [v.strip(" \0") for v in text.split("\\")] if text else []


# -- writing -------------------------------------------------------------------------------------
def pad(value: bytes, vr: str) -> bytes:
    if len(value) % 2:
        return value + (b"\0" if vr in ("UI", "OB", "UN") else b" ")
    return value


def encode_element(tag: int, vr: str, value: bytes, encoding: Encoding) -> bytes:
    """One element with a defined length, ``value`` already padded to an even length."""
    order = encoding.order
    group, number = tag >> 16, tag & 0xFFFF
    if encoding.implicit:
        return struct.pack(order + "HHI", group, number, len(value)) + value
    if vr in LONG_LENGTH_VRS:
        return struct.pack(order + "HH2s2xI", group, number, vr.encode(), len(value)) + value
    if len(value) > 0xFFFF:
        raise ValueError("value too long for a short-length VR")
    return struct.pack(order + "HH2sH", group, number, vr.encode(), len(value)) + value


def encode_sequence(tag: int, items: list[bytes], encoding: Encoding) -> bytes:
    """A sequence of defined length whose items (already encoded elements) have defined lengths."""
    order = encoding.order
    body = b"".join(struct.pack(order + "HHI", 0xFFFE, 0xE000, len(item)) + item for item in items)
    return encode_element(tag, "SQ", body, encoding)


def encode_meta(values: dict[int, str]) -> bytes:
    """File Meta (explicit VR little endian, group length first) from its text values."""
    body = encode_element(0x00020001, "OB", b"\0\1", EXPLICIT_LE)
    for tag in sorted(values):
        vr = "SH" if tag == 0x00020013 else "UI"
        body += encode_element(tag, vr, pad(values[tag].encode("ascii"), vr), EXPLICIT_LE)
    length = encode_element(0x00020000, "UL", struct.pack("<I", len(body)), EXPLICIT_LE)
    return b"\0" * 128 + b"DICM" + length + body


CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})  # decoded per character set
SPECIFIC_CHARACTER_SET = 0x00080005
_PRINTABLE_ASCII = re.compile(rb"[\x20-\x7e\0]*")


class HeaderValues:
    """Values of a walked header (or of one of its items), converted the way pydicom converts
    them (IS and DS numbers as int and float, several values as a list, a sequence as its
    items) without building a pydicom dataset; text outside ASCII is converted by pydicom,
    with the dataset's character set."""

    def __init__(self, data: bytes, elements: list[Element], encoding: Encoding, charset=None):
        self.data = data
        self.encoding = encoding
        self.by_tag = {e.tag: e for e in elements}
        self.charset = charset or self.by_tag.get(SPECIFIC_CHARACTER_SET)

    @classmethod
    def of(cls, header: Header) -> HeaderValues:
        return cls(header.data, header.elements, header.encoding)

    def __contains__(self, keyword: str) -> bool:
        return tag_for_keyword(keyword) in self.by_tag

    def get(self, keyword: str, default=None):
        element = self.by_tag.get(tag_for_keyword(keyword))
        if element is None:
            return default
        vr = element.vr
        if element.items is not None:
            return [
                HeaderValues(self.data, item, self.encoding, self.charset) for item in element.items
            ]
        if vr in NUMBER_FORMATS:
            code = NUMBER_FORMATS[vr]
            count = element.length // struct.calcsize(code)
            if not count:
                return None
            raw = raw_value(self.data, element)
            values = list(struct.unpack(f"{self.encoding.order}{count}{code}", raw))
            return values[0] if count == 1 else values
        if vr not in TEXT_VRS:
            return default
        if vr in CHARSET_VRS and not _PRINTABLE_ASCII.fullmatch(raw_value(self.data, element)):
            context = [self.charset, element] if self.charset is not None else [element]
            return as_dataset(self.data, context, self.encoding).get(keyword, default)
        values = [number_value(v, vr) for v in text_values(self.data, element)]
        if not values:
            return ""
        return values[0] if len(values) == 1 else values


def as_dataset(data: bytes, elements: Iterable[Element], encoding: Encoding) -> Dataset:
    """Elements as a pydicom dataset of raw elements: pydicom converts a value when it is read."""
    raw = {}
    for element in elements:
        if element.tag in PIXEL_TAGS:
            continue
        if element.length == UNDEFINED:  # a sequence: its items, without the closing delimiter
            value = data[element.value_start : element.end - 8]
        else:
            value = data[element.value_start : element.end]
        tag = BaseTag(element.tag)
        raw[tag] = RawDataElement(
            tag,
            None if encoding.implicit else element.vr,
            len(value),
            value,
            element.value_start,
            encoding.implicit,
            encoding.little,
            True,
            False,
        )
    ds = Dataset(raw)
    ds.set_original_encoding(encoding.implicit, encoding.little, ds._character_set)
    return ds


def da_date(text: str) -> dt.date:
    """The date of a DA value (or of a DT value's first eight characters): ``strptime``'s
    reading of ``%Y%m%d``, without its cost for the usual eight digits. Raises ValueError."""
    head = text[:8]
    if len(head) == 8 and head.isascii() and head.isdigit():
        return dt.date(int(head[:4]), int(head[4:6]), int(head[6:]))
    return dt.datetime.strptime(head, "%Y%m%d").date()


def number_value(text: str, vr: str) -> str | int | float:
    """An IS or DS value as pydicom reads it (the text itself when it is not a number)."""
    try:
        if vr == "DS":
            return float(text)
        if vr == "IS":
            number = float(text)
            return int(number) if number == int(number) else text
    except ValueError:
        return text
    return text
