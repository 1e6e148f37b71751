"""calibrate -> init on tiny Llama models: PEFT-loadable artefacts that reproduce the base model,
and a subspace that is optimal for covariances collected by an independent implementation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from sclora_tools import calibrate, init
from sclora_tools.core import exact
from sclora_tools.io.adapter import read_adapter
from sclora_tools.io.checkpoint import CheckpointReader
from sclora_tools.io.corrections import read_correction
from sclora_tools.io.covariances import open_covariances

RANK = 8


def run_pipeline(model_dir: Path, data_files: dict, root: Path, beta: float = 0.5, rank: int = RANK, **calib) -> Path:
    options = {"samples": 1000, "max_length": 48, "batch_size": 8, **calib}
    calibrate(str(model_dir), str(data_files["pos"]), str(data_files["neg"]), root / "calib", progress=False, **options)
    init(root / "calib", root / "run", beta=beta, rank=rank, progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def fp32_run(tiny_fp32, data_files, tmp_path_factory):
    return run_pipeline(tiny_fp32, data_files, tmp_path_factory.mktemp("fp32"))


@pytest.fixture(scope="module")
def bf16_run(tiny_bf16, data_files, tmp_path_factory):
    return run_pipeline(tiny_bf16, data_files, tmp_path_factory.mktemp("bf16"))


def logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float()


def test_fp32_residual_plus_adapter_reproduces_the_base_model(fp32_run, tiny_fp32, sample_ids):
    ids, mask = sample_ids
    base = AutoModelForCausalLM.from_pretrained(tiny_fp32, dtype=torch.float32)
    residual = AutoModelForCausalLM.from_pretrained(fp32_run / "residual", dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(residual, fp32_run / "adapter")
    difference = (logits(base, ids, mask) - logits(peft_model, ids, mask)).abs().max().item()
    assert difference <= 1e-4
    residual_only = AutoModelForCausalLM.from_pretrained(fp32_run / "residual", dtype=torch.float32)
    assert (logits(base, ids, mask) - logits(residual_only, ids, mask)).abs().max().item() > 1e-2  # W_res really differs


def test_bf16_residual_is_within_rounding_of_w0(bf16_run, tiny_bf16, sample_ids):
    """Per entry, W_res + s B A differs from W0 by at most the (nudged) rounding of W_res, and the
    whole model in float32 arithmetic matches the base as closely as that allows."""
    reader, base = CheckpointReader(bf16_run / "residual"), CheckpointReader(tiny_bf16)
    config, pairs = read_adapter(bf16_run / "adapter")
    scale = config.lora_alpha / config.r
    for module, pair in pairs.items():
        w_res, w0 = reader.read(f"{module}.weight"), base.read(f"{module}.weight")
        assert w_res.dtype == torch.bfloat16
        rebuilt = w_res.double() + scale * pair.b.double() @ pair.a.double()
        assert bool(((rebuilt - w0.double()).abs() <= 2.5 * exact.spacing(w_res)).all()), module
    ids, mask = sample_ids
    base_model = AutoModelForCausalLM.from_pretrained(tiny_bf16, dtype=torch.float32)
    residual = AutoModelForCausalLM.from_pretrained(bf16_run / "residual", dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(residual, bf16_run / "adapter")
    assert (logits(base_model, ids, mask) - logits(peft_model, ids, mask)).abs().max().item() <= 5e-2


@pytest.mark.parametrize("run_name, model_name", [("fp32_run", "tiny_fp32"), ("bf16_run", "tiny_bf16")])
def test_init_artefacts_rebuild_w0_bit_exactly(run_name, model_name, request):
    run, model_dir = request.getfixturevalue(run_name), request.getfixturevalue(model_name)
    reader, base = CheckpointReader(run / "residual"), CheckpointReader(model_dir)
    config, pairs = read_adapter(run / "adapter")
    corrections = safe_open(run / "exact" / "corrections.safetensors", "pt")
    manifest = json.loads((run / "manifest.json").read_text())
    for module, pair in pairs.items():
        correction = read_correction(corrections, module)
        product = exact.init_product(pair.b.double().flip(1), pair.a.double().flip(0), config.lora_alpha / config.r)
        rebuilt = exact.rebuild(reader.read(f"{module}.weight"), product, correction)
        assert torch.equal(exact.bit_view(rebuilt), exact.bit_view(base.read(f"{module}.weight"))), module
    assert set(manifest["source_tensors"]) == set(base.names)


def test_shared_inputs_are_collected_once_and_down_proj_on_its_output(fp32_run):
    calibration = json.loads((fp32_run.parent / "calib" / "manifest.json").read_text())
    sites = {site["key"]: site for site in calibration["config"]["sites"]}
    qkv = sites["model.layers.0.self_attn.q_proj:input"]["serves"]
    assert [name.rsplit(".", 1)[-1] for name in qkv] == ["q_proj", "k_proj", "v_proj"]
    assert [n.rsplit(".", 1)[-1] for n in sites["model.layers.0.mlp.gate_proj:input"]["serves"]] == ["gate_proj", "up_proj"]
    assert "model.layers.0.mlp.down_proj:output" in sites  # 160 -> 64: the output side is smaller
    assert len(calibration["config"]["targets"]) == 14
    with open_covariances(fp32_run.parent / "calib", "pos") as covariance:
        assert covariance.get("model.layers.0.mlp.down_proj:output").shape == (64, 64)
        assert covariance.get("model.layers.0.mlp.gate_proj:input").shape == (64, 64)


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
    _, pairs = read_adapter(fp32_run / "adapter")
    beta = 0.5
    for module, pair in pairs.items():
        delta = (1 - beta) * pos[module] - beta * neg[module]
        best = torch.linalg.eigvalsh(delta).flip(0)[:RANK].sum().item()
        basis, _ = torch.linalg.qr(pair.b.double())  # B_init = Q_r up to its 2^-21 grid
        achieved = torch.trace(basis.T @ delta @ basis).item()
        assert achieved == pytest.approx(best, rel=1e-4, abs=1e-6 * delta.abs().max().item()), module


def test_padding_is_never_counted(tiny_fp32, data_files, tmp_path):
    calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), tmp_path / "b1",
              samples=20, max_length=48, batch_size=1, storage="float64", progress=False)
    calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), tmp_path / "b7",
              samples=20, max_length=48, batch_size=7, storage="float64", progress=False)
    for role in ("pos", "neg"):
        one, seven = load_file(tmp_path / "b1" / f"{role}.safetensors"), load_file(tmp_path / "b7" / f"{role}.safetensors")
        for key in one:
            torch.testing.assert_close(one[key], seven[key], rtol=1e-5, atol=1e-7)


def test_calibration_manifest_records_model_data_and_settings(fp32_run, tiny_fp32, data_files):
    manifest = json.loads((fp32_run.parent / "calib" / "manifest.json").read_text())
    assert manifest["kind"] == "calibration" and manifest["schema_version"] == 1
    assert set(manifest["model"]["weight_files"]) == {"model.safetensors"}
    roles = {d["role"]: d for d in manifest["datasets"]}
    assert roles["+"]["samples"] == 60 and roles["-"]["samples"] == 60
    assert roles["+"]["tokens"] > 60 and len(roles["+"]["texts_sha256"]) == 64
    assert manifest["config"]["normalization"] == "token" and manifest["config"]["samples"] == 1000
    assert set(manifest["files"]) == {"pos.safetensors", "neg.safetensors"}


def test_one_calibration_serves_any_beta_and_rank_without_a_model_run(fp32_run, tmp_path, monkeypatch):
    import sclora_tools.models as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("init must not run the model"))
    for beta, rank in ((0.0, 4), (0.9, 16), (1.0, 2)):
        manifest = init(fp32_run.parent / "calib", tmp_path / f"run-{beta}", beta=beta, rank=rank, progress=False)
        assert manifest["config"]["beta"] == beta and manifest["config"]["rank"] == rank
    energy = {b: json.loads((tmp_path / f"run-{b}" / "manifest.json").read_text())["summary"] for b in (0.0, 0.9)}
    assert energy[0.0]["energy_pos"] > energy[0.9]["energy_pos"]
    assert energy[0.0]["energy_neg"] > energy[0.9]["energy_neg"]


def test_sample_normalisation_is_recorded_and_scales_by_length(tiny_fp32, data_files, tmp_path):
    calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), tmp_path / "tok", samples=10, max_length=48,
              storage="float64", progress=False)
    calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), tmp_path / "smp", samples=10, max_length=48,
              normalization="sample", storage="float64", progress=False)
    manifest = json.loads((tmp_path / "tok" / "manifest.json").read_text())
    tokens = {d["role"]: d["tokens"] for d in manifest["datasets"]}
    by_token, by_sample = load_file(tmp_path / "tok" / "pos.safetensors"), load_file(tmp_path / "smp" / "pos.safetensors")
    key = next(iter(by_token))
    torch.testing.assert_close(by_sample[key], by_token[key] * tokens["+"] / 10)
    assert json.loads((tmp_path / "smp" / "manifest.json").read_text())["config"]["normalization"] == "sample"


def test_chat_rows_and_bf16_calibration(tiny_bf16, data_files, tmp_path):
    manifest = calibrate(str(tiny_bf16), str(data_files["chat"]), str(data_files["neg"]), tmp_path / "c",
                         samples=8, max_length=32, progress=False)
    assert manifest["model"]["checkpoint_dtype"] == "bfloat16"
    with open_covariances(tmp_path / "c", "pos") as covariance:
        assert all(t.dtype == torch.float64 and bool(torch.isfinite(t).all()) for t in map(covariance.get, covariance.keys()))


def test_beta_one_warns_for_layers_whose_output_covariance_is_rank_deficient(fp32_run, tmp_path, capsys):
    """gate/up (64 -> 160) have Cov- of rank <= 64 < 160 however many - tokens there are."""
    calibration = json.loads((fp32_run.parent / "calib" / "manifest.json").read_text())
    assert next(d["tokens"] for d in calibration["datasets"] if d["role"] == "-") > 160
    init(fp32_run.parent / "calib", tmp_path / "run", beta=1.0, rank=4, progress=False)
    warning = " ".join(capsys.readouterr().err.split())
    assert "appendix B" in warning and ("gate_proj" in warning or "up_proj" in warning)
    init(fp32_run.parent / "calib", tmp_path / "run2", beta=0.99, rank=4, progress=False)
    assert "appendix B" not in capsys.readouterr().err


def test_a_bad_dataset_is_reported_before_the_model_is_loaded(tiny_fp32, tmp_path, monkeypatch):
    import sclora_tools.models as models
    from sclora_tools.errors import InputError

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model must not load for a bad dataset"))
    with pytest.raises(InputError, match="does not exist"):
        calibrate(str(tiny_fp32), str(tmp_path / "missing.jsonl"), str(tmp_path / "missing.jsonl"), tmp_path / "c", progress=False)


def test_a_stage_never_overwrites_another_stages_artefact(fp32_run, tmp_path):
    from sclora_tools.errors import InputError

    calib = fp32_run.parent / "calib"
    before = (calib / "manifest.json").read_bytes()
    with pytest.raises(InputError, match="holds a calibration artefact"):
        init(calib, calib, rank=4, progress=False)
    assert (calib / "manifest.json").read_bytes() == before and (calib / "pos.safetensors").is_file()
