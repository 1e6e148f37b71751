"""The adapter config written without peft is the one PEFT writes and reads for the same settings, and
read back without peft it gives the settings and the scale PEFT applies, refusing what the stages
cannot apply."""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

from sclora_tools.errors import InputError
from sclora_tools.io.adapter import CONFIG, WEIGHTS, AdapterConfig, LoraPair, key_for, read_adapter, write_adapter

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
    assert (config.rank, config.alpha, set(config.target_modules), config.scale) == (4, 4.0, set(MODULES), 1.0)
    for name, pair in pairs.items():
        assert torch.equal(read[name].a, pair.a) and torch.equal(read[name].b, pair.b)


@pytest.mark.parametrize("rank, alpha, rslora", [(4, 8.0, False), (16, 32.0, True)])
def test_a_peft_written_config_reads_with_the_scale_peft_applies(tmp_path, rank, alpha, rslora):
    model = get_peft_model(nn.Sequential(OrderedDict(proj=nn.Linear(8, 8))),
                           LoraConfig(r=rank, lora_alpha=alpha, target_modules=["proj"], use_rslora=rslora))
    model.save_pretrained(str(tmp_path / "peft"))
    config = AdapterConfig.read(tmp_path / "peft")
    assert (config.rank, config.alpha, config.target_modules, config.rslora) == (rank, alpha, ("proj",), rslora)
    assert config.scale == model.base_model.model.proj.scaling["default"]


@pytest.mark.parametrize("change, named", [
    ({"use_dora": True}, "DoRA"),
    ({"lora_bias": True}, "lora_bias"),
    ({"fan_in_fan_out": True}, "fan_in_fan_out"),
    ({"target_modules": 5}, "target_modules"),
    ({"target_modules": ["q_proj", 3]}, "target_modules"),
    ({"peft_type": None}, "peft_type None"),
    ({"rank_pattern": {"q_proj": 8}}, "rank_pattern"),
    ({"alpha_pattern": {"q_proj": 8}}, "alpha_pattern"),
    ({"peft_type": "IA3"}, "peft_type 'IA3'"),
    ({"r": 0}, "positive integer rank"),
    ({"r": "4"}, "positive integer rank"),
    ({"r": True}, "positive integer rank"),
    ({"lora_alpha": -1.0}, "positive number"),
    ({"lora_alpha": None}, "positive number"),
])
def test_settings_the_stages_cannot_apply_are_refused_by_name(tmp_path, change, named):
    ours_written(tmp_path, 4, 8.0)
    path = tmp_path / "ours" / CONFIG
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(InputError, match=named) as caught:
        read_adapter(tmp_path / "ours")
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_a_config_that_is_not_a_json_object_is_refused(tmp_path, text):
    ours_written(tmp_path, 4, 8.0)
    (tmp_path / "ours" / CONFIG).write_text(text)
    with pytest.raises(InputError, match="JSON"):
        read_adapter(tmp_path / "ours")


@pytest.mark.parametrize("damage", ["no B", "rank of A", "rank of B"])
def test_factors_that_do_not_match_the_config_are_refused(tmp_path, damage):
    ours_written(tmp_path, 4, 8.0)
    path = tmp_path / "ours" / WEIGHTS
    tensors = load_file(path)
    a_key, b_key = key_for(MODULES[0], "A"), key_for(MODULES[0], "B")
    if damage == "no B":
        del tensors[b_key]
    elif damage == "rank of A":
        tensors[a_key] = tensors[a_key][:3].contiguous()
    else:
        tensors[b_key] = tensors[b_key][:, :3].contiguous()
    save_file(tensors, str(path))
    with pytest.raises(InputError, match=f"rank-4 A and B pair for {MODULES[0]}"):
        read_adapter(tmp_path / "ours")
