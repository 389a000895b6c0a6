"""FHIR R4 resources pseudonymised with the same key, pseudonyms and date offsets as imaging.

- the subject becomes the platform pseudonym (from the first identifier of a national system,
  else provider-scoped from the Patient id), so a person links across DICOM and FHIR; a resource
  naming its subject by identifier (``{"identifier": {"system": ..., "value": ...}}``) gets the
  subject of the Patient carrying that identifier, or is refused (``unresolved_subject``): a
  person's data is never stored unlinked, where an erasure could not find it;
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
from urllib.parse import parse_qs

from hdh_assets.pseudonymisation.bulk import date_offsets, remap_ids
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
    "meta",
    "masterIdentifier",
    "subscriberId",
    "preAdmissionIdentifier",
    "contentString",
    "description",
    "summary",
}
MAX_DEPTH = 64  # deeper nesting is not FHIR; refused rather than recursed
SUBJECT_FIELDS = ("subject", "patient", "beneficiary")
UNRESOLVED_SUBJECT = "unresolved_subject"
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


def resource_key(resource: dict, full_url: str | None) -> str:
    """What a resource's id is remapped from: its id, else the uuid of its Bundle fullUrl."""
    if resource.get("id"):
        return str(resource["id"])
    return (full_url or "").removeprefix("urn:uuid:")


def patient_subject(
    patient: dict,
    pseudonymiser: Pseudonymiser,
    national_systems: tuple[str, ...],
    provider: str,
    full_url: str | None = None,
) -> Subject:
    """The first identifier of a national system, in the provider's order, else the Patient id."""
    identifiers = patient.get("identifier") or []
    if not isinstance(identifiers, list):
        raise InvalidRecord("wrong_type", "Patient.identifier is not a list")
    identifiers = [i for i in identifiers if isinstance(i, dict)]
    for system in national_systems:
        for identifier in identifiers:
            if identifier.get("system") == system and identifier.get("value"):
                try:
                    return Subject(
                        pseudonymiser.subject_pseudonym(str(identifier["value"])), "national"
                    )
                except InvalidNationalIdentifier:
                    continue
    local = resource_key(patient, full_url)
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


def national_key(pseudonym: str) -> tuple[str, str]:
    """How a Patient's national identifier is indexed: by its pseudonym, never its value."""
    return ("nir", pseudonym)


def local_key(system: str, value: str) -> tuple[str, str, str]:
    """How a Patient's identifier of any other system is indexed (exact system and value)."""
    return ("local", system, value)


def conditional_identifier(reference: str) -> dict:
    """The Identifier of a conditional reference ``Patient?identifier=system|value`` (empty when
    it searches by anything else, which then resolves to nobody)."""
    query = parse_qs(reference.partition("?")[2])
    found = query.get("identifier") or []
    if len(found) != 1 or "|" not in found[0] or len(query) != 1:
        return {}
    system, _, value = found[0].partition("|")
    return {"system": system, "value": value}


@dataclass
class FhirContext:
    """What a batch knows before its second pass: patients, their identifiers, Bundle fullUrls."""

    pseudonymiser: Pseudonymiser
    provider: str
    national_systems: tuple[str, ...]
    birth_date: str = "year"
    full_urls: dict[str, tuple[str, str]] = field(default_factory=dict)
    # remapped Patient id -> subject, for this batch and earlier ones
    subjects: dict[str, Subject] = field(default_factory=dict)
    # identifiers the batch's Patients carry (national_key / local_key) -> their subject, None
    # when Patients with different subjects carry the same one
    identified: dict[tuple, Subject | None] = field(default_factory=dict, repr=False)
    _national: tuple[int, frozenset[str]] = field(default=(-1, frozenset()), repr=False)
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

    def remap_many(self, resource_ids: list[str]) -> list[str]:
        """``[self.remap(i) for i in resource_ids]``, the missing ones hashed in one go."""
        memo = self._remapped
        missing = list(dict.fromkeys(i for i in resource_ids if i not in memo))
        if missing:
            if len(memo) + len(missing) > REMAP_MEMO_SIZE:
                memo.clear()
            memo.update(
                zip(missing, remap_ids(self.pseudonymiser.key, self.provider, missing), strict=True)
            )
            if len(memo) > REMAP_MEMO_SIZE:  # more new ids than the memo holds: answer, forget
                answer = [memo[i] for i in resource_ids]
                memo.clear()
                return answer
        return [memo[i] for i in resource_ids]

    def offset(self, subject: Subject) -> int:
        days = self._offsets.get(subject.pseudonym)
        if days is None:
            days = self._offsets[subject.pseudonym] = self.pseudonymiser.date_offset_days(
                subject.pseudonym
            )
        return days

    def offsets_many(self, subjects: list[Subject | None]) -> list[int]:
        """``[self.offset(s) if s else 0 for s in subjects]``, the missing ones in one go."""
        memo = self._offsets
        missing = list(
            dict.fromkeys(s.pseudonym for s in subjects if s and s.pseudonym not in memo)
        )
        if missing:
            pseudonymiser = self.pseudonymiser
            memo.update(
                zip(
                    missing,
                    date_offsets(pseudonymiser.key, pseudonymiser.max_date_shift_days, missing),
                    strict=True,
                )
            )
        return [memo[s.pseudonym] if s else 0 for s in subjects]

    def register_patient(self, patient: dict, full_url: str | None = None) -> Subject:
        subject = patient_subject(
            patient, self.pseudonymiser, self.national_systems, self.provider, full_url
        )
        key = resource_key(patient, full_url)
        self.subjects[self.remap(key)] = subject
        if full_url:
            self.full_urls[full_url] = ("Patient", key)
        for identifier in patient.get("identifier") or []:
            system, value = _system_value(identifier)
            if system is None:
                continue
            if system in self.national_systems:
                try:
                    self.remember(
                        national_key(self.pseudonymiser.subject_pseudonym(value)), subject
                    )
                except InvalidNationalIdentifier:
                    continue
            else:
                self.remember(local_key(system, value), subject)
        return subject

    def remember(self, key: tuple, subject: Subject) -> None:
        """A Patient of the batch carries this identifier (see :func:`national_key`)."""
        if key in self.identified and self.identified[key] != subject:
            self.identified[key] = None  # two people: a reference by it names nobody for sure
        else:
            self.identified[key] = subject

    def _known_national(self) -> frozenset[str]:
        """National pseudonyms of the Patients known, this batch's and earlier batches'."""
        if self._national[0] != len(self.subjects):
            pseudonyms = frozenset(
                s.pseudonym for s in self.subjects.values() if s.kind == "national"
            )
            self._national = (len(self.subjects), pseudonyms)
        return self._national[1]

    def subject_by_identifier(self, system: object, value: object) -> Subject:
        """The subject of the Patient carrying this identifier: a national one (per the provider's
        systems) names a Patient of this or an earlier batch, any other system one of this batch.
        :class:`InvalidRecord` (``unresolved_subject``, the value never quoted) otherwise."""
        if not isinstance(system, str) or not isinstance(value, str) or not system or not value:
            raise InvalidRecord(UNRESOLVED_SUBJECT, "an identifier without system or value")
        if system in self.national_systems:
            try:
                pseudonym = self.pseudonymiser.subject_pseudonym(value)
            except InvalidNationalIdentifier:
                raise InvalidRecord(
                    UNRESOLVED_SUBJECT, "a national identifier that is not valid"
                ) from None
            key = national_key(pseudonym)
            if key not in self.identified and pseudonym in self._known_national():
                return Subject(pseudonym, "national")
        else:
            key = local_key(system, value)
        if key not in self.identified:
            raise InvalidRecord(UNRESOLVED_SUBJECT, "an identifier no known Patient carries")
        subject = self.identified[key]
        if subject is None:
            raise InvalidRecord(
                UNRESOLVED_SUBJECT, "an identifier that Patients of different people carry"
            )
        return subject


def _system_value(identifier: object) -> tuple[str | None, str]:
    """(system, value) of an Identifier that has both as text, else (None, "")."""
    if not isinstance(identifier, dict):
        return None, ""
    system, value = identifier.get("system"), identifier.get("value")
    if isinstance(system, str) and system and isinstance(value, str) and value:
        return system, value
    return None, ""


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
            remapped = context.remap(resource_key(resource, full_url))
            return context.subjects.get(remapped) or context.register_patient(resource, full_url)
        for name in SUBJECT_FIELDS:
            value = resource.get(name)
            if not isinstance(value, dict):
                continue
            if "reference" not in value:
                if "identifier" in value and value.get("type") in (None, "Patient"):
                    return self._identified(value["identifier"], resource["resourceType"], name)
                continue  # a display alone, or an identifier of a Group, Device...
            if not isinstance(value["reference"], str):
                raise InvalidRecord(
                    "wrong_type", f"{resource['resourceType']}.{name}.reference is not a string"
                )
            target = parse_reference(value["reference"], context.full_urls)
            if target is None and "identifier" in value and value.get("type") in (None, "Patient"):
                # contained or conditional: the identifier beside it says who
                return self._identified(value["identifier"], resource["resourceType"], name)
            if target is None and value["reference"].startswith("Patient?"):
                # conditional (Patient?identifier=system|value): a reference by identifier too
                identifier = conditional_identifier(value["reference"])
                return self._identified(identifier, resource["resourceType"], name)
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

    def _identified(self, identifier: object, rtype: str, name: str) -> Subject:
        """The subject a reference by identifier names (the reason's message quotes no value)."""
        if not isinstance(identifier, dict):
            raise InvalidRecord("wrong_type", f"{rtype}.{name}.identifier is not an object")
        try:
            return self.context.subject_by_identifier(
                identifier.get("system"), identifier.get("value")
            )
        except InvalidRecord as problem:
            raise InvalidRecord(problem.reason, f"{rtype}.{name} names {problem}") from None

    def apply(self, resource: dict, full_url: str | None = None) -> tuple[dict, Subject | None]:
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or not rtype:
            raise InvalidRecord("missing_resource_type", "no resourceType")
        if not isinstance(resource.get("id", ""), str):
            raise InvalidRecord("wrong_type", f"{rtype}.id is not a string")
        subject = self.subject_of(resource, full_url)
        offset = self.context.offset(subject) if subject else 0
        out = self._walk(resource, offset, root=True)
        original_id = resource_key(resource, full_url)
        if original_id:
            out["id"] = self.context.remap(original_id)
        if rtype in PERSON_TYPES:
            generalised = _generalise_birth_date(resource.get("birthDate"), self.context.birth_date)
            out.pop("birthDate", None)
            if generalised:
                out["birthDate"] = generalised
        return out, subject

    def _walk(self, node, offset: int, root: bool = False, key: str = "", depth: int = 0):
        if depth > MAX_DEPTH:
            raise InvalidRecord("too_deep", f"nesting deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            out = {}
            is_coding = "code" in node or "system" in node
            is_attachment = "contentType" in node or "data" in node
            is_person = node.get("resourceType") in PERSON_TYPES  # at any depth (contained)
            for name, value in node.items():
                if name in REMOVED_KEYS:
                    continue
                if is_person and name == "name":
                    continue
                if name == "birthDate":
                    if root and is_person:
                        out[name] = value  # generalised by the caller, from the original value
                    continue  # a birth date anywhere else is removed, never shifted
                if name == "display" and not is_coding:
                    continue  # a reference's display names people; a Coding's names a concept
                if is_attachment and name in ("data", "url", "title"):
                    continue
                if name == "reference":
                    out[name] = self._rewrite_reference(value) if isinstance(value, str) else None
                    continue
                out[name] = self._walk(value, offset, key=name, depth=depth + 1)
            return out
        if isinstance(node, list):
            if key in ("extension", "modifierExtension"):
                node = [
                    e
                    for e in node
                    if not (isinstance(e, dict) and IDENTIFYING_EXTENSION_VALUES & e.keys())
                ]
            return [self._walk(item, offset, key=key, depth=depth + 1) for item in node]
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
