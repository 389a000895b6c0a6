"""Software-defined assets of the health-data hub, one sub-package per domain.

``definitions.py`` assembles them into the one code location that ``dagster``, ``dg`` and the
``hdh`` command load.
"""
