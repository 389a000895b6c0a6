"""Approved Python and R packages for workspaces (package request flow)."""
