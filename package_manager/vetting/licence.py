"""Declared licences normalised to SPDX expressions and judged against the policy.

Packages declare licences in many dialects: PEP 639 ``License-Expression``, a free-text ``License``
field (sometimes the whole licence text), trove classifiers, and R's DESCRIPTION forms such as
``GPL (>= 2)`` or ``MIT + file LICENSE``. Everything is brought to one SPDX expression, validated by
``license-expression``; what cannot be brought there goes to a referent with the raw text.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import Parser
from functools import cache
from pathlib import Path

from license_expression import ExpressionError, Licensing, get_spdx_licensing

from package_manager.model import CheckResult
from package_manager.vetting.policy import LicenceVerdict, Policy

CHECK = "licence"

# Free-text names seen in metadata and DESCRIPTION files, folded to lower case without punctuation.
_ALIASES: dict[str, str] = {
    "mit": "MIT",
    "mit license": "MIT",
    "mit licence": "MIT",
    "expat": "MIT",
    "the mit license": "MIT",
    "apache": "Apache-2.0",
    "apache 2": "Apache-2.0",
    "apache 20": "Apache-2.0",
    "apache license": "Apache-2.0",
    "apache license 20": "Apache-2.0",
    "apache license version 20": "Apache-2.0",
    "apache software license": "Apache-2.0",
    "apache software license 20": "Apache-2.0",
    "apache 2 license": "Apache-2.0",
    "asl 2": "Apache-2.0",
    "bsd": "BSD-3-Clause",
    "bsd license": "BSD-3-Clause",
    "new bsd": "BSD-3-Clause",
    "new bsd license": "BSD-3-Clause",
    "modified bsd": "BSD-3-Clause",
    "bsd 3 clause": "BSD-3-Clause",
    "bsd 3clause": "BSD-3-Clause",
    "bsd 3 clause license": "BSD-3-Clause",
    "3 clause bsd": "BSD-3-Clause",
    "3 clause bsd license": "BSD-3-Clause",
    "bsd 3": "BSD-3-Clause",
    "bsd 2 clause": "BSD-2-Clause",
    "bsd 2 clause license": "BSD-2-Clause",
    "simplified bsd": "BSD-2-Clause",
    "freebsd": "BSD-2-Clause",
    "isc": "ISC",
    "isc license": "ISC",
    "isc license iscl": "ISC",
    "iscl": "ISC",
    "psf": "PSF-2.0",
    "psfl": "PSF-2.0",
    "psf license": "PSF-2.0",
    "python software foundation license": "PSF-2.0",
    "zpl 21": "ZPL-2.1",
    "zope public license": "ZPL-2.1",
    "zlib": "Zlib",
    "zlib libpng license": "Zlib",
    "mozilla public license 20": "MPL-2.0",
    "mozilla public license 20 mpl 20": "MPL-2.0",
    "mpl 20": "MPL-2.0",
    "mpl2": "MPL-2.0",
    "the unlicense": "Unlicense",
    "unlicense": "Unlicense",
    "the unlicense unlicense": "Unlicense",
    "cc0": "CC0-1.0",
    "cc0 10": "CC0-1.0",
    "cc0 10 universal cc0 10 public domain dedication": "CC0-1.0",
    "public domain": "LicenseRef-Public-Domain",
    "hpnd": "HPND",
    "historical permission notice and disclaimer hpnd": "HPND",
    "boost software license 10 bsl 10": "BSL-1.0",
    "artistic 20": "Artistic-2.0",
    "artistic license 20": "Artistic-2.0",
    "eclipse public license 20 epl 20": "EPL-2.0",
    "eclipse public license 10 epl 10": "EPL-1.0",
    "gpl": "GPL-2.0-or-later",  # R's "GPL": any version
    "gpl 2": "GPL-2.0-only",
    "gpl 3": "GPL-3.0-only",
    "gplv2": "GPL-2.0-only",
    "gplv3": "GPL-3.0-only",
    "gplv2+": "GPL-2.0-or-later",
    "gplv3+": "GPL-3.0-or-later",
    "gnu general public license gpl": "GPL-2.0-or-later",
    "gnu general public license v2 gplv2": "GPL-2.0-only",
    "gnu general public license v2 or later gplv2+": "GPL-2.0-or-later",
    "gnu general public license v3 gplv3": "GPL-3.0-only",
    "gnu general public license v3 or later gplv3+": "GPL-3.0-or-later",
    "lgpl": "LGPL-2.1-or-later",
    "lgpl 2": "LGPL-2.0-only",
    "lgpl 21": "LGPL-2.1-only",
    "lgpl 3": "LGPL-3.0-only",
    "lgplv3": "LGPL-3.0-only",
    "lgplv3+": "LGPL-3.0-or-later",
    "gnu library or lesser general public license lgpl": "LGPL-2.1-or-later",
    "gnu lesser general public license v2 lgplv2": "LGPL-2.0-only",
    "gnu lesser general public license v2 or later lgplv2+": "LGPL-2.0-or-later",
    "gnu lesser general public license v3 lgplv3": "LGPL-3.0-only",
    "gnu lesser general public license v3 or later lgplv3+": "LGPL-3.0-or-later",
    "agpl 3": "AGPL-3.0-only",
    "agplv3": "AGPL-3.0-only",
    "gnu affero general public license v3": "AGPL-3.0-only",
    "gnu affero general public license v3 or later agplv3+": "AGPL-3.0-or-later",
    "ccby 40": "CC-BY-4.0",
    "cc by 40": "CC-BY-4.0",
    "ccbysa 40": "CC-BY-SA-4.0",
    "cc by sa 40": "CC-BY-SA-4.0",
    "ccbync 40": "CC-BY-NC-4.0",
    "cc by nc 40": "CC-BY-NC-4.0",
    "ccbyncsa 40": "CC-BY-NC-SA-4.0",
    "cc by nc sa 40": "CC-BY-NC-SA-4.0",
    "proprietary": "LicenseRef-Proprietary",
    "proprietary license": "LicenseRef-Proprietary",
    "other proprietary license": "LicenseRef-Proprietary",
    "commercial": "LicenseRef-Proprietary",
    "free for noncommercial use": "LicenseRef-NonCommercial",
    "non commercial": "LicenseRef-NonCommercial",
    "noncommercial": "LicenseRef-NonCommercial",
}

# R's versioned forms: "GPL (>= 2)", "LGPL (>= 2.1)", "Apache License (== 2.0)", "GPL-2", "AGPL-3".
_R_FAMILIES = {
    "gpl": "GPL",
    "lgpl": "LGPL",
    "agpl": "AGPL",
    "apache license": "Apache",
    "apache": "Apache",
}
_R_VERSIONED = re.compile(
    r"^(?P<family>GPL|LGPL|AGPL|Apache License|Apache)\s*\(\s*(?P<op>>=|==|>)?\s*(?P<ver>[\d.]+)\s*\)$",
    re.IGNORECASE,
)
_R_VERSIONED_INLINE = re.compile(
    r"\b(?:GPL|LGPL|AGPL|Apache License|Apache)\s*\(\s*(?:>=|==|>)?\s*[\d.]+\s*\)", re.IGNORECASE
)
_R_DASHED = re.compile(r"^(?P<family>GPL|LGPL|AGPL)-(?P<ver>[\d.]+)$", re.IGNORECASE)
_R_FILE = re.compile(r"\s*\+\s*file\s+LICEN[CS]E\s*$", re.IGNORECASE)
_R_TEMPLATES = ("MIT", "BSD-2-Clause", "BSD-3-Clause")
_R_EXTRA_TERMS = "LicenseRef-R-file-LICENSE"
_OPERATORS = re.compile(r"(\s+(?:OR|AND|WITH)\s+|\s*\|\s*|[()])", re.IGNORECASE)

# Whole licence texts pasted into the License field: recognised by their characteristic sentences.
_TEXT_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Apache-2.0", ("apache license", "version 2.0")),
    ("MIT", ("permission is hereby granted, free of charge",)),
    ("BSD-3-Clause", ("redistribution and use in source and binary forms", "neither the name")),
    ("BSD-2-Clause", ("redistribution and use in source and binary forms",)),
    ("PSF-2.0", ("python software foundation", "license agreement")),
)

_CLASSIFIER_PREFIX = "License ::"


@dataclass(frozen=True)
class NormalisedLicence:
    """The SPDX expression (None if undeterminable), the raw text, and how it was read."""

    expression: str | None
    raw: str
    notes: tuple[str, ...] = ()


@cache
def licensing() -> Licensing:
    return get_spdx_licensing()


def _fold_words(text: str) -> str:
    """Fold punctuation to spaces (``BSD_3_clause`` -> ``bsd 3 clause``, ``2.0`` -> ``20``)."""
    text = text.strip().lower().replace("licence", "license").replace(".", "")
    text = re.sub(r"[^\w+]+|_", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def _spdx_key(leaf: str) -> str | None:
    """One licence name to its SPDX key, or None when it is neither SPDX nor a known alias."""
    leaf = leaf.strip()
    if not leaf:
        return None
    if leaf.startswith("LicenseRef-"):
        return leaf
    if re.fullmatch(r"file\s+LICEN[CS]E", leaf, re.IGNORECASE):
        return _R_EXTRA_TERMS  # R: "... | file LICENSE", an alternative licence in a file
    versioned = _R_VERSIONED.match(leaf) or _R_DASHED.match(leaf)
    if versioned:
        family = _R_FAMILIES[versioned.group("family").lower()]
        version = versioned.group("ver")
        op = versioned.groupdict().get("op")
        if family == "Apache":
            return "Apache-2.0" if version.startswith("2") else None
        version = version if "." in version else f"{version}.0"
        suffix = "-or-later" if op in (">=", ">") else "-only"
        candidate = f"{family}-{version}{suffix}"
        return candidate if _known(candidate) else None
    if _known(leaf):
        return licensing().parse(leaf).render()
    return _ALIASES.get(_fold_words(leaf))


def _known(key: str) -> bool:
    try:
        parsed = licensing().parse(key, validate=False)
    except ExpressionError:
        return False
    return (
        parsed is not None
        and not licensing().unknown_license_keys(parsed)
        and " " not in key.strip()
    )


def _from_text(text: str) -> str | None:
    """A whole licence text: recognised only if it is short and one family matches."""
    lines = text.splitlines()
    if len(lines) > 200:
        return None
    head = _spdx_key(lines[0]) if lines else None
    if head:
        return head
    lowered = " ".join(text.lower().split())
    for key, markers in _TEXT_MARKERS:
        if all(m in lowered for m in markers):
            return key
    return None


def _from_classifiers(lines: list[str]) -> tuple[str | None, list[str]]:
    keys, notes = [], []
    for line in lines:
        parts = [p.strip() for p in line.split("::")]
        name = parts[-1]
        if name in ("OSI Approved", "DFSG approved", "Freely Distributable"):
            continue
        key = _spdx_key(name)
        if key is None:
            return None, [f"classifier not mapped to SPDX: {line}"]
        keys.append(key)
    if not keys:
        return None, ["no licence classifier names a licence"]
    unique = list(dict.fromkeys(keys))
    if len(unique) > 1:
        notes.append("several licence classifiers: read as alternatives (OR)")
    if "BSD-3-Clause" in unique and any("BSD License" in line for line in lines):
        notes.append("classifier 'BSD License' does not say which BSD: BSD-3-Clause assumed")
    return " OR ".join(unique), notes


def _from_expression(text: str) -> tuple[str | None, list[str]]:
    """An SPDX-like or R expression: operators kept, each leaf mapped to an SPDX key."""
    notes: list[str] = []
    text = text.strip()
    extra_terms = bool(_R_FILE.search(text))
    if extra_terms:
        text = _R_FILE.sub("", text)
        notes.append("R '+ file LICENSE': the base licence plus a file of additional terms")
    if re.fullmatch(r"file\s+LICEN[CS]E", text, re.IGNORECASE):
        return None, ["the licence is only in a file (DESCRIPTION 'file LICENSE')"]
    text = _R_VERSIONED_INLINE.sub(lambda m: _spdx_key(m.group(0)) or m.group(0), text)
    pieces = _OPERATORS.split(text)
    out: list[str] = []
    for piece in pieces:
        token = piece.strip()
        if not token:
            continue
        upper = token.upper()
        if token == "|" or upper == "OR":
            out.append("OR")
        elif upper in ("AND", "WITH") or token in "()":
            out.append(upper)
        else:
            key = _spdx_key(token)
            if key is None and out and out[-1] == "WITH":
                key = token  # an exception id: validated below
            if key is None:
                return None, [*notes, f"not an SPDX licence or known alias: {token!r}"]
            out.append(key)
    candidate = " ".join(out).replace("( ", "(").replace(" )", ")")
    try:
        parsed = licensing().parse(candidate, validate=False)
    except ExpressionError as exc:
        return None, [*notes, f"invalid expression: {exc}"]
    if parsed is None:
        return None, notes
    if extra_terms and parsed.render() not in _R_TEMPLATES:
        # CRAN's MIT and BSD templates only fill in the holder; elsewhere the file may add terms.
        parsed = licensing().parse(f"({parsed.render()}) AND {_R_EXTRA_TERMS}")
        notes.append(f"{_R_EXTRA_TERMS}: additional terms in the package's LICENSE file")
    unknown = [
        k for k in licensing().unknown_license_keys(parsed) if not k.startswith("LicenseRef-")
    ]
    if unknown:
        return None, [*notes, f"unknown SPDX keys: {', '.join(unknown)}"]
    return parsed.render(), notes


def normalise_licence(raw: str | None) -> NormalisedLicence:
    """Any declared form (expression, free text, whole text, classifiers, R) to SPDX, or None."""
    if raw is None or not raw.strip() or raw.strip().upper() in ("UNKNOWN", "NONE", "LICENSE"):
        return NormalisedLicence(None, raw or "", ("no licence declared",))
    text = raw.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and all(line.startswith(_CLASSIFIER_PREFIX) for line in lines):
        expression, notes = _from_classifiers(lines)
        return NormalisedLicence(expression, raw, tuple(notes))
    if len(lines) > 1:
        key = _from_text(text)
        note = ("recognised from the licence text",) if key else ("a licence text, not recognised",)
        return NormalisedLicence(key, raw, note)
    expression, notes = _from_expression(text)
    return NormalisedLicence(expression, raw, tuple(notes))


def declared_licence(metadata: Message) -> NormalisedLicence:
    """From core metadata: License-Expression, else a determinable License field, else classifiers."""
    expression = metadata.get("License-Expression")
    if expression and expression.strip():
        return normalise_licence(expression)
    field = metadata.get("License")
    tried: list[str] = []
    if field and field.strip():
        result = normalise_licence(field)
        if result.expression:
            return result
        tried.append(f"License field: {' '.join(result.notes)}")
    classifiers = [
        c for c in metadata.get_all("Classifier") or [] if c.startswith(_CLASSIFIER_PREFIX)
    ]
    if classifiers:
        result = normalise_licence("\n".join(classifiers))
        return NormalisedLicence(result.expression, result.raw, (*tried, *result.notes))
    raw = (field or "").strip()
    return NormalisedLicence(
        None, raw, (*tried, "no licence declared") if not tried else tuple(tried)
    )


def metadata_from_archive(archive: Path) -> Message | None:
    """The METADATA / PKG-INFO / R DESCRIPTION of a wheel, sdist or R source archive, unexecuted."""
    name = archive.name
    try:
        if name.endswith(".whl") or name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if (
                        member.endswith((".dist-info/METADATA", "/PKG-INFO"))
                        and member.count("/") <= 1
                    ):
                        return Parser().parsestr(zf.read(member).decode("utf-8", "replace"))
            return None
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] in ("PKG-INFO", "DESCRIPTION") and member.isfile():
                    data = tf.extractfile(member)
                    if data is not None:
                        text = data.read().decode("utf-8", "replace")
                        return Parser().parsestr(
                            _dcf_to_rfc822(text) if parts[1] == "DESCRIPTION" else text
                        )
    except (OSError, zipfile.BadZipFile, tarfile.TarError):
        return None
    return None


def _dcf_to_rfc822(text: str) -> str:
    """R's DCF fields, each unfolded onto one line (a licence may continue on the next line)."""
    fields: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t" and fields:
            fields[-1] += " " + line.strip()
        else:
            fields.append(line.rstrip())
    return "\n".join(fields) + "\n\n"


_RANK: dict[LicenceVerdict, int] = {"passed": 0, "needs_review": 1, "refused": 2}


def evaluate_expression(expression: str, policy: Policy) -> tuple[LicenceVerdict, dict[str, str]]:
    """OR passes if any alternative does; AND needs every part; returns per-licence verdicts."""
    parsed = licensing().parse(expression)
    verdicts: dict[str, str] = {}

    def walk(node: object) -> LicenceVerdict:
        args = getattr(node, "args", None)
        if args and isinstance(node, licensing().OR):
            return min((walk(a) for a in args), key=_RANK.__getitem__)
        if args and isinstance(node, licensing().AND):
            return max((walk(a) for a in args), key=_RANK.__getitem__)
        text = str(node)
        base = getattr(getattr(node, "license_symbol", None), "key", None)
        # "A WITH B" is judged as written if the policy names it, else as its base licence A.
        judged = base if base and not policy.licences.mentions(text) else text
        verdicts[text] = verdict = policy.licences.verdict(judged)
        return verdict

    return walk(parsed), verdicts


def check_licence(declared: str | None, policy: Policy, archive: Path | None = None) -> CheckResult:
    """The licence check: the declared text, else the archive's own metadata, against the policy."""
    normalised = normalise_licence(declared)
    if normalised.expression is None and archive is not None:
        metadata = metadata_from_archive(archive)
        if metadata is not None:
            from_archive = declared_licence(metadata)
            if from_archive.expression or not declared:
                normalised = NormalisedLicence(
                    from_archive.expression,
                    from_archive.raw or (declared or ""),
                    (*normalised.notes, "read from the archive's metadata", *from_archive.notes),
                )
    evidence = {
        "declared": normalised.raw,
        "notes": list(normalised.notes),
        "policy": policy.source,
    }
    if normalised.expression is None:
        return CheckResult(
            CHECK,
            "needs_review",
            ("licence could not be determined from the declared text",),
            evidence | {"spdx": None},
        )
    verdict, per_licence = evaluate_expression(normalised.expression, policy)
    evidence |= {"spdx": normalised.expression, "licences": per_licence}
    reasons = {
        "passed": (f"{normalised.expression} is allowed by the policy",),
        "needs_review": (f"{normalised.expression} needs a referent's review under the policy",),
        "refused": (f"{normalised.expression} is refused by the policy",),
    }[verdict]
    return CheckResult(CHECK, verdict, reasons, evidence)
