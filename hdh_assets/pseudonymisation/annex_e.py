"""DICOM PS3.15 Annex E, Table E.1-1: the action for each attribute, basic profile and options.

The basic-profile column comes from the 2024b transcription in ``dicom-anonymizer`` (BSD); the
three options the platform supports are written here from the standard's definitions (E.3.6,
E.3.7, E.3.8). ``tests/pseudonymisation/test_annex_e.py`` compares every row with a reference
extraction of the standard.

Action codes: D dummy value, Z zero length, X remove, K keep, C clean, U replace UID;
combined codes (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) depend on the attribute's type in its IOD.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2024b as table_2024b
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.tag import Tag

STANDARD_REVISION = "2024b"

_CATEGORIES = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}


class Option(enum.StrEnum):
    """Profile options the platform can apply, with their CID 7050 codes (DCM scheme)."""

    BASIC = "113100"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "113107"
    RETAIN_PATIENT_CHARACTERISTICS = "113108"
    RETAIN_DEVICE_IDENTITY = "113109"
    RETAIN_UIDS = "113110"  # never applied: UIDs are always remapped; listed for completeness
    RETAIN_SAFE_PRIVATE = "113111"  # never applied: private attributes are always removed

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    Option.BASIC: "Basic Application Confidentiality Profile",
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: "Retain Longitudinal Temporal Information Modified Dates Option",
    Option.RETAIN_PATIENT_CHARACTERISTICS: "Retain Patient Characteristics Option",
    Option.RETAIN_DEVICE_IDENTITY: "Retain Device Identity Option",
    Option.RETAIN_UIDS: "Retain UIDs Option",
    Option.RETAIN_SAFE_PRIVATE: "Retain Safe Private Option",
}
SUPPORTED_OPTIONS = (
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
    Option.RETAIN_PATIENT_CHARACTERISTICS,
    Option.RETAIN_DEVICE_IDENTITY,
)

# E.3.7: characteristics of the patient that are not identifying but matter to research.
PATIENT_CHARACTERISTICS_KEEP = {
    0x00101010,  # Patient's Age
    0x00100040,  # Patient's Sex
    0x00102203,  # Patient's Sex Neutered
    0x00101020,  # Patient's Size
    0x00101030,  # Patient's Weight
    0x00102160,  # Ethnic Group
    0x001021A0,  # Smoking Status
    0x001021C0,  # Pregnancy Status
    0x0072005F,  # Selector AS Value
}
PATIENT_CHARACTERISTICS_CLEAN = {
    0x00102110,  # Allergies
    0x00380500,  # Patient State
    0x00400012,  # Pre-Medication
    0x00380050,  # Special Needs
}

# E.3.8: what identifies the device rather than the patient.
DEVICE_IDENTITY_KEEP = {
    0x00181000,  # Device Serial Number
    0x00181002,  # Device UID
    0x00081010,  # Station Name
    0x0018700A,  # Detector ID
    0x00181008,  # Gantry ID
    0x00181005,  # Generator ID
    0x00181004,  # Plate ID
    0x00181007,  # Cassette ID
    0x30080105,  # Source Serial Number
    0x300A0216,  # Source Manufacturer
    0x300A00B2,  # Treatment Machine Name
    0x00400242,  # Performed Station Name
    0x00404030,  # Performed Station Geographic Location Code Sequence
    0x00400010,  # Scheduled Station Name
    0x00404027,  # Scheduled Station Geographic Location Code Sequence
    0x00404025,  # Scheduled Station Name Code Sequence
    0x00404026,  # Scheduled Station Class Code Sequence
    0x00404028,  # Performed Station Class Code Sequence
    0x00404029,  # Performed Station Name Code Sequence
    0x00400011,  # Scheduled Procedure Step Location
    0x00321020,  # Scheduled Study Location
    0x00181010,  # Secondary Capture Device ID
    0x00185011,  # Transducer Identification Sequence
    0x3010002D,  # Device Label
    0x00500020,  # Device Description
    0x0018100B,  # Manufacturer's Device Class UID
    0x00189371,  # X-Ray Detector ID
    0x00189373,  # X-Ray Detector Label
    0x00189367,  # X-Ray Source ID
    0x00203401,  # Modifying Device ID
    0x04000563,  # Modifying System
    0x300C0127,  # Beam Hold Transition DateTime
    # when the device was made, installed and calibrated describes the device, not the patient
    0x00181200,  # Date of Last Calibration
    0x00181201,  # Time of Last Calibration
    0x00181202,  # DateTime of Last Calibration
    0x00181204,  # Date of Manufacture
    0x00181205,  # Date of Installation
    0x0018700C,  # Date of Last Detector Calibration
    0x0018700E,  # Time of Last Detector Calibration
    0x00181203,  # Calibration DateTime
    0x0014407C,  # Calibration Time
    0x0014407E,  # Calibration Date
    0x00189515,  # Source Start DateTime
    0x0018100A,  # UDI Sequence
    0x00181009,  # Unique Device Identifier
    0x30100043,  # Manufacturer's Device Identifier
    0x0016004E,  # Lens Specification
    0x0016004F,  # Lens Make
    0x00160050,  # Lens Model
    0x00160051,  # Lens Serial Number
}
# Network names of devices (AE titles, network ids) are cleaned of anything identifying.
DEVICE_IDENTITY_CLEAN = {
    0x00080054,  # Retrieve AE Title
    0x00080055,  # Station AE Title
    0x00081000,  # Network ID
    0x21000070,  # Originator
    0x21000140,  # Destination AE
    0x00400241,  # Performed Station AE Title
    0x00400001,  # Scheduled Station AE Title
    0x00321021,  # Scheduled Study Location AE Title
    0x00741234,  # Receiving AE
    0x00741236,  # Requesting AE
    0x0072005E,  # Selector AE Value
}

_DATE_VRS = {"DA", "DT", "TM"}
# Dates and times of the patient's life are not longitudinal events of the study (E.3.6).
DATES_NOT_SHIFTED = {
    0x00100030,  # Patient's Birth Date
    0x00100032,  # Patient's Birth Time
    0x00160077,  # GPS Time Stamp (a location, removed)
}
# Time-bearing attributes whose VR is not DA/DT/TM.
DATES_SHIFTED_BY_NAME = {
    0x00080201,  # Timezone Offset From UTC
    0x00340007,  # Frame Origin Timestamp
    0x04000310,  # Certified Timestamp
}


@dataclass(frozen=True)
class TagPattern:
    """An exact tag, or a repeating-group mask such as (50xx,xxxx) or (60xx,4000)."""

    tag: int
    mask: int = 0xFFFFFFFF
    text: str = ""

    def matches(self, tag: int) -> bool:
        return (tag & self.mask) == self.tag

    @property
    def label(self) -> str:
        if self.text:
            return self.text
        group = f"{self.tag >> 16:04X}"
        element = f"{self.tag & 0xFFFF:04X}"
        if (self.mask >> 16) == 0xFF00:
            group = group[:2] + "XX"
        if (self.mask & 0xFFFF) == 0:
            element = "XXXX"
        return f"({group},{element})"


PRIVATE_ATTRIBUTES = TagPattern(0x00010000, 0x00010000, "(GGGG,EEEE) WHERE GGGG IS ODD")


@dataclass(frozen=True)
class Rule:
    pattern: TagPattern
    basic: str
    options: tuple[tuple[Option, str], ...] = ()

    def action(self, options: Iterable[Option] = ()) -> str:
        """The action once the chosen options are applied (later options win, as in E.1.1)."""
        chosen = set(options)
        action = self.basic
        for option, code in self.options:
            if option in chosen:
                action = code
        return action


def _option_codes(tag: int, exact: bool) -> tuple[tuple[Option, str], ...]:
    codes: list[tuple[Option, str]] = []
    if exact:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = ""
        if (vr in _DATE_VRS and tag not in DATES_NOT_SHIFTED) or tag in DATES_SHIFTED_BY_NAME:
            codes.append((Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, "C"))
    if tag in PATIENT_CHARACTERISTICS_KEEP:
        codes.append((Option.RETAIN_PATIENT_CHARACTERISTICS, "K"))
    elif tag in PATIENT_CHARACTERISTICS_CLEAN:
        codes.append((Option.RETAIN_PATIENT_CHARACTERISTICS, "C"))
    if tag in DEVICE_IDENTITY_KEEP:
        codes.append((Option.RETAIN_DEVICE_IDENTITY, "K"))
    elif tag in DEVICE_IDENTITY_CLEAN:
        codes.append((Option.RETAIN_DEVICE_IDENTITY, "C"))
    return tuple(codes)


@cache
def rules() -> tuple[Rule, ...]:
    """Every row of Table E.1-1 as a rule."""
    built = []
    for category, code in _CATEGORIES.items():
        for entry in getattr(table_2024b, category):
            if len(entry) == 2:
                pattern = TagPattern(int(Tag(entry)))
            else:
                group, element, group_mask, element_mask = entry
                pattern = TagPattern((group << 16) | element, (group_mask << 16) | element_mask)
            exact = pattern.mask == 0xFFFFFFFF
            built.append(Rule(pattern, code, _option_codes(pattern.tag, exact)))
    built.append(Rule(PRIVATE_ATTRIBUTES, "X"))  # the table's last row: every private attribute
    return tuple(sorted(built, key=lambda r: r.pattern.tag))


@cache
def _exact_rules() -> dict[int, Rule]:
    return {r.pattern.tag: r for r in rules() if r.pattern.mask == 0xFFFFFFFF}


@cache
def _masked_rules() -> tuple[Rule, ...]:
    return tuple(r for r in rules() if r.pattern.mask != 0xFFFFFFFF)


def rule_for(tag: int) -> Rule | None:
    """The rule for an attribute, exact tags first, then repeating groups."""
    exact = _exact_rules().get(tag)
    if exact is not None:
        return exact
    for rule in _masked_rules():
        if rule.pattern.matches(tag):
            return rule
    return None


def describe(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
