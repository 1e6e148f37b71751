"""The shipped safety adapter (its recorded hash, its packaging) and the aligned start made from it
(merge, cache, refusal of a tampered file); the merge runs on a tiny model, the real one in the
slow demo test (tests/workflows/test_demo.py)."""

import fnmatch
import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file
from setuptools.config.pyprojecttoml import read_configuration
from transformers import AutoModelForCausalLM

from sclora_tools import aligned, embedded, models
from sclora_tools.errors import InputError
from sclora_tools.io.hashing import sha256_file

NAME = "smollm2-135m-instruct-aligned"
SHIPPED = aligned.adapter_dir(NAME)
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_shipped_adapter_matches_the_hash_its_recipe_records():
    recipe = aligned.read_recipe(SHIPPED)
    adapter = SHIPPED / recipe["adapter_file"]
    assert sha256_file(adapter) == recipe["adapter_sha256"] == aligned.checked_adapter_sha256(SHIPPED)
    assert adapter.stat().st_size == recipe["adapter_bytes"] < 16 * 2**20  # a few MB
    assert recipe["base"] == aligned.ALIGNED_MODELS[NAME].base and recipe["datasets"] == ["safety", "benign", "knowledge"]


def test_shipped_adapter_is_bf16_safetensors_over_every_projection():
    recipe = aligned.read_recipe(SHIPPED)
    with safe_open(str(SHIPPED / recipe["adapter_file"]), "pt") as tensors:
        names = list(tensors.keys())
        assert {tensors.get_tensor(name).dtype for name in names} == {torch.bfloat16}
    projections = {name.split(".")[-3] for name in names}
    assert projections == set(recipe["target_modules"]) and len(names) == 2 * 7 * 30
    config = json.loads((SHIPPED / "adapter_config.json").read_text())
    assert config["r"] == recipe["rank"] and config["base_model_name_or_path"] == recipe["base"]


def test_every_shipped_adapter_file_is_package_data_and_none_is_a_pickle():
    patterns = read_configuration(PYPROJECT)["tool"]["setuptools"]["package-data"]["sclora_tools"]
    shipped = [path.relative_to(aligned.ADAPTERS_DIR.parent).as_posix() for path in SHIPPED.iterdir()]
    assert sorted(shipped) == ["adapters/smollm2-135m-instruct-safety/" + name
                               for name in ("adapter_config.json", "adapter_model.safetensors", "recipe.json")]
    assert all(any(fnmatch.fnmatch(path, pattern) for pattern in patterns) for path in shipped)


@pytest.fixture
def tiny_aligned(tiny_fp32, tmp_path, monkeypatch):
    """An aligned entry over the tiny model: a 'materialised' base and a LoRA adapter with B != 0."""
    base = tmp_path / "base"
    shutil.copytree(tiny_fp32, base)
    (base / embedded.MANIFEST_NAME).write_text(json.dumps({"gguf_sha256": "ab" * 32}))
    monkeypatch.setattr(embedded, "materialize", lambda name, cache_dir=None, progress=None: base)
    adapters = tmp_path / "adapters"
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "down_proj"]))
    torch.manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_()
    peft_model.save_pretrained(adapters / "tiny-safety")
    adapter = adapters / "tiny-safety" / "adapter_model.safetensors"
    (adapters / "tiny-safety" / "recipe.json").write_text(json.dumps({"adapter_file": adapter.name, "adapter_sha256": sha256_file(adapter)}))
    monkeypatch.setattr(aligned, "ADAPTERS_DIR", adapters)
    monkeypatch.setitem(aligned.ALIGNED_MODELS, "tiny-aligned", aligned.AlignedModel(base="tiny", adapter="tiny-safety"))
    return base, adapter


def test_materialize_merges_the_adapter_once_then_hits_the_cache(tiny_aligned, tmp_path, monkeypatch):
    base, adapter = tiny_aligned
    builds = []
    write = aligned._write_merged
    monkeypatch.setattr(aligned, "_write_merged", lambda *args: (builds.append(args), write(*args)))
    first = aligned.materialize("tiny-aligned", cache_dir=tmp_path / "cache")
    assert aligned.materialize("tiny-aligned", cache_dir=tmp_path / "cache") == first and len(builds) == 1
    assert first == tmp_path / "cache" / "models" / "tiny-aligned" / sha256_file(adapter)[:16]
    manifest = embedded.read_manifest(first)
    assert manifest["adapter_sha256"] == sha256_file(adapter) and manifest["base_gguf_sha256"] == "ab" * 32
    lora, before, after = load_file(adapter), load_file(base / "model.safetensors"), load_file(first / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj"
    a, b = lora[f"base_model.model.{key}.lora_A.weight"], lora[f"base_model.model.{key}.lora_B.weight"]
    torch.testing.assert_close(after[f"{key}.weight"], before[f"{key}.weight"] + 2.0 * b @ a)  # scale alpha / r = 2
    assert torch.equal(after["model.layers.0.self_attn.k_proj.weight"], before["model.layers.0.self_attn.k_proj.weight"])


def test_a_tampered_adapter_is_refused_with_one_sentence(tiny_aligned, tmp_path):
    _, adapter = tiny_aligned
    adapter.write_bytes(adapter.read_bytes()[:-1] + b" ")
    with pytest.raises(InputError, match="does not match the sha256 in its recipe.json; reinstall sclora-tools"):
        models.resolve_model("tiny-aligned")
