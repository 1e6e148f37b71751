"""Keep third-party chatter out of a training run's output: transformers' weight-loading bars and
log warnings, and library FutureWarnings (PEFT calls deprecated transformers properties). Our own
progress bar and summary are the run's output; the previous settings come back afterwards."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

from .. import models


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """models.quiet_loading for the whole run, with FutureWarnings ignored from any module, not only
    from transformers and PEFT."""
    with models.quiet_loading(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield
