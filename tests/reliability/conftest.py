"""Fixtures of the reliability tests: the fork server that starts `sclora` commands as real processes."""

from __future__ import annotations

import os

import pytest

from tests.reliability.processes import REPO, ForkServer


@pytest.fixture(scope="session")
def forkserver(tmp_path_factory):
    """One fork server per session (its imports are the expensive part); children are offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "SCLORA_CACHE": str(tmp_path_factory.mktemp("sclora-cache"))}
    server = ForkServer(tmp_path_factory.mktemp("forked"), env)
    yield server
    server.close()
