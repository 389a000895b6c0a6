"""GDPR rights: objection and erasure registry, proof of removal."""
