"""PS3.15 Annex E de-identification of a DICOM dataset, with keyed pseudonyms.

The subject becomes its platform pseudonym (the same as in clinical and claims data), every UID of
Table E.1-1 is remapped with the key (inside sequences too, so references still resolve), dates
move by the subject's offset when the longitudinal option is on, private attributes go, and the
dataset records what was done (PatientIdentityRemoved, DeidentificationMethodCodeSequence).
The input dataset is never modified.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from hdh_assets.imaging.elements import da_date
from hdh_assets.pseudonymisation.annex_e import SUPPORTED_OPTIONS, Option, describe, rule_for
from hdh_assets.pseudonymisation.identifiers import INS_NIR_OID, InvalidNationalIdentifier
from hdh_assets.pseudonymisation.subjects import Pseudonymiser

# Our implementation's identity in File Meta (a fixed UUID-derived UID, PS3.5 B.2).
IMPLEMENTATION_CLASS_UID = "2.25.205739622386335546219519358932066396785"
IMPLEMENTATION_VERSION_NAME = "HDH_PLATFORM_01"
DEIDENTIFICATION_METHOD = "HDH platform: PS3.15 Annex E, keyed pseudonyms"
NATIONAL_ISSUERS = ("INS-NIR", "INS", INS_NIR_OID, f"urn:oid:{INS_NIR_OID}")
DEFAULT_OPTIONS = (
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
    Option.RETAIN_PATIENT_CHARACTERISTICS,
)
# When a combined action depends on the attribute's type in its IOD, take the branch that is valid
# for every type: a dummy (D) or empty (Z) value never breaks a Type 1 or 2 requirement.
_COMBINED = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U*"}
_DATE_VRS = {"DA", "DT", "TM"}
REAL_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")
PLACEHOLDER_UID = re.compile(r"^[0-9]{1,3}$")
DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
_SYNTAX_BY_ENCODING = {
    (True, True): "1.2.840.10008.1.2",  # Implicit VR Little Endian
    (False, True): "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    (False, False): "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still read)
    (True, False): "1.2.840.10008.1.2.2",
}
TEXT_DUMMY = "ANONYMIZED"
DUMMY_BY_VR = {
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "IS": "0",
    "DS": "0",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
}
MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64}


@dataclass(frozen=True)
class SubjectRule:
    """How a provider identifies patients in DICOM: which issuers mean the national identifier."""

    provider: str = "default"
    national_issuers: tuple[str, ...] = NATIONAL_ISSUERS


@dataclass(frozen=True)
class DicomProfile:
    options: tuple[Option, ...] = DEFAULT_OPTIONS
    subject_rule: SubjectRule = field(default_factory=SubjectRule)

    def __post_init__(self) -> None:
        unsupported = set(self.options) - set(SUPPORTED_OPTIONS)
        if unsupported:
            raise ValueError(
                f"unsupported profile options: {sorted(o.meaning for o in unsupported)}"
            )

    @property
    def shifts_dates(self) -> bool:
        return Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options


@dataclass(frozen=True)
class Subject:
    pseudonym: str
    kind: str  # "national" or "provider"


def _issuers(ds: Dataset) -> set[str]:
    found = {str(ds.get("IssuerOfPatientID", "") or "").strip()}
    for item in ds.get("IssuerOfPatientIDQualifiersSequence", []) or []:
        found.add(str(item.get("UniversalEntityID", "") or "").strip())
    return {i for i in found if i}


def subject_of(ds: Dataset, pseudonymiser: Pseudonymiser, rule: SubjectRule) -> Subject:
    """The subject pseudonym: national when the issuer says NIR and the NIR is valid."""
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if patient_id and _issuers(ds) & set(rule.national_issuers):
        try:
            return Subject(pseudonymiser.subject_pseudonym(patient_id), "national")
        except InvalidNationalIdentifier:
            pass  # a wrong NIR still names someone: fall back to a provider-scoped pseudonym
    local = patient_id or "(no patient id)"
    return Subject(pseudonymiser.provider_scoped_pseudonym(rule.provider, local), "provider")


@dataclass
class DeidentificationReport:
    removed: int = 0
    emptied: int = 0
    replaced: int = 0
    uids_remapped: int = 0
    dates_shifted: int = 0
    private_removed: int = 0
    unreadable_removed: int = 0


class DicomPseudonymiser:
    """Applies one profile with one key; safe to share across threads and processes."""

    def __init__(self, pseudonymiser: Pseudonymiser, profile: DicomProfile | None = None):
        self.pseudonymiser = pseudonymiser
        self.profile = profile or DicomProfile()
        self._actions: dict[int, str] = {}

    def action(self, tag: int) -> str:
        """The profile's action for an attribute (combined codes resolved), looked up once."""
        try:
            return self._actions[tag]
        except KeyError:
            rule = rule_for(tag)
            action = rule.action(self.profile.options) if rule else "K"
            self._actions[tag] = _COMBINED.get(action, action)
            return self._actions[tag]

    def apply(self, ds: Dataset) -> tuple[Dataset, Subject, DeidentificationReport]:
        subject = subject_of(ds, self.pseudonymiser, self.profile.subject_rule)
        offset = self.pseudonymiser.date_offset_days(subject.pseudonym)
        report = DeidentificationReport()
        out = self._clean(ds, offset, report)
        self._mark(out, subject)
        out.file_meta = self._file_meta(ds, out)
        out.preamble = b"\0" * 128
        return out, subject, report

    # -- the walk ---------------------------------------------------------------------------
    def _clean(self, ds: Dataset, offset: int, report: DeidentificationReport) -> Dataset:
        out = Dataset()
        # Overlay Data (60xx,3000) is removed (X): the rest of its Overlay Plane would be left
        # without a Type 1 attribute, so the whole overlay group goes with it.
        tags = list(ds.keys())  # iterating a Dataset itself yields elements, not tags
        overlays = {t.group for t in tags if 0x6000 <= t.group <= 0x601E and t.element == 0x3000}
        for tag in tags:
            if tag.group == 0x0002:
                continue
            if tag.group in overlays:
                report.removed += 1
                continue
            if tag.is_private:
                report.private_removed += 1
                continue
            try:
                elem = ds[tag]
            except Exception:  # an element pydicom cannot parse cannot be checked: drop it
                report.unreadable_removed += 1
                continue
            if not _well_formed(elem):
                report.unreadable_removed += 1
                continue
            new = self._act(elem, self.action(int(tag)), offset, report)
            if new is not None:
                out.add(new)
        return out

    def _act(
        self, elem: DataElement, action: str, offset: int, report: DeidentificationReport
    ) -> DataElement | None:
        vr = elem.VR
        if action == "X":
            report.removed += 1
            return None
        if vr == "SQ":
            if action == "Z":
                report.emptied += 1
                return DataElement(elem.tag, "SQ", Sequence())
            # K, D, C, U, U*: keep the structure, clean every item with the same rules
            items = [self._clean(item, offset, report) for item in elem.value or []]
            return DataElement(elem.tag, "SQ", Sequence(items))
        if action == "K":
            return DataElement(elem.tag, vr, elem.value)
        if action == "Z":
            report.emptied += 1
            return DataElement(elem.tag, vr, None)
        if action in ("U", "U*"):
            report.uids_remapped += 1
            return DataElement(elem.tag, vr, self._remap(elem.value))
        if action == "C" and self.profile.shifts_dates and (vr in _DATE_VRS or vr in ("SH", "OB")):
            report.dates_shifted += 1
            return DataElement(elem.tag, vr, _shift(elem.value, vr, offset))
        report.replaced += 1  # D, and C where we have no cleaner: a dummy is always safe
        return DataElement(elem.tag, vr, _dummy(vr, elem.value))

    def _remap(self, value):
        if value is None or value == "":
            return value
        if isinstance(value, str):
            return self._remap_one(value)
        return [self._remap_one(str(v)) for v in value]

    def _remap_one(self, uid: str) -> str:
        # A placeholder such as "0" or "1" names nothing; remapping it would invent a reference.
        # Anything else is remapped, valid UID or not: an odd value must never pass through.
        if PLACEHOLDER_UID.match(uid.strip().rstrip("\x00")):
            return uid
        return self.pseudonymiser.remap_uid(uid)

    def _mark(self, out: Dataset, subject: Subject) -> None:
        out.PatientID = subject.pseudonym
        out.PatientName = subject.pseudonym
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = DEIDENTIFICATION_METHOD
        codes = [Option.BASIC, *self.profile.options]
        out.DeidentificationMethodCodeSequence = Sequence([_code(o) for o in codes])
        out.LongitudinalTemporalInformationModified = (
            "MODIFIED" if self.profile.shifts_dates else "REMOVED"
        )

    @staticmethod
    def _file_meta(original: Dataset, out: Dataset) -> FileMetaDataset:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = out.get("SOPClassUID", "")
        meta.MediaStorageSOPInstanceUID = out.get("SOPInstanceUID", "")
        old = getattr(original, "file_meta", None)
        syntax = old.get("TransferSyntaxUID") if old is not None else None
        if syntax is None:  # no File Meta: keep the encoding the dataset was read with
            implicit, little = getattr(original, "original_encoding", (True, True))
            syntax = _SYNTAX_BY_ENCODING[(bool(implicit), bool(little))]
        # Deflated files are written inflated (a lossless change readers handle more widely).
        meta.TransferSyntaxUID = EXPLICIT_LITTLE if syntax == DEFLATED else syntax
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        return meta


def _well_formed(elem: DataElement) -> bool:
    """Numbers in text VRs that pydicom could not parse stay plain str: they would not re-read."""
    if elem.VR in ("IS", "DS") and elem.value not in (None, ""):
        values = elem.value if type(elem.value).__name__ == "MultiValue" else [elem.value]
        return not any(isinstance(v, str) and type(v) is str for v in values)
    return True


def _code(option: Option) -> Dataset:
    item = Dataset()
    item.CodeValue = option.value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = option.meaning
    return item


def _dummy(vr: str, value):
    if vr in DUMMY_BY_VR:
        dummy = DUMMY_BY_VR[vr]
    elif vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        dummy = b""
    elif vr == "UI":
        dummy = ""
    else:
        dummy = TEXT_DUMMY[: MAX_LENGTH.get(vr, 64)]
    multiple = isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"
    return [dummy] * len(value) if multiple and len(value) > 1 else dummy


def shift_date_text(text: str, offset: int) -> str:
    try:
        day = da_date(text)
    except ValueError:
        return DUMMY_BY_VR["DA"] + text[8:] if len(text) > 8 else DUMMY_BY_VR["DA"]
    shifted = day + dt.timedelta(days=offset)
    return f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}" + text[8:]


def _shift(value, vr: str, offset: int):
    """Shift DA and DT by whole days; times of day and time zones stay as they are."""
    if value in (None, "", b""):
        return value
    if vr not in ("DA", "DT"):
        return value
    if isinstance(value, str):
        return shift_date_text(value, offset)
    if isinstance(value, Iterable):
        return [shift_date_text(str(v), offset) for v in value]
    return shift_date_text(str(value), offset)


# -- verification ------------------------------------------------------------------------------
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientIDs",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "AccessionNumber",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
)
DEVICE_KEYWORDS = ("DeviceSerialNumber", "StationName")
MIN_NEEDLE = 5


def identifying_values(original: Dataset, profile: DicomProfile) -> set[str]:
    """Values of the original that must not appear in the output (names split into parts)."""
    keywords = IDENTIFYING_KEYWORDS
    if Option.RETAIN_DEVICE_IDENTITY not in profile.options:
        keywords = keywords + DEVICE_KEYWORDS
    found: set[str] = set()
    elsewhere: set[str] = set()  # the same text in an attribute the profile keeps as it is
    for item in original.iterall():
        if item.value in (None, "") or item.VR in ("SQ", "OB", "OW", "UN"):
            continue
        if item.keyword not in keywords:
            if not item.tag.is_private and _kept(int(item.tag), profile):
                elsewhere.add(str(item.value).strip())
            continue
        values = item.value if type(item.value).__name__ == "MultiValue" else [item.value]
        for value in values:
            text = str(value).strip()
            found.add(text)
            if item.VR == "PN":
                found.update(part.strip() for part in re.split(r"[\^=]", text))
    # e.g. a manufacturer's name used as institution name stays, as the manufacturer
    kept_text = "\n".join(elsewhere)
    return {v for v in found if len(v) >= MIN_NEEDLE and v not in kept_text}


def _kept(tag: int, profile: DicomProfile) -> bool:
    """Whether the profile copies this attribute's value unchanged into the output."""
    rule = rule_for(tag)
    return rule is None or rule.action(profile.options) == "K"


def leaked_values(original: Dataset, written: bytes, profile: DicomProfile) -> int:
    """How many identifying values of the original occur in the written file (never which)."""
    return sum(1 for value in identifying_values(original, profile) if value.encode() in written)


def conformance_violations(ds: Dataset, profile: DicomProfile) -> list[str]:
    """Attributes left with a value Table E.1-1 does not allow, by keyword (values never shown)."""
    problems = []
    for item in ds.iterall():
        tag = int(item.tag)
        if item.tag.is_private:
            problems.append(f"private {describe(tag)}")
            continue
        rule = rule_for(tag)
        if rule is None:
            continue
        action = _COMBINED.get(rule.action(profile.options), rule.action(profile.options))
        if action == "X" and not (0x6000 <= item.tag.group <= 0x601E):
            problems.append(f"{describe(tag)} should be removed")
        elif action in ("U", "U*") and item.VR == "UI" and item.value:
            values = item.value if type(item.value).__name__ == "MultiValue" else [item.value]
            if any(REAL_UID.match(str(v)) and not str(v).startswith("2.25.") for v in values):
                problems.append(f"{describe(tag)} is not a remapped UID")
    if ds.get("PatientIdentityRemoved") != "YES":
        problems.append("PatientIdentityRemoved is not YES")
    return problems
