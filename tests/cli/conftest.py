"""The small calibration the CLI's init tests share (8 rows of up to 16 tokens: few - tokens on purpose)
and one init run from it, both cached by tests/chain.py and read-only."""

from __future__ import annotations

from pathlib import Path

import pytest

CLI_CALIBRATION = {"samples": 8, "max_length": 16, "batch_size": 4}


@pytest.fixture(scope="module")
def calibration(tiny_chain) -> Path:
    """One small calibration of tiny_fp32 shared by the init tests (few - tokens on purpose)."""
    return tiny_chain("fp32", calibrate=CLI_CALIBRATION).calib


@pytest.fixture(scope="module")
def init_run(tiny_chain) -> Path:
    return tiny_chain("fp32", calibrate=CLI_CALIBRATION, init={"beta": 0.5, "rank": 4}).run
