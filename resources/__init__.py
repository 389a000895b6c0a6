"""Dagster resources: where the platform keeps things, and how it reads and writes them."""
