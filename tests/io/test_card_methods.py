"""The model card names the init method and its settings for every method, not only SC-LoRA: no
beta where the method has none, the covariances it read, and LoRA-Null's eigen-gap."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from sclora_tools.core.methods import METHODS
from sclora_tools.io.card import render_card
from tests.calibrations import FOR_ALL


def card_of(tiny_chain, method: str) -> tuple[ModelCard, dict]:
    merged = tiny_chain("fp32", calibrate=FOR_ALL, init={"method": method, "rank": 4, "beta": 0.9}, merge={}).merged
    manifest = json.loads((merged / "manifest.json").read_text())
    return ModelCard(render_card(manifest, repo_id="org/tiny-" + method)), manifest


@pytest.mark.parametrize("method", ["pissa", "corda-kpa", "lora-null"])
def test_the_card_names_the_method_and_its_settings(method, tiny_chain):
    card, manifest = card_of(tiny_chain, method)
    block = card.data.to_dict()["sclora"]
    assert block["method"] == method and "beta" not in block  # beta means nothing to these methods
    assert block["method_settings"]["summary"] == METHODS[method].summary
    assert block["method_settings"]["reads"] == manifest["config"]["method_settings"]["reads"]
    text = card.text
    assert f"using {method} initialisation" in text and "What beta means" not in text and "| beta |" not in text
    assert "## The initialisation" in text and "W_res + s B A = W0" in text
    assert ("null space \\(LoRA-Null\\)" in text) == (method == "lora-null")
    if method == "lora-null":
        assert block["method_settings"]["null_space"]["layers_not_unique"] == 0
        assert block["method_settings"]["null_space"]["null_gap_ratio_min"] >= 1.0


def test_the_sclora_card_keeps_beta_and_its_explanation(tiny_chain):
    card, _ = card_of(tiny_chain, "sclora")
    block = card.data.to_dict()["sclora"]
    assert block["beta"] == 0.9 and block["method_settings"]["reads"] == ["layer-output Cov+", "layer-output Cov-"]
    assert "What beta means" in card.text and "beta = 0.9" in card.text and "| beta | 0.9 |" in card.text
