"""What every command shares: where messages and tables go, JSON output, progress, HDH_HOME.

Messages go to stderr and tables and JSON to stdout, so that ``--json`` output pipes cleanly.
Only click and rich's console load here: a command pays for the rest when it runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from resources.home import HdhHome

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

console = Console(stderr=True)
# Tables go to stdout; a pipe or CI log still gets them whole rather than cut at 80 columns.
table_console = Console(width=None if sys.stdout.isatty() else 160)

ProgressCallback = Callable[[str, int, "int | None"], None]


def platform_home() -> HdhHome:
    """HDH_HOME (default ./.hdh), without creating anything: read-only commands leave no trace."""
    return HdhHome.from_env()


def print_json(payload: dict[str, Any]) -> None:
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


@contextmanager
def progress_bar(enabled: bool) -> Iterator[ProgressCallback]:
    """A rich progress bar driven by the generator's (task, advance, total) callbacks."""
    if not enabled:
        yield lambda task, advance, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(task: str, advance: int, total: int | None) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            bar.advance(tasks[task], advance)

        yield update


def spinner(message: str, enabled: bool) -> AbstractContextManager[object]:
    """A spinner on stderr while a long step runs; nothing with ``--json``."""
    return console.status(message, spinner="dots") if enabled else nullcontext()
