"""The published shape of claims events; strict, so no raw identifier column can slip in."""

import pandera.polars as pa
import polars as pl

from hdh_assets.pseudonymisation.subjects import PSEUDONYM_HEX_LENGTH

CARE_TYPES = ("consultation", "pharmacy", "biology", "imaging", "hospital_stay", "nursing")


class ClaimsEvents(pa.DataFrameModel):
    source_event_id: pl.Int64 = pa.Field(
        nullable=False, description="the provider's event number, unique within its batch"
    )
    subject_pseudonym: pl.String = pa.Field(
        str_matches=rf"^[0-9a-f]{{{PSEUDONYM_HEX_LENGTH}}}$",
        description="keyed pseudonym of the person (the same in imaging and clinical data)",
    )
    event_date: pl.Date = pa.Field(
        nullable=False, description="date of care, shifted by the subject's date offset"
    )
    month: pl.String = pa.Field(
        str_matches=r"^\d{4}-\d{2}-01$",
        description="first day of the shifted event month: the partition key",
    )
    care_type: pl.String = pa.Field(isin=CARE_TYPES, description="kind of care reimbursed")
    code: pl.String = pa.Field(
        nullable=False,
        description="act, drug or stay code (NGAP, CIP13, NABM, CCAM or GHM by care type)",
    )
    amount_eur: pl.Float64 = pa.Field(ge=0, description="amount reimbursed, in euros")
    batch: pl.String = pa.Field(description="landed claims batch the event came from")

    class Config:
        strict = True
