"""What the portal checks on a submission before the validation rules see it.

Browsers may send a name with its accents decomposed (``e`` + combining acute): that is still
a valid French name, so every field is normalised to Unicode NFC first. Control and format
characters (categories Cc and Cf: NUL, zero-width joiners, bidirectional overrides) are never
part of a name, an e-mail address or a number, and can hide text from the DPO: they are
refused in every field; the free text alone keeps its line breaks. A date of birth is a
calendar date in the ISO form the form asks for (``YYYY-MM-DD``): no week or ordinal dates, no
compact form, no 30 February. Messages name the field, never its value.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

from portal.security import has_control_characters

CONTROL_MESSAGE = "no control or invisible formatting characters"
DATE_MESSAGE = "a date as YYYY-MM-DD"  # the validation rules' own message, translated already
ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
LINE_BREAKS = "\r\n"
MULTILINE_FIELDS = ("free_text",)


def screen(fields: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The fields normalised to NFC, and the errors found (field -> message)."""
    normalised = {k: unicodedata.normalize("NFC", v) for k, v in fields.items()}
    errors: dict[str, str] = {}
    for name, value in normalised.items():
        allowed = LINE_BREAKS if name in MULTILINE_FIELDS else ""
        if has_control_characters(value, allowed):
            errors[name] = CONTROL_MESSAGE
    born = normalised.get("birth_date", "").strip()
    if "birth_date" not in errors and born and not calendar_date(born):
        errors["birth_date"] = DATE_MESSAGE
    return normalised, errors


def calendar_date(text: str) -> bool:
    """True for ``YYYY-MM-DD`` naming a day that exists."""
    if not ISO_DATE.match(text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True
