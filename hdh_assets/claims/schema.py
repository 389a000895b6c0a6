"""The published shape of claims events; strict, so no raw identifier column can slip in."""

import pandera.polars as pa
import polars as pl

from hdh_assets.pseudonymisation.subjects import PSEUDONYM_HEX_LENGTH

CARE_TYPES = ("consultation", "pharmacy", "biology", "imaging", "hospital_stay", "nursing")


class ClaimsEvents(pa.DataFrameModel):
    source_event_id: pl.Int64 = pa.Field(nullable=False)
    subject_pseudonym: pl.String = pa.Field(str_matches=rf"^[0-9a-f]{{{PSEUDONYM_HEX_LENGTH}}}$")
    event_date: pl.Date = pa.Field(nullable=False)
    month: pl.String = pa.Field(str_matches=r"^\d{4}-\d{2}-01$")
    care_type: pl.String = pa.Field(isin=CARE_TYPES)
    code: pl.String = pa.Field(nullable=False)
    amount_eur: pl.Float64 = pa.Field(ge=0)
    batch: pl.String

    class Config:
        strict = True
