"""The one place where exceptions become exit codes and one-line messages."""

from __future__ import annotations

import functools
import os
import signal
import sys

from rich.console import Console
from rich.markup import escape

from sclora_tools.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED, ScloraError, storage_error

stderr = Console(stderr=True, soft_wrap=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI runner cancelling the job), raised like Ctrl-C so that every `finally` cleans up."""


def raise_terminated(signum, frame) -> None:
    raise Terminated()


def terminate_like_interrupt() -> None:
    """Treat SIGTERM like Ctrl-C: staging folders are removed and the exit code says which it was."""
    signal.signal(signal.SIGTERM, raise_terminated)


def debug() -> bool:
    return os.environ.get("SCLORA_DEBUG") == "1"


def fail(exc: ScloraError) -> None:
    if debug():
        raise exc
    stderr.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
    sys.exit(exc.exit_code)


def handled(command):
    """Run a command; a ScloraError prints its sentence and exits with its code, anything else is
    reported as an internal error. SCLORA_DEBUG=1 shows the traceback instead."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ScloraError as exc:
            fail(exc)
        except KeyboardInterrupt as exc:
            what, code = ("terminated (SIGTERM)", EXIT_TERMINATED) if isinstance(exc, Terminated) else ("interrupted", EXIT_INTERRUPTED)
            stderr.print(f"[bold red]{what}[/bold red]; nothing that looks complete was written, run the command again.")
            sys.exit(code)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for a clean message
            full = storage_error(exc)
            if full is not None:
                fail(full)
            if debug():
                raise
            stderr.print(
                f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))} (set SCLORA_DEBUG=1 for the traceback "
                "and report it).",
                highlight=False,
            )
            sys.exit(EXIT_INTERNAL)

    return wrapper
