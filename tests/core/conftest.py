"""Fixtures shared by the core tests."""

from __future__ import annotations

import pytest

from sclora_tools.core import eigen, subspace


@pytest.fixture
def small_krylov_threshold(monkeypatch):
    """Let 400-dim problems take the Krylov path (the production threshold is 512), so the
    dispatch is tested at a size a test can afford."""
    monkeypatch.setattr(eigen, "KRYLOV_MIN_DIM", 256)
    monkeypatch.setattr(subspace, "KRYLOV_DIM_PER_BLOCK_HIGH_BETA", eigen.KRYLOV_DIM_PER_BLOCK)  # beta 0.9 too
