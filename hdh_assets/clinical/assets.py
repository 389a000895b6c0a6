"""Clinical assets."""

from hdh_assets import owners
from hdh_assets.landing.assets import landing_inventory_asset

landed_json_files = landing_inventory_asset(
    source="json",
    group="clinical",
    owners=[owners.CLINICAL, owners.PLATFORM],
    kinds={"fhir", "json"},
    expected_formats={"ndjson", "json", "gzip"},
    description=(
        "Inventory of one landed JSON batch (landing/json/<batch>/): FHIR Bulk Data NDJSON, FHIR "
        "Bundles and declared-schema JSON, one row per file with content hash, format and size. "
        "The 'landed' side of clinical reconciliation."
    ),
)

assets = [landed_json_files]
