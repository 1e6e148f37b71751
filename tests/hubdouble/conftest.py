"""The large payload the Hub test double's own tests upload (built once per session)."""

from __future__ import annotations

import pytest

from tests.hubdouble.payloads import BIG_SIZE, safetensors_bytes


@pytest.fixture(scope="session")
def big_weights() -> bytes:
    return safetensors_bytes(BIG_SIZE)
