"""Where a referent opens the images: the OHIF viewer and the DICOMweb service it reads.

``HDH_VIEWER_URL`` (default ``http://127.0.0.1:3003``) is the viewer's address and
``HDH_DICOMWEB_URL`` (default ``http://127.0.0.1:3002/dicom-web``) the service's root, as a
browser reaches them. The imaging assets' metadata link each study to the viewer with them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

VIEWER_URL_ENV = "HDH_VIEWER_URL"
DEFAULT_VIEWER_URL = "http://127.0.0.1:3003"
DICOMWEB_URL_ENV = "HDH_DICOMWEB_URL"
DEFAULT_DICOMWEB_URL = "http://127.0.0.1:3002/dicom-web"
STUDIES_LINKED = 20


def viewer_url() -> str:
    """The OHIF viewer's address, without a trailing slash."""
    return (os.environ.get(VIEWER_URL_ENV) or DEFAULT_VIEWER_URL).rstrip("/")


def dicomweb_url() -> str:
    """The DICOMweb service's root (``.../dicom-web``), without a trailing slash."""
    return (os.environ.get(DICOMWEB_URL_ENV) or DEFAULT_DICOMWEB_URL).rstrip("/")


def study_link(study_uid: str, viewer: str | None = None) -> str:
    """The viewer's page for one (pseudonymised) study."""
    return f"{viewer or viewer_url()}/viewer?StudyInstanceUIDs={study_uid}"


def markdown_table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def studies_markdown(studies: list[dict], total: int | None = None) -> str:
    """A table of studies (``study_instance_uid``, ``study_date``, ``modalities``, ``series``,
    ``instances``), each linked to the viewer; ``total`` says how many there are in all."""
    if not studies:
        return "(no study)"
    viewer = viewer_url()
    rows = [
        [
            f"[{s['study_instance_uid']}]({study_link(s['study_instance_uid'], viewer)})",
            str(s.get("study_date") or ""),
            ", ".join(m for m in s.get("modalities") or [] if m),
            str(s.get("series", "")),
            str(s.get("instances", "")),
        ]
        for s in studies
    ]
    header = ["study (opens the viewer)", "date", "modalities", "series", "instances"]
    table = markdown_table(header, rows)
    if total is not None and total > len(studies):
        table += f"\n\nThe first {len(studies)} of {total} studies."
    return table
