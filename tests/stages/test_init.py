"""`init` on tiny Llama models: PEFT-loadable artefacts that reproduce the base model and rebuild W0 bit
for bit, a subspace that is optimal for covariances collected by an independent implementation, one
calibration for any beta and rank, and the appendix-B warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

import sclora_tools.models as models
from sclora_tools import init
from sclora_tools.core import exact
from sclora_tools.errors import InputError
from sclora_tools.io.adapter import read_adapter
from sclora_tools.io.checkpoint import CheckpointReader
from sclora_tools.io.corrections import read_correction
from tests.chain import fresh_copy
from tests.imports import heavy_imports_of
from tests.stages.conftest import RANK
from tests.tiny import logits


def test_fp32_residual_plus_adapter_reproduces_the_base_model(fp32_run, tiny_fp32, sample_ids):
    ids, mask = sample_ids
    base = AutoModelForCausalLM.from_pretrained(tiny_fp32, dtype=torch.float32)
    residual = AutoModelForCausalLM.from_pretrained(fp32_run.run / "residual", dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(residual, fp32_run.run / "adapter")
    difference = (logits(base, ids, mask) - logits(peft_model, ids, mask)).abs().max().item()
    assert difference <= 1e-4
    residual_only = AutoModelForCausalLM.from_pretrained(fp32_run.run / "residual", dtype=torch.float32)
    assert (logits(base, ids, mask) - logits(residual_only, ids, mask)).abs().max().item() > 1e-2  # W_res really differs


def test_bf16_residual_is_within_rounding_of_w0(bf16_run, tiny_bf16, sample_ids):
    """Per entry, W_res + s B A differs from W0 by at most the (nudged) rounding of W_res, and the
    whole model in float32 arithmetic matches the base as closely as that allows."""
    reader, base = CheckpointReader(bf16_run.run / "residual"), CheckpointReader(tiny_bf16)
    config, pairs = read_adapter(bf16_run.run / "adapter")
    scale = config.scale
    for module, pair in pairs.items():
        w_res, w0 = reader.read(f"{module}.weight"), base.read(f"{module}.weight")
        assert w_res.dtype == torch.bfloat16
        rebuilt = w_res.double() + scale * pair.b.double() @ pair.a.double()
        assert bool(((rebuilt - w0.double()).abs() <= 2.5 * exact.spacing(w_res)).all()), module
    ids, mask = sample_ids
    base_model = AutoModelForCausalLM.from_pretrained(tiny_bf16, dtype=torch.float32)
    residual = AutoModelForCausalLM.from_pretrained(bf16_run.run / "residual", dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(residual, bf16_run.run / "adapter")
    assert (logits(base_model, ids, mask) - logits(peft_model, ids, mask)).abs().max().item() <= 5e-2


@pytest.mark.parametrize("run_name, model_name", [("fp32_run", "tiny_fp32"), ("bf16_run", "tiny_bf16")])
def test_init_artefacts_rebuild_w0_bit_exactly(run_name, model_name, request):
    run, model_dir = request.getfixturevalue(run_name).run, request.getfixturevalue(model_name)
    reader, base = CheckpointReader(run / "residual"), CheckpointReader(model_dir)
    config, pairs = read_adapter(run / "adapter")
    corrections = safe_open(run / "exact" / "corrections.safetensors", "pt")
    manifest = json.loads((run / "manifest.json").read_text())
    for module, pair in pairs.items():
        correction = read_correction(corrections, module)
        product = exact.init_product(pair.b.double().flip(1), pair.a.double().flip(0), config.scale)
        rebuilt = exact.rebuild(reader.read(f"{module}.weight"), product, correction)
        assert torch.equal(exact.bit_view(rebuilt), exact.bit_view(base.read(f"{module}.weight"))), module
    assert set(manifest["source_tensors"]) == set(base.names)


def rendered_token_ids(path: Path, tokenizer, max_length: int) -> list[list[int]]:
    """An independent rendering of the test's rows: chat template for prompt/response, verbatim text otherwise."""
    sequences = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if "text" in row:
            ids = tokenizer(row["text"], truncation=True, max_length=max_length)["input_ids"]
        else:
            messages = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}]
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        sequences.append(ids)
    return sequences


def output_covariances_by_hooks(model, sequences) -> dict[str, torch.Tensor]:
    """Cov of h = W x for every linear layer in the blocks, one unpadded sequence at a time."""
    sums, count, handles = {}, [0], []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name:
            def hook(mod, args, out, name=name):
                h = out.reshape(-1, out.shape[-1]).double()
                sums[name] = sums.get(name, 0) + h.T @ h
            handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        for ids in sequences:
            model(input_ids=torch.tensor([ids]))
            count[0] += len(ids)
    for handle in handles:
        handle.remove()
    return {name: total / count[0] for name, total in sums.items()}


def test_subspace_is_optimal_for_independently_collected_output_covariances(fp32_run, tiny_fp32, data_files):
    model = AutoModelForCausalLM.from_pretrained(tiny_fp32, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_fp32)
    pos = output_covariances_by_hooks(model, rendered_token_ids(data_files["pos"], tokenizer, 48))
    neg = output_covariances_by_hooks(model, rendered_token_ids(data_files["neg"], tokenizer, 48))
    _, pairs = read_adapter(fp32_run.run / "adapter")
    beta = 0.5
    for module, pair in pairs.items():
        delta = (1 - beta) * pos[module] - beta * neg[module]
        best = torch.linalg.eigvalsh(delta).flip(0)[:RANK].sum().item()
        basis, _ = torch.linalg.qr(pair.b.double())  # B_init = Q_r up to its 2^-21 grid
        achieved = torch.trace(basis.T @ delta @ basis).item()
        assert achieved == pytest.approx(best, rel=1e-4, abs=1e-6 * delta.abs().max().item()), module


def test_one_calibration_serves_any_beta_and_rank_without_a_model_run(fp32_run, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("init must not run the model"))
    for beta, rank in ((0.0, 4), (0.9, 16), (1.0, 2)):
        manifest = init(fp32_run.calib, tmp_path / f"run-{beta}", beta=beta, rank=rank, progress=False)
        assert manifest["config"]["beta"] == beta and manifest["config"]["rank"] == rank
    energy = {b: json.loads((tmp_path / f"run-{b}" / "manifest.json").read_text())["summary"] for b in (0.0, 0.9)}
    assert energy[0.0]["energy_pos"] > energy[0.9]["energy_pos"]
    assert energy[0.0]["energy_neg"] > energy[0.9]["energy_neg"]


def test_beta_one_warns_for_layers_whose_output_covariance_is_rank_deficient(fp32_run, tmp_path, capsys):
    """gate/up (64 -> 160) have Cov- of rank <= 64 < 160 however many - tokens there are."""
    calibration = json.loads((fp32_run.calib / "manifest.json").read_text())
    assert next(d["tokens"] for d in calibration["datasets"] if d["role"] == "-") > 160
    init(fp32_run.calib, tmp_path / "run", beta=1.0, rank=4, progress=False)
    warning = " ".join(capsys.readouterr().err.split())
    assert "appendix B" in warning and ("gate_proj" in warning or "up_proj" in warning)
    init(fp32_run.calib, tmp_path / "run2", beta=0.99, rank=4, progress=False)
    assert "appendix B" not in capsys.readouterr().err


def test_a_stage_never_overwrites_another_stages_artefact(fp32_run, tmp_path):
    calib = fresh_copy(fp32_run.calib, tmp_path)  # the attempt must not be able to damage the shared calibration
    before = (calib / "manifest.json").read_bytes()
    with pytest.raises(InputError, match="holds a calibration artefact"):
        init(calib, calib, rank=4, progress=False)
    assert (calib / "manifest.json").read_bytes() == before and (calib / "pos.safetensors").is_file()


def test_an_init_process_imports_neither_peft_nor_transformers(fp32_run, tmp_path):
    """init writes PEFT's adapter format itself (io.adapter.lora_config): importing peft, and the
    transformers modules it pulls in, used to be a fifth of init's time on a small model."""
    statement = f"from sclora_tools import init; init({str(fp32_run.calib)!r}, {str(tmp_path / 'run')!r}, rank=4, progress=False)"
    assert heavy_imports_of(statement) == []
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()


def test_two_workers_choose_the_subspaces_one_worker_does(fp32_run, tiny_fp32, tmp_path, monkeypatch):
    """Layers computed two at a time (the default on >= 2 threads) against one at a time: the same
    layers in the same order, the same source hashes, the same eigenvalue sums up to BLAS rounding;
    two runs with two workers write the same bytes, and rebuild W0 bit for bit."""
    monkeypatch.setattr("sclora_tools.stages.init.worker_count", lambda entries: 2)
    two = init(fp32_run.calib, tmp_path / "two", rank=4, progress=False)
    again = init(fp32_run.calib, tmp_path / "again", rank=4, progress=False)
    monkeypatch.setattr("sclora_tools.stages.init.worker_count", lambda entries: 1)
    one = init(fp32_run.calib, tmp_path / "one", rank=4, progress=False)
    assert list(two["layers"]) == list(one["layers"])
    assert two["source_tensors"] == one["source_tensors"]
    for name, layer in one["layers"].items():
        assert two["layers"][name]["objective"] == pytest.approx(layer["objective"], rel=1e-9, abs=1e-12)
        assert two["layers"][name]["energy_pos"] == pytest.approx(layer["energy_pos"], rel=1e-6, abs=1e-9)
    assert two["files"] == again["files"]  # every file, the corrections' header included
    reader, base = CheckpointReader(tmp_path / "two" / "residual"), CheckpointReader(tiny_fp32)
    config, pairs = read_adapter(tmp_path / "two" / "adapter")
    with safe_open(tmp_path / "two" / "exact" / "corrections.safetensors", "pt") as corrections:
        for module, pair in pairs.items():
            product = exact.init_product(pair.b.double().flip(1), pair.a.double().flip(0), config.scale)
            rebuilt = exact.rebuild(reader.read(f"{module}.weight"), product, read_correction(corrections, module))
            assert torch.equal(exact.bit_view(rebuilt), exact.bit_view(base.read(f"{module}.weight"))), module
