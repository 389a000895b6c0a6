"""Providers of clinical JSON: which identifier systems mean the national identifier, in order.

With no provider configured, the default profile applies: the first Patient identifier of a known
national system (INS-NIR), else a provider-scoped pseudonym of the Patient resource id. An ordinary
FHIR export needs no configuration.

``HDH_PROVIDERS`` names a YAML file::

    providers:
      chu-bordeaux:
        national_identifier_systems: ["urn:oid:1.2.250.1.213.1.4.8"]
        birth_date: year        # year | month | none
        records:                # JSON that is not FHIR, with a declared schema
          - name: registry_visits
            files: "visits*.ndjson"
            schema: schemas/visits.schema.json    # relative to this file
            subject_field: patient.nir            # dotted path of the identifier
            subject_is_national: true             # NIR; false: provider-scoped pseudonym
            date_fields: [visit_date]
            remove_fields: [patient.name, comment]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from hdh_assets.clinical.declared import DeclaredRecords, load_declared
from hdh_assets.pseudonymisation.identifiers import INS_NIR_OID

NATIONAL_SYSTEMS = (
    f"urn:oid:{INS_NIR_OID}",
    INS_NIR_OID,
    "https://hl7.fr/ig/fhir/core/NamingSystem/INS-NIR",
)
BIRTH_DATE_GENERALISATION = ("year", "month", "none")
DEFAULT_PROVIDER = "default"


@dataclass(frozen=True)
class Provider:
    name: str = DEFAULT_PROVIDER
    national_identifier_systems: tuple[str, ...] = NATIONAL_SYSTEMS
    birth_date: str = "year"
    records: tuple[DeclaredRecords, ...] = ()  # non-FHIR JSON with a declared schema

    def declared_for(self, file_name: str) -> DeclaredRecords | None:
        return next((spec for spec in self.records if spec.matches(file_name)), None)

    def __post_init__(self) -> None:
        if self.birth_date not in BIRTH_DATE_GENERALISATION:
            raise ValueError(
                f"provider '{self.name}': birth_date must be one of {BIRTH_DATE_GENERALISATION}"
            )


class ProviderConfigError(ValueError):
    pass


def load_providers(path: Path | None) -> dict[str, Provider]:
    """Providers from the YAML file (missing file or none configured: just the default)."""
    providers = {DEFAULT_PROVIDER: Provider()}
    if path is None:
        return providers
    if not path.exists():
        raise ProviderConfigError(f"{path}: provider file not found")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ProviderConfigError(f"{path}: not valid YAML ({error.__class__.__name__})") from None
    for name, entry in (document.get("providers") or {}).items():
        entry = entry or {}
        unknown = set(entry) - {"national_identifier_systems", "birth_date", "records"}
        if unknown:
            raise ProviderConfigError(
                f"{path}: provider '{name}': unknown field(s) {sorted(unknown)}"
            )
        systems = entry.get("national_identifier_systems", list(NATIONAL_SYSTEMS))
        if not isinstance(systems, list) or not all(isinstance(s, str) for s in systems):
            raise ProviderConfigError(
                f"{path}: provider '{name}': national_identifier_systems must be a list of strings"
            )
        try:
            records = tuple(load_declared(r, path.parent, name) for r in entry.get("records") or [])
            providers[name] = Provider(
                name, tuple(systems), entry.get("birth_date", "year"), records
            )
        except ValueError as error:
            raise ProviderConfigError(f"{path}: {error}") from None
    return providers


def configured_providers() -> dict[str, Provider]:
    value = os.environ.get("HDH_PROVIDERS")
    return load_providers(Path(value) if value else None)


def provider_named(name: str | None) -> Provider:
    providers = configured_providers()
    name = name or DEFAULT_PROVIDER
    if name not in providers:
        if name != DEFAULT_PROVIDER and not os.environ.get("HDH_PROVIDERS"):
            return Provider(name)  # an unconfigured provider gets the default rules, its own scope
        raise ProviderConfigError(
            f"provider '{name}' is not configured (known: {sorted(providers)})"
        )
    return providers[name]
