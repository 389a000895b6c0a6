"""The attributes QIDO-RS returns at each level, and where each value comes from.

PS3.18 Tables 10.6.3-3 (study), 10.6.3-4 (series) and 10.6.3-5 (instance) list what a search
must return. Most come from the lake's index (``index``), a few are computed from it
(``computed``: counts, modalities, availability, the retrieve URL), and the rest are read from
the header of one stored file of the entity (``header``): the index does not keep them because
pseudonymisation empties them (accession number, referring physician, birth date, study ID) or
because nothing else needs them. The header is read once and cached (see ``headers.py``), and
since the store is pseudonymised, what is returned is exactly what the store holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dicomweb.errors import bad_request


class Level(StrEnum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


INDEX, HEADER, COMPUTED = "index", "header", "computed"


@dataclass(frozen=True)
class Attribute:
    keyword: str
    source: str  # index, header or computed
    only_if_present: bool = False  # "if known" in the tables: omitted rather than empty

    @property
    def tag(self) -> str:
        return f"{tag_for_keyword(self.keyword):08X}"

    @property
    def vr(self) -> str:
        return vr_of(self.tag)


_A = Attribute
STUDY = (
    _A("StudyDate", INDEX),
    _A("StudyTime", INDEX),
    _A("AccessionNumber", HEADER),
    _A("InstanceAvailability", COMPUTED),
    _A("ModalitiesInStudy", COMPUTED),
    _A("ReferringPhysicianName", HEADER),
    _A("TimezoneOffsetFromUTC", HEADER, only_if_present=True),
    _A("RetrieveURL", COMPUTED),
    _A("PatientName", HEADER),
    _A("PatientID", INDEX),
    _A("PatientBirthDate", HEADER),
    _A("PatientSex", INDEX),
    _A("StudyInstanceUID", INDEX),
    _A("StudyID", HEADER),
    _A("NumberOfStudyRelatedSeries", COMPUTED),
    _A("NumberOfStudyRelatedInstances", COMPUTED),
)
SERIES = (
    _A("Modality", INDEX),
    _A("TimezoneOffsetFromUTC", HEADER, only_if_present=True),
    _A("SeriesDescription", HEADER),
    _A("SeriesInstanceUID", INDEX),
    _A("PerformedProcedureStepStartDate", HEADER),
    _A("PerformedProcedureStepStartTime", HEADER),
    _A("RequestAttributesSequence", HEADER, only_if_present=True),
    _A("SeriesNumber", INDEX),
    _A("NumberOfSeriesRelatedInstances", COMPUTED),
    _A("RetrieveURL", COMPUTED),
)
INSTANCE = (
    _A("SOPClassUID", INDEX),
    _A("SOPInstanceUID", INDEX),
    _A("InstanceAvailability", COMPUTED),
    _A("TimezoneOffsetFromUTC", HEADER, only_if_present=True),
    _A("RetrieveURL", COMPUTED),
    _A("InstanceNumber", INDEX),
    _A("Rows", INDEX),
    _A("Columns", INDEX),
    _A("BitsAllocated", INDEX),
    _A("NumberOfFrames", INDEX),
)
RETURNED = {Level.STUDY: STUDY, Level.SERIES: SERIES, Level.INSTANCE: INSTANCE}
UPPER = {Level.STUDY: (), Level.SERIES: (Level.STUDY,), Level.INSTANCE: (Level.STUDY, Level.SERIES)}

# Matching keys (PS3.18 Table 10.6.1-5, PS3.4 C.6.1.1): a level also matches on the keys of
# the levels above it, as a flat /series or /instances search needs.
MATCHING = {
    Level.STUDY: (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
    ),
    Level.SERIES: (
        "Modality",
        "SeriesDescription",
        "SeriesInstanceUID",
        "SeriesNumber",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
    ),
    Level.INSTANCE: ("SOPClassUID", "SOPInstanceUID", "InstanceNumber"),
}


def returned(level: Level) -> list[Attribute]:
    """What a search at ``level`` returns: its own attributes, then the stored (not computed)
    attributes of the levels above, as Orthanc and most archives do."""
    seen, out = set(), []
    for attribute in RETURNED[level]:
        seen.add(attribute.keyword)
        out.append(attribute)
    for upper in UPPER[level]:
        for attribute in RETURNED[upper]:
            if attribute.source != COMPUTED and attribute.keyword not in seen:
                seen.add(attribute.keyword)
                out.append(attribute)
    return out


def matching_keys(level: Level) -> set[str]:
    keys = set(MATCHING[level])
    for upper in UPPER[level]:
        keys |= set(MATCHING[upper])
    return keys


def source_of(keyword: str, level: Level) -> str:
    """Where ``keyword``'s value comes from at ``level``; anything not catalogued is read from
    the header of the entity's representative file."""
    for attribute in (*RETURNED[level], *(a for u in UPPER[level] for a in RETURNED[u])):
        if attribute.keyword == keyword:
            return attribute.source
    return HEADER


_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


def vr_of(tag: str) -> str:
    try:
        vr = dictionary_VR(int(tag, 16))
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


def resolve(name: str, parameter: str = "attribute") -> tuple[str, str]:
    """(tag, keyword) of a query key or includefield value, given as a keyword or 8 hex digits;
    400 naming it when it is neither (a sequence path is refused the same way)."""
    if "." in name:
        raise bad_request(f"{parameter} '{name}': sequence matching is not supported")
    if _TAG.match(name):
        tag = name.upper()
        keyword = keyword_for_tag(int(tag, 16))
        if not keyword:
            raise bad_request(f"{parameter} '{name}' is not an attribute of the DICOM dictionary")
        return tag, keyword
    number = tag_for_keyword(name)
    if number is None:
        raise bad_request(f"{parameter} '{name}' is not a DICOM attribute keyword or tag")
    return f"{number:08X}", name


NUMERIC_VRS = {"IS", "US", "UL", "SS", "SL", "UV", "SV"}
FLOAT_VRS = {"DS", "FL", "FD"}


def json_value(vr: str, value: Any) -> dict:
    """A DICOM JSON attribute (PS3.18 F.2) from an index value: None or '' gives an empty
    attribute, lists become multi-valued."""
    values = value if isinstance(value, list | tuple) else [value]
    values = [v for v in values if v is not None and v != ""]
    if not values:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(v)} for v in values]}
    if vr in NUMERIC_VRS:
        return {"vr": vr, "Value": [int(v) for v in values]}
    if vr in FLOAT_VRS:
        return {"vr": vr, "Value": [float(v) for v in values]}
    return {"vr": vr, "Value": [str(v) for v in values]}
