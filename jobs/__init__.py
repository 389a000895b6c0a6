"""Jobs and schedules: landing ingestion now; workspace provisioning, GDPR, packages later."""
