"""The one pseudonymisation module every source uses, so a person has one pseudonym everywhere.

Pure functions over a secret key: no Dagster, no I/O. The Dagster resource that supplies the key
lives in ``resources/pseudonymisation.py``.
"""

from hdh_assets.pseudonymisation.identifiers import (
    InvalidNationalIdentifier,
    nir_key,
    normalise_nir,
)
from hdh_assets.pseudonymisation.subjects import Pseudonymiser

__all__ = ["InvalidNationalIdentifier", "Pseudonymiser", "nir_key", "normalise_nir"]
