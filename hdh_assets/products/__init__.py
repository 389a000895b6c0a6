"""Reusable data products from dbt_like_sql/ SQL models."""
