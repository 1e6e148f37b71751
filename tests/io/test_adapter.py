"""The adapter config written without peft is the one PEFT writes and reads for the same settings."""

from __future__ import annotations

import dataclasses
import json

import torch
from peft import LoraConfig

from sclora_tools.io.adapter import CONFIG, LoraPair, read_adapter, write_adapter

MODULES = ["model.layers.1.mlp.up_proj", "model.layers.0.self_attn.q_proj"]


def peft_written(tmp_path, rank: int, alpha: float) -> dict:
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=sorted(MODULES), lora_dropout=0.0, bias="none",
                        task_type="CAUSAL_LM", base_model_name_or_path="org/base")
    config.save_pretrained(str(tmp_path / "peft"))
    return json.loads((tmp_path / "peft" / CONFIG).read_text())


def ours_written(tmp_path, rank: int, alpha: float):
    pairs = {name: LoraPair(a=torch.randn(rank, 8), b=torch.randn(12, rank)) for name in MODULES}
    write_adapter(tmp_path / "ours", pairs, rank, alpha, "org/base")
    return pairs


def test_every_key_written_has_the_value_peft_writes(tmp_path):
    ours_written(tmp_path, 4, 8.0)
    ours = json.loads((tmp_path / "ours" / CONFIG).read_text())
    peft = peft_written(tmp_path, 4, 8.0)
    # PEFT keeps target_modules as a set, so its file lists them in hash order; ours sorts them
    assert sorted(peft["target_modules"]) == ours["target_modules"]
    assert {key: peft[key] for key in ours if key != "target_modules"} == {k: v for k, v in ours.items() if k != "target_modules"}


def test_peft_reads_it_as_the_config_it_would_have_written(tmp_path):
    ours_written(tmp_path, 16, 32.0)
    peft_written(tmp_path, 16, 32.0)
    loaded = LoraConfig.from_pretrained(str(tmp_path / "ours"))
    expected = LoraConfig.from_pretrained(str(tmp_path / "peft"))
    assert dataclasses.asdict(loaded) == dataclasses.asdict(expected)


def test_the_adapter_reads_back(tmp_path):
    pairs = ours_written(tmp_path, 4, 4.0)
    config, read = read_adapter(tmp_path / "ours")
    assert (config.r, config.lora_alpha, set(config.target_modules)) == (4, 4.0, set(MODULES))
    for name, pair in pairs.items():
        assert torch.equal(read[name].a, pair.a) and torch.equal(read[name].b, pair.b)
