"""The launcher's variables, read in one place."""

from __future__ import annotations

import pytest

from sclora_tools import launcher
from sclora_tools.errors import UsageError


@pytest.mark.parametrize(("variables", "helper"), [({}, False), ({"WORLD_SIZE": "2", "RANK": "0"}, False),
                                                  ({"WORLD_SIZE": "2", "RANK": "1"}, True), ({"WORLD_SIZE": "1", "RANK": "0"}, False)])
def test_a_helper_is_any_rank_but_zero_of_several(variables, helper, monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert launcher.is_helper_rank() is helper
    assert launcher.from_environment().is_helper is helper


@pytest.mark.parametrize("variables", [{"WORLD_SIZE": "two", "RANK": "0"}, {"WORLD_SIZE": "2", "RANK": "-1"}])
def test_nonsense_variables_are_one_sentence_for_the_stage_and_not_a_helper(variables, monkeypatch):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match="torchrun or accelerate launch"):
        launcher.from_environment()
    assert launcher.is_helper_rank() is False
