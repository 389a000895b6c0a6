"""Clinical records: FHIR R4 NDJSON, Bundles and declared-schema JSON."""
