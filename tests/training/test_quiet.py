"""quiet_libraries: transformers' progress bars, log warnings and library FutureWarnings stay out of a
training run, and the caller's settings come back afterwards, also when the run fails."""

from __future__ import annotations

import warnings

import pytest
from transformers.utils import logging as transformers_logging

from sclora_tools.training.quiet import quiet_libraries


def test_inside_quiet_outside_as_before():
    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_info()
    transformers_logging.enable_progress_bar()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with quiet_libraries():
                assert transformers_logging.get_verbosity() == transformers_logging.ERROR
                assert not transformers_logging.is_progress_bar_enabled()
                warnings.warn("a deprecated property", FutureWarning, stacklevel=1)
            warnings.warn("after the run", FutureWarning, stacklevel=1)
        assert [str(w.message) for w in caught] == ["after the run"]
        assert transformers_logging.get_verbosity() == transformers_logging.INFO
        assert transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        with pytest.raises(RuntimeError), quiet_libraries():
            raise RuntimeError("training failed")
        assert transformers_logging.get_verbosity() == transformers_logging.INFO
        assert not transformers_logging.is_progress_bar_enabled()  # it was off before: it stays off
    finally:
        transformers_logging.set_verbosity(verbosity)
        (transformers_logging.enable_progress_bar if bars else transformers_logging.disable_progress_bar)()
