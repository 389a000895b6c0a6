"""FHIR R4 resources pseudonymised with the same key, pseudonyms and date offsets as imaging.

- the subject becomes the platform pseudonym (from the first identifier of a national system,
  else provider-scoped from the Patient id), so a person links across DICOM and FHIR;
- resource ids are remapped with the key; references (``Type/id``, ``urn:uuid:...``, absolute
  URLs) are rewritten to the remapped ids, so they still resolve;
- names, addresses, telecom, identifiers, contacts, photos, narrative, notes, comments and
  attachment content are removed, as is the display text of references;
- full dates and date-times move by the subject's offset; the birth date is generalised.
Pure functions: no I/O, no Dagster.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
from dataclasses import dataclass, field

from hdh_assets.pseudonymisation.identifiers import InvalidNationalIdentifier
from hdh_assets.pseudonymisation.subjects import Pseudonymiser

PERSON_TYPES = {"Patient", "Practitioner", "RelatedPerson", "Person"}
REMOVED_KEYS = {
    "text",
    "note",
    "address",
    "telecom",
    "identifier",
    "contact",
    "photo",
    "comment",
    "patientInstruction",
    "communication",
}
SUBJECT_FIELDS = ("subject", "patient")
REMAP_MEMO_SIZE = 200_000
# Extensions whose value can name or locate a person (mother's maiden name, birth place, ...).
IDENTIFYING_EXTENSION_VALUES = {
    "valueString",
    "valueMarkdown",
    "valueAddress",
    "valueHumanName",
    "valueContactPoint",
    "valueIdentifier",
    "valueAttachment",
}
_NOT_DATES = {"system", "code", "version", "reference", "id", "url", "value", "unit"}
_FULL_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(T.*)?$")
_ABSOLUTE = re.compile(r"^https?://.+/([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/.*)?$")
_RELATIVE = re.compile(r"^([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/.*)?$")


class InvalidRecord(ValueError):
    """A record that cannot be ingested; ``reason`` is a stable code, the message names no value."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Subject:
    pseudonym: str
    kind: str  # national | provider


def patient_subject(
    patient: dict, pseudonymiser: Pseudonymiser, national_systems: tuple[str, ...], provider: str
) -> Subject:
    """The first identifier of a national system, in the provider's order, else the Patient id."""
    identifiers = [i for i in patient.get("identifier") or [] if isinstance(i, dict)]
    for system in national_systems:
        for identifier in identifiers:
            if identifier.get("system") == system and identifier.get("value"):
                try:
                    return Subject(
                        pseudonymiser.subject_pseudonym(str(identifier["value"])), "national"
                    )
                except InvalidNationalIdentifier:
                    continue
    local = str(patient.get("id") or "")
    if not local:
        raise InvalidRecord("missing_id", "Patient without id nor national identifier")
    return Subject(
        pseudonymiser.provider_scoped_pseudonym(provider, f"Patient/{local}"), "provider"
    )


def remap_id(key: bytes, provider: str, resource_id: str) -> str:
    """The keyed replacement of a resource id. It does not depend on the resource type, so that a
    ``urn:uuid:`` reference resolves without knowing what it points at (ids are UUIDs there)."""
    message = f"fhir-id:{provider}\x1f{resource_id}".encode()
    return hmac.digest(key, message, "sha256").hex()[:32]


def parse_reference(
    reference: str, full_urls: dict[str, tuple[str, str]]
) -> tuple[str | None, str] | None:
    """(type, id) of a reference; the type is None for a ``urn:uuid:`` no Bundle entry declared;
    None for a contained (#), conditional (``Type?query``) or unparseable reference."""
    if reference.startswith("urn:uuid:"):
        return full_urls.get(reference) or (None, reference.removeprefix("urn:uuid:"))
    match = _RELATIVE.match(reference) or _ABSOLUTE.match(reference)
    return (match.group(1), match.group(2)) if match else None


@dataclass
class FhirContext:
    """What a batch knows before its second pass: patients and Bundle fullUrls."""

    pseudonymiser: Pseudonymiser
    provider: str
    national_systems: tuple[str, ...]
    birth_date: str = "year"
    full_urls: dict[str, tuple[str, str]] = field(default_factory=dict)
    # remapped Patient id -> subject, for this batch and earlier ones
    subjects: dict[str, Subject] = field(default_factory=dict)
    _remapped: dict[str, str] = field(default_factory=dict, repr=False)
    _offsets: dict[str, int] = field(default_factory=dict, repr=False)

    def remap(self, resource_id: str) -> str:
        # memoised: a batch refers to the same patients and encounters over and over; the memo
        # is emptied when full, so memory stays bounded on any batch
        remapped = self._remapped.get(resource_id)
        if remapped is None:
            if len(self._remapped) >= REMAP_MEMO_SIZE:
                self._remapped.clear()
            remapped = remap_id(self.pseudonymiser.key, self.provider, resource_id)
            self._remapped[resource_id] = remapped
        return remapped

    def offset(self, subject: Subject) -> int:
        days = self._offsets.get(subject.pseudonym)
        if days is None:
            days = self._offsets[subject.pseudonym] = self.pseudonymiser.date_offset_days(
                subject.pseudonym
            )
        return days

    def register_patient(self, patient: dict, full_url: str | None = None) -> Subject:
        subject = patient_subject(patient, self.pseudonymiser, self.national_systems, self.provider)
        self.subjects[self.remap(str(patient.get("id") or full_url or ""))] = subject
        if full_url:
            self.full_urls[full_url] = ("Patient", str(patient.get("id") or full_url))
        return subject


def _shift_text(value: str, offset: int) -> str:
    match = _FULL_DATE.match(value)
    if not match:
        return value
    try:
        day = dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        raise InvalidRecord("invalid_date", "a date that does not exist") from None
    return (day + dt.timedelta(days=offset)).isoformat() + (match.group(4) or "")


def _generalise_birth_date(value: str, rule: str) -> str | None:
    if rule == "none" or not isinstance(value, str) or len(value) < 4:
        return None
    return value[:4] if rule == "year" else value[:7]


class FhirPseudonymiser:
    def __init__(self, context: FhirContext):
        self.context = context

    def subject_of(self, resource: dict, full_url: str | None = None) -> Subject | None:
        context = self.context
        if resource.get("resourceType") == "Patient":
            remapped = context.remap(str(resource.get("id") or full_url or ""))
            return context.subjects.get(remapped) or context.register_patient(resource, full_url)
        for name in SUBJECT_FIELDS:
            value = resource.get(name)
            if not isinstance(value, dict) or "reference" not in value:
                continue
            if not isinstance(value["reference"], str):
                raise InvalidRecord(
                    "wrong_type", f"{resource['resourceType']}.{name}.reference is not a string"
                )
            target = parse_reference(value["reference"], context.full_urls)
            if target is None or target[0] not in ("Patient", None):
                continue
            subject = context.subjects.get(context.remap(target[1]))
            if subject is None:
                raise InvalidRecord(
                    "unknown_reference",
                    f"{resource['resourceType']}.{name} refers to an unknown Patient",
                )
            return subject
        return None

    def apply(self, resource: dict, full_url: str | None = None) -> tuple[dict, Subject | None]:
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or not rtype:
            raise InvalidRecord("missing_resource_type", "no resourceType")
        if not isinstance(resource.get("id", ""), str):
            raise InvalidRecord("wrong_type", f"{rtype}.id is not a string")
        subject = self.subject_of(resource, full_url)
        offset = self.context.offset(subject) if subject else 0
        out = self._walk(resource, offset, root=True)
        original_id = resource.get("id") or full_url
        if original_id:
            out["id"] = self.context.remap(str(original_id))
        if rtype in PERSON_TYPES:
            out.pop("name", None)
        if rtype == "Patient":
            generalised = _generalise_birth_date(resource.get("birthDate"), self.context.birth_date)
            out.pop("birthDate", None)
            if generalised:
                out["birthDate"] = generalised
        return out, subject

    def _walk(self, node, offset: int, root: bool = False, key: str = ""):
        if isinstance(node, dict):
            out = {}
            is_reference = "reference" in node and isinstance(node.get("reference"), str)
            is_attachment = "contentType" in node or (
                "data" in node and "url" not in node and key != ""
            )
            for name, value in node.items():
                if name in REMOVED_KEYS or (name == "meta" and root):
                    continue
                if name == "birthDate" and root:
                    out[name] = value  # generalised by the caller, from the original value
                    continue
                if is_reference and name == "display":
                    continue
                if is_attachment and name in ("data", "url", "title"):
                    continue
                if is_reference and name == "reference":
                    out[name] = self._rewrite_reference(value)
                    continue
                out[name] = self._walk(value, offset, key=name)
            return out
        if isinstance(node, list):
            if key in ("extension", "modifierExtension"):
                node = [
                    e
                    for e in node
                    if not (isinstance(e, dict) and IDENTIFYING_EXTENSION_VALUES & e.keys())
                ]
            return [self._walk(item, offset, key=key) for item in node]
        if isinstance(node, str) and offset and key not in _NOT_DATES:
            return _shift_text(node, offset)
        return node

    def _rewrite_reference(self, reference: str) -> str:
        if reference.startswith("#"):
            return reference  # a contained resource
        target = parse_reference(reference, self.context.full_urls)
        if target is None:
            return "unresolved"  # conditional or odd: keep the shape, never the original text
        kind, original = target
        remapped = self.context.remap(original)
        return f"{kind}/{remapped}" if kind else f"urn:uuid:{remapped}"
