"""Configuration of DICOM ingestion: profile options, subject rule, parallelism."""

from __future__ import annotations

import os

import dagster as dg

from hdh_assets.pseudonymisation.annex_e import Option
from hdh_assets.pseudonymisation.dicom import NATIONAL_ISSUERS, DicomProfile, SubjectRule

OPTION_NAMES = {
    "dates": Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
    "patient": Option.RETAIN_PATIENT_CHARACTERISTICS,
    "device": Option.RETAIN_DEVICE_IDENTITY,
}
DEFAULT_OPTIONS = "dates,patient"


def parse_options(text: str) -> tuple[Option, ...]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTION_NAMES]
    if unknown:
        raise ValueError(
            f"HDH_DICOM_OPTIONS: unknown option(s) {unknown}; choose from {sorted(OPTION_NAMES)}"
        )
    return tuple(OPTION_NAMES[n] for n in names)


class DicomIngestionResource(dg.ConfigurableResource):
    """PS3.15 options (``HDH_DICOM_OPTIONS``: dates, patient, device), who the provider is, and
    which issuers of Patient ID mean the national identifier."""

    options: str = DEFAULT_OPTIONS
    provider: str = "default"
    national_issuers: list[str] = list(NATIONAL_ISSUERS)
    workers: int = 0

    @classmethod
    def from_env(cls) -> DicomIngestionResource:
        return cls(
            options=os.environ.get("HDH_DICOM_OPTIONS", DEFAULT_OPTIONS),
            provider=os.environ.get("HDH_DICOM_PROVIDER", "default"),
            workers=int(os.environ.get("HDH_DICOM_WORKERS", "0")),
        )

    def profile(self) -> DicomProfile:
        return DicomProfile(
            options=parse_options(self.options),
            subject_rule=SubjectRule(self.provider, tuple(self.national_issuers)),
        )
