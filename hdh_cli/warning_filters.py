"""Warnings that tell the user of ``hdh`` nothing, silenced one by one.

Each is matched by category, the start of its message and the module that issues it, so that any
other warning of the same libraries still shows. Dagster's beta and preview notices are about
APIs the platform chose knowingly; they are silenced by their own categories.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass

PYTHONWARNINGS = "PYTHONWARNINGS"


@dataclass(frozen=True)
class KnownWarning:
    category: type[Warning]
    message_start: str  # no comma or colon: it also travels in PYTHONWARNINGS
    module: str
    why: str

    def as_python_option(self) -> str:
        """The ``-W``/PYTHONWARNINGS form, for the processes a command starts (spawned workers)."""
        return f"ignore:{self.message_start}:{self.category.__name__}:{self.module}"


KNOWN_WARNINGS = (
    KnownWarning(
        FutureWarning,
        "PySpark does not yet fully support pandas",
        "pyspark.pandas",
        "pandera imports pyspark.pandas; the platform uses Spark SQL, never the pandas-on-Spark API",
    ),
    KnownWarning(
        UserWarning,
        "Invalid value for VR",
        "pydicom.valuerep",
        "DICOM ingestion re-encodes or quarantines such files and reports each one",
    ),
    KnownWarning(
        UserWarning,
        "VR lookup failed for the raw element",
        "pydicom.hooks",
        "an unknown tag read as UN: ingestion keeps or drops it by the de-identification profile",
    ),
    KnownWarning(
        UserWarning,
        "Expected explicit VR",
        "pydicom.filereader",
        "pydicom falls back to implicit VR; ingestion then validates what it read",
    ),
)


class _KnownPydicomRecords(logging.Filter):
    """pydicom logs each of its warnings too (``warn_and_log``); drop the known ones only."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(
            message.startswith(known.message_start)
            for known in KNOWN_WARNINGS
            if known.module.startswith("pydicom.")
        )


_pydicom_filter = _KnownPydicomRecords()


def silence_known_warnings() -> None:
    """Filter the known warnings in this process and in the Python processes it starts."""
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    for known in KNOWN_WARNINGS:
        warnings.filterwarnings(
            "ignore",
            message=re.escape(known.message_start),
            category=known.category,
            module=re.escape(known.module) + r"\Z",
        )
    pydicom_logger = logging.getLogger("pydicom")
    if _pydicom_filter not in pydicom_logger.filters:
        pydicom_logger.addFilter(_pydicom_filter)
    options = [o for o in os.environ.get(PYTHONWARNINGS, "").split(",") if o]
    missing = [k.as_python_option() for k in KNOWN_WARNINGS if k.as_python_option() not in options]
    if missing:
        os.environ[PYTHONWARNINGS] = ",".join([*options, *missing])
