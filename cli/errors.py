"""The one place where a command's outcome becomes an exit code, a one-line message on stderr and,
with --json, the JSON document on stdout (sclora_tools/machine_output.py)."""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer import rich_utils

try:  # newer typer carries its own copy of click, whose command line errors derive from this
    from typer import TyperException as RefusedCommandLine
except ImportError:  # older typer runs on click itself
    from click.exceptions import ClickException as RefusedCommandLine

from sclora_tools import launcher, machine_output
from sclora_tools.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED, ScloraError, UsageError, storage_error

stderr = Console(stderr=True, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Also print one JSON document on stdout (the result, or the error), "
                                        "as described by sclora_tools/schemas/output.schema.json; people read stderr.")]


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI runner cancelling the job), raised like Ctrl-C so that every `finally` cleans up."""


def raise_terminated(signum, frame) -> None:
    raise Terminated()


def terminate_like_interrupt() -> None:
    """Treat SIGTERM like Ctrl-C: staging folders are removed and the exit code says which it was."""
    signal.signal(signal.SIGTERM, raise_terminated)


def debug() -> bool:
    return os.environ.get("SCLORA_DEBUG") == "1"


class Outcome:
    """How one command run ends: its name, whether it prints a JSON document, and the document."""

    def __init__(self, name: str | None, as_json: bool) -> None:
        self.name, self.as_json = name, as_json

    def succeeded(self, result) -> None:
        """Print the result's document; a helper rank of a distributed run (result None) prints nothing."""
        if self.as_json and result is not None:
            machine_output.write(machine_output.success(self.name, result))

    def failed(self, kind: str, code: int, message: str, shown: str, result=None) -> None:
        """`shown` (rich markup) on stderr, the failure document with the plain `message`, then exit `code`."""
        stderr.print(shown, highlight=False)
        if self.as_json and not launcher.is_helper_rank():
            machine_output.write(machine_output.failure(self.name, code, kind, message, result))
        sys.exit(code)

    def error(self, exc: ScloraError) -> None:
        if debug():
            raise exc
        self.failed(exc.kind, exc.exit_code, str(exc), f"[bold red]error:[/bold red] {escape(str(exc))}", exc.result)

    def interrupted(self, exc: KeyboardInterrupt) -> None:
        what, kind, code = (("terminated (SIGTERM)", "terminated", EXIT_TERMINATED) if isinstance(exc, Terminated)
                            else ("interrupted", "interrupted", EXIT_INTERRUPTED))
        rest = "; nothing that looks complete was written, run the command again."
        self.failed(kind, code, what + rest, f"[bold red]{what}[/bold red]{rest}")

    def crashed(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc} (set SCLORA_DEBUG=1 for the traceback and report it)."
        self.failed("internal", EXIT_INTERNAL, message, f"[bold red]internal error:[/bold red] {escape(message)}")


def command_name(command) -> str:
    """The command's name on the command line: its function's name, less a `_command` suffix that
    keeps a builtin's name free (`eval_command` is `sclora eval`)."""
    return command.__name__.removesuffix("_command")


def handled(command):
    """Run a command and finish it: its result (returned, never printed by the command) becomes the
    --json document; a ScloraError prints its sentence and exits with its code; anything else is an
    internal error. SCLORA_DEBUG=1 shows the traceback instead. The document of a failure carries
    the same sentence, its kind and the exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        outcome = Outcome(command_name(command), bool(kwargs.get("as_json")))
        try:
            result = command(*args, **kwargs)
        except ScloraError as exc:
            outcome.error(exc)
        except KeyboardInterrupt as exc:
            outcome.interrupted(exc)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for a clean message
            full = storage_error(exc)
            if full is not None:
                outcome.error(full)
            if debug():
                raise
            outcome.crashed(exc)
        else:
            outcome.succeeded(result)

    return wrapper


def refused_command_line(error: RefusedCommandLine, argv: list[str], command_names: list[str]) -> int:
    """A command line the parser refused (unknown option, a value of the wrong type): click's own
    message on stderr as usual, and with --json a failure document of kind "usage". Returns the code."""
    rich_utils.rich_format_error(error)
    if "--json" in argv:
        named = argv[0] if argv and argv[0] in command_names else None  # sclora has no options before the command
        machine_output.write(machine_output.failure(named, error.exit_code, UsageError.kind, error.format_message()))
    return error.exit_code
