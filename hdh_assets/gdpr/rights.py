"""GDPR rights requests: what an individual may ask, how a request moves, and its deadlines.

Pure rules, no storage: the registry (``resources/rights_registry.py``) applies them. Deadlines
follow GDPR article 12(3): one month from receipt, extendable once by two months with a reason.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum

from hdh_assets.pseudonymisation import InvalidNationalIdentifier, normalise_nir

DUE_SOON_DAYS = 7
EXTENSION_MONTHS = 2
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s.]{2,63}$")
NAME = re.compile(r"^[^\W\d_](?:[^\W\d_]|[ '\-.])*$")  # letters (any script), spaces, ' - .


class RequestType(StrEnum):
    OBJECTION = "objection"
    ERASURE = "erasure"
    ACCESS = "access"
    RECTIFICATION = "rectification"
    RESTRICTION = "restriction"


class Status(StrEnum):
    RECEIVED = "received"
    VERIFIED = "verified"
    REJECTED = "rejected"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


TRANSITIONS: dict[Status, set[Status]] = {
    Status.RECEIVED: {Status.VERIFIED, Status.REJECTED},
    Status.VERIFIED: {Status.PROCESSING, Status.REJECTED},
    Status.PROCESSING: {Status.COMPLETED, Status.FAILED},
    # a failed processing waits for the DPO (hdh rights retry), who sends it back to verified
    Status.FAILED: {Status.VERIFIED, Status.PROCESSING},
    Status.REJECTED: set(),
    Status.COMPLETED: set(),
}
OPEN = {Status.RECEIVED, Status.VERIFIED, Status.PROCESSING, Status.FAILED}


class InvalidRequest(ValueError):
    """Field-level problems of a submission: ``errors`` maps a field to a message, never to the
    value (an identifier must not reach a log or an error page)."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))


class TransitionRefused(ValueError):
    pass


@dataclass(frozen=True)
class Identity:
    """What the person gives to be found and verified; stored encrypted, never in clear."""

    family_name: str
    given_names: str
    birth_date: dt.date
    nir: str  # normalised, 15 characters
    email: str


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


def validate_submission(
    request_type: str,
    family_name: str,
    given_names: str,
    birth_date: str,
    nir: str,
    email: str,
    free_text: str = "",
    max_text: int = 2000,
) -> tuple[RequestType, Identity]:
    """Check every field; raise :class:`InvalidRequest` with one message per wrong field."""
    errors: dict[str, str] = {}
    kind = None
    try:
        kind = RequestType(_clean(request_type).lower())
    except ValueError:
        errors["type"] = "choose objection, erasure, access, rectification or restriction"
    family, given = _clean(family_name), _clean(given_names)
    for field, value in (("family_name", family), ("given_names", given)):
        if not value:
            errors[field] = "required"
        elif len(value) > 100 or not NAME.match(value):
            errors[field] = "letters, spaces, hyphens and apostrophes only, at most 100"
    born = None
    try:
        born = dt.date.fromisoformat(_clean(birth_date))
        if not dt.date(1900, 1, 1) <= born <= dt.date.today():
            errors["birth_date"] = "must be between 1900-01-01 and today"
    except ValueError:
        errors["birth_date"] = "a date as YYYY-MM-DD"
    normalised = None
    compact = re.sub(r"[\s.\-]", "", nir or "")
    if len(compact) != 15:
        errors["nir"] = "the 15 characters of the social security number, key included"
    else:
        try:
            normalised = normalise_nir(compact)
        except InvalidNationalIdentifier:
            errors["nir"] = "the control key does not match the number"
    if normalised and born and "birth_date" not in errors:
        year, month = normalised[1:3], int(normalised[3:5])
        if year != f"{born.year % 100:02d}" or (1 <= month <= 12 and month != born.month):
            errors["birth_date"] = "does not match the year and month of birth in the number"
    mail = _clean(email)
    if not EMAIL.match(mail):
        errors["email"] = "a valid e-mail address"
    if len(free_text or "") > max_text:
        errors["free_text"] = f"at most {max_text} characters"
    if errors:
        raise InvalidRequest(errors)
    return kind, Identity(family, given, born, normalised, mail.lower())


def add_months(day: dt.datetime, months: int) -> dt.datetime:
    """The same day ``months`` later, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return day.replace(
        year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1])
    )


def initial_deadline(received_at: dt.datetime) -> dt.datetime:
    return add_months(received_at, 1)


def extended_deadline(received_at: dt.datetime) -> dt.datetime:
    return add_months(received_at, 1 + EXTENSION_MONTHS)


def check_transition(current: Status, target: Status) -> None:
    if target not in TRANSITIONS[current]:
        raise TransitionRefused(f"a {current.value} request cannot become {target.value}")


def urgency(status: Status, deadline: dt.datetime, now: dt.datetime) -> str | None:
    """``overdue``, ``due_soon`` (within 7 days) or None, for open requests."""
    if status not in OPEN:
        return None
    if now > deadline:
        return "overdue"
    if deadline - now <= dt.timedelta(days=DUE_SOON_DAYS):
        return "due_soon"
    return None
