"""Who answers for each domain's assets (Dagster owners: teams or e-mail addresses)."""

DATA_REFERENTS = "team:data-referents"
IMAGING = "team:imaging"
CLINICAL = "team:clinical-data"
CLAIMS = "team:claims"
PLATFORM = "team:platform"
DPO = "team:data-protection"
