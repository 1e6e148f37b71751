"""Progress bars and end-of-stage summaries (rich), all on stderr so stdout stays clean for --json."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)


def quiet() -> bool:
    return os.environ.get("SCLORA_QUIET") == "1"


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress]:
    """A rich Progress with a rate column; disabled (but still usable) when not wanted."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, disable=not enabled or quiet(), transient=False) as progress:
        yield progress


def tokens_per_second(tokens: int, started: float) -> str:
    """The rate column of a progress bar: tokens since `started` (a time.time()) per second."""
    return f"{tokens / max(time.time() - started, 1e-9):,.0f} tok/s"


def summary_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, value)
    return table


def show(renderable) -> None:
    if not quiet():
        console.print(renderable)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True, highlight=False)
