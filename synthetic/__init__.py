"""Deterministic synthetic sample: one population of French-style identities seen by every source.

Everything derives from a seed, so the same seed gives byte-identical files. The identities are
fake; they exist so that tests can prove no identifier leaks into the lake.
"""
