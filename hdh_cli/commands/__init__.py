"""The click side of ``hdh``, one module per command group; the logic lives beside this package
(``hdh_cli.status``, ``hdh_cli.ingest``, ...). Each command imports what it needs when it runs,
so that ``hdh --help`` and the read-only commands do not load the code location."""
