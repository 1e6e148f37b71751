"""Every error a user can cause, each with its exit code: the one place that maps the two.

A message is one sentence that names the problem and the fix. The CLI prints it without a
traceback unless SCLORA_DEBUG=1.
"""

import errno


class ScloraError(Exception):
    """Base class: an error the user can act on. `result`, when set, is what the command had done
    when it stopped (a pipeline's report, the stages' status): the --json failure document carries it."""

    exit_code = 1
    kind = "error"

    def __init__(self, *args, result: dict | None = None) -> None:
        super().__init__(*args)
        self.result = result


class UsageError(ScloraError):
    """An option value is out of range or options contradict each other."""

    exit_code = 2
    kind = "usage"


class InputError(ScloraError):
    """A model, dataset, directory or file is missing, unreadable or of the wrong kind."""

    exit_code = 3
    kind = "input"


class MismatchError(ScloraError):
    """Artefacts that must belong together do not (e.g. a calibration made for another model)."""

    exit_code = 4
    kind = "mismatch"


class VerificationError(ScloraError):
    """A hash or exactness check failed: something was tampered with or corrupted."""

    exit_code = 5
    kind = "verification"


class NumericalError(ScloraError):
    """A tensor holds NaN/Inf or a decomposition failed."""

    exit_code = 6
    kind = "numerical"


class RemoteError(ScloraError):
    """The Hub (or a self-hosted endpoint) refused or failed a request."""

    exit_code = 7
    kind = "remote"


class StorageError(ScloraError):
    """The disk filled up (or a quota ran out) while writing an artefact."""

    exit_code = 74  # sysexits EX_IOERR
    kind = "storage"


class BusyError(ScloraError):
    """Another process is writing the same output right now: try again when it has finished."""

    exit_code = 75  # sysexits EX_TEMPFAIL: a CI job may retry
    kind = "busy"


class GateError(ScloraError):
    """A pipeline's eval gate failed, so nothing was published."""

    exit_code = 8
    kind = "gate"


class StaleError(ScloraError):
    """`sclora status`: some stage of the pipeline is stale or missing."""

    exit_code = 9
    kind = "stale"


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def storage_error(exc: BaseException) -> StorageError | None:
    """The StorageError for a full disk or quota, else None. safetensors reports one as a
    SafetensorError that quotes the OS error ("... (os error 28)")."""
    if isinstance(exc, OSError):
        full, where = exc.errno in NO_SPACE, exc.filename
    else:
        full, where = any(f"(os error {code})" in str(exc) for code in NO_SPACE), None
    if not full:
        return None
    return StorageError(f"the disk is full{f' while writing {where}' if where else ''}; free some space or write to another disk, "
                        "then run the command again (nothing that looks complete was written).")


EXIT_INTERNAL = 70  # an unexpected exception: a bug, reported with a hint to set SCLORA_DEBUG=1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM

# Every (kind, exit code) a command can end with besides success (0): the `error.kind` and
# `exit_code` of a failed --json document, and the README's table. A bad option that the command
# line parser itself refuses (unknown option, not a number) is a "usage" error too.
EXIT_CODES = {
    **{error.kind: error.exit_code for error in (ScloraError, UsageError, InputError, MismatchError, VerificationError, NumericalError,
                                                 RemoteError, GateError, StaleError, StorageError, BusyError)},
    "internal": EXIT_INTERNAL,
    "interrupted": EXIT_INTERRUPTED,
    "terminated": EXIT_TERMINATED,
}
