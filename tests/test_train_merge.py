"""train -> merge on tiny Llama models: bit-exact W0, merged == PEFT == rank-2r LoRA on the base,
training that learns, frozen factors that stay put, and tampering that stops the merge."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from sclora_tools import calibrate, init, merge, train
from sclora_tools.core import exact
from sclora_tools.errors import UsageError, VerificationError
from sclora_tools.io.checkpoint import CheckpointReader


def make_run(model_dir: Path, data_files: dict, root: Path, rank: int = 4, method: str = "sclora") -> Path:
    calibrate(str(model_dir), str(data_files["pos"]), str(data_files["neg"]), root / "calib",
              samples=24, max_length=32, batch_size=8, progress=False)
    init(root / "calib", root / "run", beta=0.5, rank=rank, method=method, progress=False)
    return root / "run"


def source_bytes(model_dir: Path) -> dict[str, bytes]:
    reader = CheckpointReader(model_dir)
    return {name: exact.bit_view(reader.read(name)).numpy().tobytes() for name in reader.names}


@pytest.fixture(scope="module")
def fp32_trained(tiny_fp32, data_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    run = make_run(tiny_fp32, data_files, root)
    train(run, root / "trained", data_argument=str(data_files["pos"]), max_steps=10, lr=5e-3, batch_size=4,
          max_length=96, progress=False)
    merge(root / "trained", root / "out", progress=False)
    return root


@pytest.mark.parametrize("model_name", ["tiny_fp32", "tiny_bf16", "tiny_fp16"])
def test_rebuilt_base_is_byte_identical_across_thread_counts_and_matmul_orders(model_name, request, data_files, tmp_path, monkeypatch):
    model_dir = request.getfixturevalue(model_name)
    run = make_run(model_dir, data_files, tmp_path)
    threads = torch.get_num_threads()
    original_product = exact.init_product

    def reordered_product(b, a, scale):  # another summation order, as another BLAS or GPU would use
        order = torch.randperm(b.shape[1])
        blocks = [b[:, order[i:i + 3]].double() @ a[order[i:i + 3]].double() for i in range(0, b.shape[1], 3)]
        total = sum(reversed(blocks))
        assert torch.equal(total, original_product(b, a, 1.0))
        return total if scale == 1.0 else total * scale

    monkeypatch.setattr(exact, "init_product", reordered_product)
    try:
        torch.set_num_threads(1)
        manifest = merge(run, rebuild_base=tmp_path / "base", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert manifest["verification"]["passed"]
    assert source_bytes(tmp_path / "base" / "base") == source_bytes(model_dir)


def test_untrained_merge_equals_w0_exactly(tiny_bf16, data_files, tmp_path):
    run = make_run(tiny_bf16, data_files, tmp_path)
    merge(run, tmp_path / "out", progress=False)
    assert source_bytes(tmp_path / "out" / "merged") == source_bytes(tiny_bf16)


def logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float()


def test_merged_equals_peft_on_residual_and_lora_on_original_base(fp32_trained, tiny_fp32, sample_ids):
    ids, mask = sample_ids
    merged = AutoModelForCausalLM.from_pretrained(fp32_trained / "out" / "merged", dtype=torch.float32)
    residual = AutoModelForCausalLM.from_pretrained(fp32_trained / "run" / "residual", dtype=torch.float32)
    on_residual = PeftModel.from_pretrained(residual, fp32_trained / "trained" / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_fp32, dtype=torch.float32)
    on_base = PeftModel.from_pretrained(base, fp32_trained / "out" / "lora")
    reference = logits(merged, ids, mask)
    assert (reference - logits(on_residual, ids, mask)).abs().max().item() <= 1e-4
    assert (reference - logits(on_base, ids, mask)).abs().max().item() <= 1e-4
    untouched = AutoModelForCausalLM.from_pretrained(tiny_fp32, dtype=torch.float32)
    assert (reference - logits(untouched, ids, mask)).abs().max().item() > 1e-3  # training changed the model
    config = json.loads((fp32_trained / "out" / "lora" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 8


def test_training_reduces_loss_and_records_its_settings(fp32_trained, data_files):
    log = json.loads((fp32_trained / "trained" / "loss_log.json").read_text())
    assert len(log) == 10 and all(h["loss"] > 0 for h in log)
    run = fp32_trained / "run"
    assert fixed_batch_loss(run, fp32_trained / "trained" / "adapter", data_files) < fixed_batch_loss(run, run / "adapter", data_files) - 0.1
    manifest = json.loads((fp32_trained / "trained" / "manifest.json").read_text())
    assert manifest["kind"] == "train" and manifest["config"]["train"]["lr"] == 5e-3
    assert manifest["parents"][0]["kind"] == "init"
    merge_manifest = json.loads((fp32_trained / "out" / "manifest.json").read_text())
    assert merge_manifest["verification"]["passed"] and merge_manifest["verification"]["checked"] == 21
    assert merge_manifest["config"]["train"]["lr"] == 5e-3  # training settings travel on to push
    assert [d["role"] for d in merge_manifest["datasets"]] == ["+", "-", "train"]


@pytest.mark.parametrize("frozen", ["A", "B"])
def test_frozen_factor_stays_bit_identical_while_the_other_learns(frozen, tiny_fp32, data_files, tmp_path):
    run = make_run(tiny_fp32, data_files, tmp_path)
    train(run, tmp_path / "t", data_argument=str(data_files["pos"]), max_steps=6, lr=5e-3, batch_size=4, max_length=96,
          freeze_a=frozen == "A", freeze_b=frozen == "B", progress=False)
    before = load_file(run / "adapter" / "adapter_model.safetensors")
    after = load_file(tmp_path / "t" / "adapter" / "adapter_model.safetensors")
    moving = "B" if frozen == "A" else "A"
    for key in before:
        if f"lora_{frozen}" in key:
            assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in before if f"lora_{moving}" in k)
    assert fixed_batch_loss(run, tmp_path / "t" / "adapter", data_files) < fixed_batch_loss(run, run / "adapter", data_files)


def fixed_batch_loss(run: Path, adapter: Path, data_files: dict) -> float:
    """Mean response-token loss of PeftModel(residual, adapter) on the first 16 training rows."""
    from sclora_tools import data
    from sclora_tools.features import Collator, tokenize_for_loss
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run / "residual")
    loaded = data.load_dataset_rows(str(data_files["pos"]), None, 0)
    features = [tokenize_for_loss(data.render(row, tokenizer, loaded.spec), tokenizer, 96) for row in loaded.rows[:16]]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run / "residual", dtype=torch.float32), adapter)
    with torch.no_grad():
        return model(**Collator(tokenizer.pad_token_id)(features)).loss.item()


def test_freeze_b_is_refused_for_vanilla_lora(tiny_fp32, data_files, tmp_path):
    run = make_run(tiny_fp32, data_files, tmp_path, method="lora")
    with pytest.raises(UsageError, match="freeze-b"):
        train(run, tmp_path / "t", data_argument=str(data_files["pos"]), max_steps=1, freeze_b=True, progress=False)


def test_samples_without_response_tokens_are_refused(tiny_fp32, data_files, tmp_path):
    from sclora_tools.errors import InputError

    run = make_run(tiny_fp32, data_files, tmp_path)
    with pytest.raises(InputError, match="max-length"):
        train(run, tmp_path / "t", data_argument=str(data_files["pos"]), max_steps=1, max_length=8, progress=False)


def test_resume_continues_from_the_last_checkpoint(tiny_fp32, data_files, tmp_path):
    run = make_run(tiny_fp32, data_files, tmp_path)
    options = dict(data_argument=str(data_files["pos"]), lr=5e-3, batch_size=4, max_length=96, save_steps=2, progress=False)
    train(run, tmp_path / "t", max_steps=4, **options)
    assert (tmp_path / "t" / "checkpoints" / "checkpoint-4").is_dir()
    manifest = train(run, tmp_path / "t", max_steps=6, resume=True, **options)
    log = json.loads((tmp_path / "t" / "loss_log.json").read_text())
    assert [h["step"] for h in log] == [5, 6]
    assert manifest["summary"]["steps"] == 6


@pytest.mark.parametrize("target", ["residual", "adapter", "corrections"])
def test_tampering_stops_the_merge_and_writes_nothing(target, fp32_trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fp32_trained / "run", run)
    path = {"residual": run / "residual" / "model.safetensors", "adapter": run / "adapter" / "adapter_model.safetensors",
            "corrections": run / "exact" / "corrections.safetensors"}[target]
    tensors = load_file(path)
    key = next(k for k in tensors if tensors[k].numel() > 0 and tensors[k].dtype.is_floating_point) if target != "corrections" \
        else next(k for k in tensors if k.endswith(".steps") and tensors[k].numel() > 8)
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[3] += 1
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(VerificationError):
        merge(run, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_tampering_is_caught_by_the_rebuild_even_when_the_manifest_is_rewritten(fp32_trained, tmp_path):
    """The sha256 of the rebuilt W0, not only the file hashes, guards the merge."""
    from sclora_tools.io.manifest import read_manifest, write_manifest

    run = tmp_path / "run"
    shutil.copytree(fp32_trained / "run", run)
    path = run / "residual" / "model.safetensors"
    tensors = load_file(path)
    key = "model.layers.0.self_attn.q_proj.weight"
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = torch.nextafter(tensors[key].view(-1)[0], torch.tensor(1.0))
    save_file(tensors, str(path), metadata={"format": "pt"})
    manifest = read_manifest(run, "init")
    write_manifest(run, {k: v for k, v in manifest.items() if k != "files"})
    with pytest.raises(VerificationError, match="does not match the source"):
        merge(run, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_merge_writes_several_shards_with_an_index(fp32_trained, tmp_path):
    merge(fp32_trained / "trained", tmp_path / "out", shard_bytes=100_000, progress=False)
    merged = tmp_path / "out" / "merged"
    shards = sorted(p.name for p in merged.glob("model-*.safetensors"))
    assert len(shards) > 3 and (merged / "model.safetensors.index.json").is_file()
    reference = CheckpointReader(fp32_trained / "out" / "merged")
    sharded = CheckpointReader(merged)
    assert all(torch.equal(reference.read(n), sharded.read(n)) for n in reference.names)
    AutoModelForCausalLM.from_pretrained(merged)


def test_drift_is_reported_and_zero_when_b_is_frozen(tiny_fp32, data_files, tmp_path):
    run = make_run(tiny_fp32, data_files, tmp_path)
    options = dict(data_argument=str(data_files["pos"]), max_steps=10, lr=5e-3, batch_size=4, max_length=96, progress=False)
    locked_summary = train(run, tmp_path / "locked", freeze_b=True, **options)["summary"]
    free_summary = train(run, tmp_path / "free", **options)["summary"]
    locked, free = locked_summary["subspace"], free_summary["subspace"]
    assert locked_summary["update_norm"] > 0 and free_summary["update_norm"] > 0
    assert locked["update_outside_fraction"] < 1e-12 and locked["b_change_outside_fraction"] == 0.0
    assert free["update_outside_fraction"] > 1e-4 and free["b_change_outside_fraction"] > 0.5
    log = json.loads((tmp_path / "free" / "loss_log.json").read_text())
    assert log[-1]["update_outside_fraction"] == pytest.approx(free["update_outside_fraction"], rel=1e-6)
