"""The ``hdh`` command: the platform from a terminal, with ``--json`` for scripts."""
