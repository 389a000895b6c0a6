"""The French national identifier (NIR, "numéro de sécurité sociale") and its control key.

Errors never quote the identifier: an exception message may reach a log or the Dagster UI.
"""

from __future__ import annotations

import re

NIR_BODY_LENGTH = 13
_SEPARATORS = re.compile(r"[\s.\-_/]")
_BODY = re.compile(
    r"^[1-478][0-9]{2}(0[1-9]|1[0-2]|[2-9][0-9])(0[1-9]|[1-8][0-9]|9[0-9]|2A|2B)[0-9]{6}$"
)

# INS (Identifiant National de Santé) OIDs: the NIR, and the NIA for people waiting for one.
INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_NIA_OID = "1.2.250.1.213.1.4.9"


class InvalidNationalIdentifier(ValueError):
    """A national identifier that is malformed or whose key does not match (value not quoted)."""


def _numeric_body(body: str) -> int:
    # Corsican departments 2A and 2B count as 19 and 18 in the key computation.
    return int(body.replace("2A", "19").replace("2B", "18"))


def nir_key(body: str) -> str:
    """The two-digit control key of a 13-character NIR body: 97 - (body mod 97)."""
    body = body.upper()
    if not _BODY.match(body):
        raise InvalidNationalIdentifier(
            "NIR body must be 13 characters: sex, year, month, department, commune, order"
        )
    return f"{97 - _numeric_body(body) % 97:02d}"


def normalise_nir(value: str) -> str:
    """Return the canonical 15-character NIR (body + key), checking the key when one is given.

    Spaces, dots and dashes are ignored and letters upper-cased, so "1 85 05 78 006 084 36"
    and "185057800608436" normalise alike.
    """
    compact = _SEPARATORS.sub("", value).upper()
    if len(compact) == NIR_BODY_LENGTH:
        return compact + nir_key(compact)
    if len(compact) != NIR_BODY_LENGTH + 2:
        raise InvalidNationalIdentifier(
            f"NIR must have 13 characters, or 15 with its key; got {len(compact)}"
        )
    body, key = compact[:NIR_BODY_LENGTH], compact[NIR_BODY_LENGTH:]
    if nir_key(body) != key:
        raise InvalidNationalIdentifier("NIR control key does not match its body")
    return compact


def is_valid_nir(value: str) -> bool:
    try:
        normalise_nir(value)
    except InvalidNationalIdentifier:
        return False
    return True
