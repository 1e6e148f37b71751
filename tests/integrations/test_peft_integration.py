"""preprocess_sclora in a plain PEFT loop: get_peft_model with PEFT's LoraConfig on a tiny Llama,
SC-LoRA from a calibration directory or from + / - data loaders, logits unchanged, a few
optimiser steps, and saving / loading with PEFT's own calls gives the trained model back."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora.layer import LoraLayer
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer

from sclora_tools import init, preprocess_sclora
from sclora_tools.errors import MismatchError, UsageError
from sclora_tools.io.adapter import read_adapter
from sclora_tools.io.checkpoint import CheckpointReader
from tests.calibrations import FOR_ALL

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 6, 12


@pytest.fixture(scope="module")
def calibration(tiny_chain) -> Path:
    return tiny_chain("fp32", calibrate=FOR_ALL).calib


def peft_model(model_dir: Path, dtype=torch.float32, **config):
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    options = {"r": RANK, "lora_alpha": ALPHA, "target_modules": TARGETS, "lora_dropout": 0.0, **config}
    return get_peft_model(base, LoraConfig(**options))


def logits(model, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float()


def base_logits(model_dir: Path, ids, mask, dtype=torch.float32) -> torch.Tensor:
    return logits(AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype), ids, mask)


def loaders(model_dir: Path, data_files: dict) -> tuple[DataLoader, DataLoader]:
    """+ / - batches as a user's own pipeline makes them: tokenizer(..., padding=True) dicts."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pos = [f"{row['prompt']} {row['response']}" for row in map(json.loads, data_files["pos"].read_text().splitlines())]
    neg = [row["text"] for row in map(json.loads, data_files["neg"].read_text().splitlines())]

    def collate(texts):
        return dict(tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=48))

    return DataLoader(pos, batch_size=8, collate_fn=collate), DataLoader(neg, batch_size=8, collate_fn=collate)


def lora_factors(model) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return {name.removeprefix("base_model.model."): (m.lora_B["default"].weight, m.lora_A["default"].weight, m.get_base_layer().weight)
            for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def test_from_a_calibration_equals_sclora_init_and_keeps_the_logits(tiny_fp32, calibration, sample_ids, tmp_path):
    ids, mask = sample_ids
    model = peft_model(tiny_fp32)
    info = preprocess_sclora(model, calibration, beta=0.8, progress=False)
    assert (logits(model, ids, mask) - base_logits(tiny_fp32, ids, mask)).abs().max().item() <= 1e-4
    init(calibration, tmp_path / "run", beta=0.8, rank=RANK, alpha=ALPHA, progress=False)
    _, pairs = read_adapter(tmp_path / "run" / "adapter")
    residual = CheckpointReader(tmp_path / "run" / "residual")
    factors = lora_factors(model)
    assert set(factors) == set(pairs) and len(factors) == 14
    for name, (b, a, w_res) in factors.items():  # the very same numbers as `sclora init`
        assert torch.equal(b, pairs[name].b) and torch.equal(a, pairs[name].a), name
        assert torch.equal(w_res, residual.read(f"{name}.weight")), name
    assert 0.0 < info["energy_neg"] < info["energy_pos"] < 1.0
    assert info["layers"]["model.layers.0.self_attn.q_proj"]["energy_pos"] == pytest.approx(
        init_layer_energy(tmp_path / "run", "model.layers.0.self_attn.q_proj"), rel=1e-12)


def init_layer_energy(run: Path, name: str) -> float:
    return json.loads((run / "manifest.json").read_text())["layers"][name]["energy_pos"]


def test_train_a_few_steps_then_save_and_reload_with_peft(tiny_fp32, calibration, sample_ids, tmp_path):
    ids, mask = sample_ids
    model = peft_model(tiny_fp32)
    preprocess_sclora(model, calibration, beta=0.5, progress=False)
    model.save_pretrained(tmp_path / "init")  # the initial adapter, before any step (PEFT's convention)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    labels = ids.masked_fill(~mask.bool(), -100)
    losses = []
    for _ in range(4):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    trained = logits(model, ids, mask)
    assert (trained - base_logits(tiny_fp32, ids, mask)).abs().max().item() > 1e-3  # it did learn something
    # a standard rank-2r LoRA for the ORIGINAL base: B' = [B, -B_init], A' = [A; A_init]
    model.save_pretrained(tmp_path / "converted", path_initial_model_for_weight_conversion=str(tmp_path / "init"))
    on_original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_fp32, dtype=torch.float32), tmp_path / "converted")
    assert on_original.peft_config["default"].r == 2 * RANK
    assert (logits(on_original, ids, mask) - trained).abs().max().item() <= 1e-4
    # or keep the residual base: the adapter as trained + W_res (PEFT's unload() leaves W_res)
    model.save_pretrained(tmp_path / "adapter")
    copy.deepcopy(model).unload().save_pretrained(tmp_path / "residual")
    on_residual = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "residual", dtype=torch.float32), tmp_path / "adapter")
    assert (logits(on_residual, ids, mask) - trained).abs().max().item() <= 1e-5


def test_from_data_loaders_the_subspace_is_the_top_eigenvectors_of_dcov(tiny_fp32, data_files, sample_ids):
    ids, mask = sample_ids
    pos, neg = loaders(tiny_fp32, data_files)
    model = peft_model(tiny_fp32)
    preprocess_sclora(model, pos=pos, neg=neg, beta=0.5, progress=False)
    assert (logits(model, ids, mask) - base_logits(tiny_fp32, ids, mask)).abs().max().item() <= 1e-4
    # independently: collect the output h of two layers over real tokens with plain hooks
    reference = AutoModelForCausalLM.from_pretrained(tiny_fp32, dtype=torch.float32)
    names = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]
    covariances = {name: {} for name in names}
    for role, loader in (("pos", pos), ("neg", neg)):
        outputs = {name: [] for name in names}
        modules = dict(reference.named_modules())
        handles = [modules[name].register_forward_hook(lambda m, a, out, bucket=outputs[name]: bucket.append(out.detach())) for name in names]
        masks = []
        with torch.no_grad():
            for batch in loader:
                reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                masks.append(batch["attention_mask"].bool())
        for handle in handles:
            handle.remove()
        for name in names:
            h = torch.cat([out[m] for out, m in zip(outputs[name], masks, strict=True)]).double().numpy()
            covariances[name][role] = h.T @ h / h.shape[0]
    factors = lora_factors(model)
    for name in names:
        dcov = 0.5 * covariances[name]["pos"] - 0.5 * covariances[name]["neg"]
        _, vectors = np.linalg.eigh(dcov)
        top = vectors[:, -RANK:]
        b = factors[name][0].detach().double().numpy()
        assert np.allclose(b @ b.T, top @ top.T, atol=1e-4), name


@pytest.mark.parametrize("method, roles", [("corda-ipa", ("pos",)), ("lora-null", ("neg",)), ("corda-kpa", ("neg",)), ("pissa", ())])
def test_other_methods_from_loaders_keep_the_logits(method, roles, tiny_fp32, data_files, sample_ids):
    ids, mask = sample_ids
    pos, neg = loaders(tiny_fp32, data_files)
    given = {role: loader for role, loader in (("pos", pos), ("neg", neg)) if role in roles}
    model = peft_model(tiny_fp32)
    info = preprocess_sclora(model, method=method, progress=False, **given)
    assert info["method"] == method and info["beta"] is None
    assert (logits(model, ids, mask) - base_logits(tiny_fp32, ids, mask)).abs().max().item() <= 1e-4
    assert any(bool(b.any()) for b, _, _ in lora_factors(model).values())


def test_bf16_base_with_float32_adapters_stays_within_bf16_rounding(tiny_bf16, data_files, sample_ids):
    ids, mask = sample_ids
    pos, neg = loaders(tiny_bf16, data_files)
    model = peft_model(tiny_bf16, dtype=torch.bfloat16)
    preprocess_sclora(model, pos=pos, neg=neg, beta=0.9, progress=False)
    difference = (logits(model, ids, mask) - base_logits(tiny_bf16, ids, mask, dtype=torch.bfloat16)).abs().max().item()
    assert difference <= 5e-2


def test_refusals_are_one_sentence(tiny_fp32, tiny_bf16, data_files, calibration, tmp_path):
    pos, neg = loaders(tiny_fp32, data_files)
    with pytest.raises(UsageError, match="get_peft_model"):
        preprocess_sclora(AutoModelForCausalLM.from_pretrained(tiny_fp32), calibration, progress=False)
    with pytest.raises(UsageError, match="already changed the base weights"):
        preprocess_sclora(peft_model(tiny_fp32, init_lora_weights="pissa"), calibration, progress=False)
    with pytest.raises(UsageError, match="needs neg= data loaders"):
        preprocess_sclora(peft_model(tiny_fp32), pos=pos, progress=False)
    with pytest.raises(UsageError, match="not both"):
        preprocess_sclora(peft_model(tiny_fp32), calibration, pos=pos, neg=neg, progress=False)
    with pytest.raises(MismatchError, match="not the one this calibration was made for"):
        preprocess_sclora(peft_model(tiny_bf16), calibration, progress=False)
    model = peft_model(tiny_fp32)
    preprocess_sclora(model, calibration, progress=False)
    with pytest.raises(UsageError, match="already initialised"):
        preprocess_sclora(model, calibration, progress=False)
