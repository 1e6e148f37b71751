"""The calibrate -> init runs the calibrate and init tests share: 60 + and 60 - rows of up to 48
tokens, beta 0.5, rank 8, on the fp32 and the bf16 tiny model; and the small runs (24 rows of up
to 32 tokens, rank 4) the train and merge tests start from. All cached by tests/chain.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chain import TinyChain

RANK = 8
PIPELINE = {"calibrate": {"samples": 1000, "max_length": 48, "batch_size": 8}, "init": {"beta": 0.5, "rank": RANK}}
SMALL_CALIBRATION = {"samples": 24, "max_length": 32, "batch_size": 8}
TRAINED = {"max_steps": 10, "lr": 5e-3, "batch_size": 4, "max_length": 96}


@pytest.fixture(scope="module")
def fp32_run(tiny_chain) -> TinyChain:
    return tiny_chain("fp32", **PIPELINE)


@pytest.fixture(scope="module")
def bf16_run(tiny_chain) -> TinyChain:
    return tiny_chain("bf16", **PIPELINE)


@pytest.fixture(scope="session")
def small_run(tiny_chain):
    """`small_run(dtype="fp32", rank=4, method="sclora") -> Path`: the init output of a small calibration
    (beta 0.5), shared read-only: train into, merge from, never write into it."""

    def make(dtype: str = "fp32", rank: int = 4, method: str = "sclora") -> Path:
        return tiny_chain(dtype, calibrate=SMALL_CALIBRATION, init={"beta": 0.5, "rank": rank, "method": method}).run

    return make


@pytest.fixture(scope="module")
def fp32_trained(tiny_chain) -> TinyChain:
    """The small fp32 run trained 10 steps at lr 5e-3, then merged."""
    return tiny_chain("fp32", calibrate=SMALL_CALIBRATION, init={"beta": 0.5, "rank": 4, "method": "sclora"}, train=TRAINED, merge={})
