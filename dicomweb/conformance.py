"""How our answers are compared with Orthanc's, and every difference we keep on purpose.

Orthanc (1.10 with its DICOMweb plugin 1.7, from Debian) is the reference: the conformance
tests store the same pseudonymised files in both and compare QIDO answers, metadata and frames
attribute by attribute. Two answers agree on an attribute when their VRs and values are equal,
numbers compared as numbers (``57`` and ``57.0``), an absent attribute and an empty one being
the same (both say "no value"), ``null`` and ``""`` alike inside a multi-valued attribute, any
two bulk data references alike (each server points to itself), and retrieve URLs equal from
``/studies/`` on. Every other difference must be listed in :data:`DELIBERATE` with its reason,
and is accepted only in the shape its entry describes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Attr = dict | None


def _values(attribute: Attr) -> list:
    return list((attribute or {}).get("Value") or [])


def _bulk(attribute: Attr) -> bool:
    return bool(attribute) and "BulkDataURI" in attribute


@dataclass(frozen=True)
class Deliberate:
    """A difference kept on purpose: where (QIDO levels, metadata), why, and its exact shape."""

    tags: tuple[str, ...]  # () for any attribute
    keyword: str
    where: frozenset[str]  # qido-study, qido-series, qido-instance, metadata
    reason: str
    shape: Callable[[Attr, Attr], bool]  # (ours, Orthanc's) -> is this the difference described


QIDO = frozenset({"qido-study", "qido-series", "qido-instance"})
DELIBERATE = (
    Deliberate(
        ("00080005",),
        "SpecificCharacterSet",
        QIDO,
        "Orthanc adds its own default encoding (not the file's); DICOM JSON is Unicode by "
        "definition (PS3.18 F.2), so the attribute says nothing in a search answer.",
        lambda ours, theirs: ours is None and theirs is not None,
    ),
    Deliberate(
        ("00080056",),
        "InstanceAvailability",
        frozenset({"qido-study", "qido-instance"}),
        "PS3.18 Table 10.6.3-3 and -5 return it; Orthanc 1.10 does not. Everything the index "
        "lists is in the store, so ONLINE.",
        lambda ours, theirs: theirs is None and _values(ours) == ["ONLINE"],
    ),
    Deliberate(
        ("00280008",),
        "NumberOfFrames",
        frozenset({"qido-instance"}),
        "Table 10.6.3-5 returns it for every instance; Orthanc only when the file has the "
        "attribute. A single-frame image without it has one frame: the index says 1.",
        lambda ours, theirs: not _values(theirs) and _values(ours) == [1],
    ),
    Deliberate(
        ("00080020",),
        "StudyDate",
        QIDO,
        "Searches are served from the index, which keeps a date: a file whose Study Date is "
        "not a valid DA (a pydicom test file has '1900010124') is listed with the date its "
        "first eight digits make; Orthanc echoes the invalid text. Metadata returns the text.",
        lambda ours, theirs: (
            len(_values(ours)) == len(_values(theirs)) == 1
            and len(str(_values(theirs)[0])) != 8
            and str(_values(theirs)[0]).startswith(str(_values(ours)[0]))
        ),
    ),
    Deliberate(
        ("7FE00010",),
        "PixelData",
        frozenset({"metadata"}),
        "Orthanc leaves encapsulated (compressed) pixel data out of metadata; PS3.18 F.2.6 "
        "has bulk data referenced, so ours gives its BulkDataURI like any other bulk value.",
        lambda ours, theirs: theirs is None and _bulk(ours),
    ),
    Deliberate(
        (),
        "any multi-valued attribute of a file in ISO 2022 IR 13",
        frozenset({"metadata", *QIDO}),
        "In a file in ISO 2022 IR 13 (JIS X 0201), Orthanc decodes the value delimiter as a "
        "yen sign: it returns one value (text), or no number at all (Value []); PS3.5 "
        "6.1.2.5.3 keeps 0x5C the delimiter in every character set, so ours returns the values.",
        lambda ours, theirs: (
            (
                len(_values(theirs)) == 1
                and "\u00a5" in str(_values(theirs)[0])
                and _values(ours) == str(_values(theirs)[0]).split("\u00a5")
            )
            or ((theirs or {}).get("Value") == [] and len(_values(ours)) > 1)
        ),
    ),
    Deliberate(
        ("00101010", "00180015", "00180050", "00080008", "00280004"),
        "includefield outside Orthanc's main DICOM tags",
        QIDO,
        "Orthanc 1.10 answers includefield with its database's main DICOM tags only, so it "
        "returns nothing for Patient's Age, Body Part Examined, Slice Thickness, Image Type or "
        "Photometric Interpretation; ours reads them from the stored file's header.",
        lambda ours, theirs: theirs is None and bool(_values(ours)),
    ),
)

# Frames: forms in which Orthanc cannot answer, so the comparison uses another form or none.
FRAME_DIFFERENCES = {
    "big-endian-star": "Orthanc answers 500 to transfer-syntax=* for an Explicit VR Big "
    "Endian file; ours returns the frames in Explicit VR Little Endian, compared with what "
    "Orthanc returns for transfer-syntax=1.2.840.10008.1.2.1.",
    "no-decoder-orthanc": "Orthanc 1.10 has no JPEG 2000 decoder (500): decoded JPEG 2000 "
    "frames are checked against the stored frame's size only.",
    "no-decoder-here": "pydicom here has no decoder for JPEG-LS, lossless JPEG or 12-bit "
    "JPEG: ours answers 406 naming the syntax and offers the stored frames, which are compared.",
    "rendered": "Orthanc 1.10's DICOMweb plugin answers 400 to /rendered, and windowing is a "
    "choice (ours is the platform previews'): rendered images are tested on their own.",
}


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        if keys <= {"Alphabetic", "Ideographic", "Phonetic"}:  # a person name
            return all((a.get(k) or "") == (b.get(k) or "") for k in keys)
        return same_dataset(a, b)  # a sequence item
    if a in ("", None) and b in ("", None):
        return True
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def same_attribute(ours: Attr, theirs: Attr, tag: str = "") -> bool:
    if not _values(ours) and not _values(theirs) and not _bulk(ours) and not _bulk(theirs):
        return ours is None or theirs is None or ours.get("vr") == theirs.get("vr")
    if ours is None or theirs is None or ours.get("vr") != theirs.get("vr"):
        return False
    if _bulk(ours) or _bulk(theirs):
        return _bulk(ours) and _bulk(theirs)
    a, b = _values(ours), _values(theirs)
    if tag == "00081190":  # each server names itself
        a = [str(v)[str(v).find("/studies/") :] for v in a]
        b = [str(v)[str(v).find("/studies/") :] for v in b]
    return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))


def same_dataset(ours: dict, theirs: dict) -> bool:
    return all(same_attribute(ours.get(t), theirs.get(t), t) for t in set(ours) | set(theirs))


@dataclass
class Comparison:
    """What one comparison covered: entities, attributes with a value compared equal,
    differences accepted as deliberate (by tag), and mismatches (to be fixed or listed)."""

    entities: int = 0
    attributes: int = 0
    deliberate: Counter = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)

    def add(self, where: str, key: str, ours: dict, theirs: dict) -> None:
        self.entities += 1
        for tag in sorted(set(ours) | set(theirs)):
            mine, reference = ours.get(tag), theirs.get(tag)
            if same_attribute(mine, reference, tag):
                if _values(mine) or _bulk(mine) or _values(reference):
                    self.attributes += 1
                continue
            allowed = [
                d
                for d in DELIBERATE
                if (not d.tags or tag in d.tags) and where in d.where and d.shape(mine, reference)
            ]
            if allowed:
                self.deliberate[f"{tag} ({allowed[0].keyword})"] += 1
            else:
                self.mismatches.append(f"{where} {key} {tag}: ours {mine} / Orthanc {reference}")

    def __str__(self) -> str:
        kept = ", ".join(f"{k}: {v}" for k, v in sorted(self.deliberate.items())) or "none"
        return (
            f"{self.entities} compared, {self.attributes} attributes with a value equal, "
            f"{len(self.mismatches)} mismatches; deliberate differences: {kept}"
        )
