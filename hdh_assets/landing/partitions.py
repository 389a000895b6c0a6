"""One dynamic partition per landed batch, per source; the landing sensors add them."""

import dagster as dg

LANDING_SOURCES = ("dicom", "json", "claims")
# The asset group that owns each source's landed batches.
LANDING_GROUPS = {"dicom": "imaging", "json": "clinical", "claims": "claims"}

BATCH_PARTITIONS: dict[str, dg.DynamicPartitionsDefinition] = {
    source: dg.DynamicPartitionsDefinition(name=f"{source}_batches") for source in LANDING_SOURCES
}
