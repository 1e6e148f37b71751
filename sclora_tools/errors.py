"""Every error a user can cause, each with its exit code: the one place that maps the two.

A message is one sentence that names the problem and the fix. The CLI prints it without a
traceback unless SCLORA_DEBUG=1.
"""


class ScloraError(Exception):
    """Base class: an error the user can act on."""

    exit_code = 1


class UsageError(ScloraError):
    """An option value is out of range or options contradict each other."""

    exit_code = 2


class InputError(ScloraError):
    """A model, dataset, directory or file is missing, unreadable or of the wrong kind."""

    exit_code = 3


class MismatchError(ScloraError):
    """Artefacts that must belong together do not (e.g. a calibration made for another model)."""

    exit_code = 4


class VerificationError(ScloraError):
    """A hash or exactness check failed: something was tampered with or corrupted."""

    exit_code = 5


class NumericalError(ScloraError):
    """A tensor holds NaN/Inf or a decomposition failed."""

    exit_code = 6


class RemoteError(ScloraError):
    """The Hub (or a self-hosted endpoint) refused or failed a request."""

    exit_code = 7


EXIT_INTERNAL = 70  # an unexpected exception: a bug, reported with a hint to set SCLORA_DEBUG=1
EXIT_INTERRUPTED = 130
