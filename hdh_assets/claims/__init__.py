"""Claims: SNDS-like care events, monthly partitioned (Spark for large volumes)."""
