"""The one place where exceptions become exit codes and one-line messages."""

from __future__ import annotations

import functools
import os
import sys

from rich.console import Console
from rich.markup import escape

from sclora_tools.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, ScloraError

stderr = Console(stderr=True, soft_wrap=True)


def debug() -> bool:
    return os.environ.get("SCLORA_DEBUG") == "1"


def handled(command):
    """Run a command; a ScloraError prints its sentence and exits with its code, anything else is
    reported as an internal error. SCLORA_DEBUG=1 shows the traceback instead."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ScloraError as exc:
            if debug():
                raise
            stderr.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            stderr.print("[bold red]interrupted[/bold red]; no artefact was written.")
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for a clean message
            if debug():
                raise
            stderr.print(
                f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))} (set SCLORA_DEBUG=1 for the traceback "
                "and report it).",
                highlight=False,
            )
            sys.exit(EXIT_INTERNAL)

    return wrapper
