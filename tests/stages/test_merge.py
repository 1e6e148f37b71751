"""`merge` on tiny Llama models: W0 rebuilt byte for byte whatever the thread count or summation order,
merged == PEFT on the residual == the rank-2r LoRA on the original base, tampering that stops the
merge and writes nothing, and sharded output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from sclora_tools import merge
from sclora_tools.core import exact
from sclora_tools.errors import MismatchError, VerificationError
from sclora_tools.io.checkpoint import CheckpointReader
from sclora_tools.io.manifest import read_manifest, write_manifest
from tests.chain import fresh_copy
from tests.imports import heavy_imports_of
from tests.tiny import logits


def source_bytes(model_dir: Path) -> dict[str, bytes]:
    reader = CheckpointReader(model_dir)
    return {name: exact.bit_view(reader.read(name)).numpy().tobytes() for name in reader.names}


def rehash(artefact: Path, kind: str) -> None:
    """Record the edited files' hashes, as someone rewriting the manifest after an edit would."""
    manifest = read_manifest(artefact, kind)
    write_manifest(artefact, {k: v for k, v in manifest.items() if k != "files"})


@pytest.mark.parametrize("model_name", ["tiny_fp32", "tiny_bf16", "tiny_fp16"])
def test_rebuilt_base_is_byte_identical_across_thread_counts_and_matmul_orders(model_name, request, small_run, tmp_path, monkeypatch):
    model_dir = request.getfixturevalue(model_name)
    run = small_run(model_name.removeprefix("tiny_"))
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


def test_untrained_merge_equals_w0_exactly(tiny_bf16, small_run, tmp_path):
    run = small_run("bf16")
    merge(run, tmp_path / "out", progress=False)
    assert source_bytes(tmp_path / "out" / "merged") == source_bytes(tiny_bf16)


def test_merged_equals_peft_on_residual_and_lora_on_original_base(fp32_trained, tiny_fp32, sample_ids):
    ids, mask = sample_ids
    merged = AutoModelForCausalLM.from_pretrained(fp32_trained.merged / "merged", dtype=torch.float32)
    residual = AutoModelForCausalLM.from_pretrained(fp32_trained.run / "residual", dtype=torch.float32)
    on_residual = PeftModel.from_pretrained(residual, fp32_trained.trained / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_fp32, dtype=torch.float32)
    on_base = PeftModel.from_pretrained(base, fp32_trained.merged / "lora")
    reference = logits(merged, ids, mask)
    assert (reference - logits(on_residual, ids, mask)).abs().max().item() <= 1e-4
    assert (reference - logits(on_base, ids, mask)).abs().max().item() <= 1e-4
    untouched = AutoModelForCausalLM.from_pretrained(tiny_fp32, dtype=torch.float32)
    assert (reference - logits(untouched, ids, mask)).abs().max().item() > 1e-3  # training changed the model
    config = json.loads((fp32_trained.merged / "lora" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 8


@pytest.mark.parametrize("target", ["residual", "adapter", "corrections"])
def test_tampering_stops_the_merge_and_writes_nothing(target, fp32_trained, tmp_path):
    run = fresh_copy(fp32_trained.run, tmp_path)
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
    run = fresh_copy(fp32_trained.run, tmp_path)
    path = run / "residual" / "model.safetensors"
    tensors = load_file(path)
    key = "model.layers.0.self_attn.q_proj.weight"
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = torch.nextafter(tensors[key].view(-1)[0], torch.tensor(1.0))
    save_file(tensors, str(path), metadata={"format": "pt"})
    rehash(run, "init")
    with pytest.raises(VerificationError, match="does not match the source"):
        merge(run, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_merge_writes_several_shards_with_an_index(fp32_trained, tmp_path):
    merge(fp32_trained.trained, tmp_path / "out", shard_bytes=100_000, progress=False)
    merged = tmp_path / "out" / "merged"
    shards = sorted(p.name for p in merged.glob("model-*.safetensors"))
    assert len(shards) > 3 and (merged / "model.safetensors.index.json").is_file()
    reference = CheckpointReader(fp32_trained.merged / "merged")
    sharded = CheckpointReader(merged)
    assert all(torch.equal(reference.read(n), sharded.read(n)) for n in reference.names)
    AutoModelForCausalLM.from_pretrained(merged)


@pytest.mark.parametrize("change", [{"lora_alpha": 16.0}, {"use_rslora": True}])
def test_an_adapter_trained_with_another_scale_is_refused_and_nothing_written(change, fp32_trained, tmp_path):
    """Merge applies init's scale to the trained factors: an adapter whose config says otherwise
    would merge as something it is not."""
    trained = fresh_copy(fp32_trained.trained, tmp_path)
    config = trained / "adapter" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **change}))
    rehash(trained, "train")
    with pytest.raises(MismatchError, match="without changing r, lora_alpha or use_rslora"):
        merge(trained, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_merge_process_imports_neither_peft_nor_transformers(fp32_trained, tmp_path):
    """merge reads the adapters' configs itself (io.adapter.AdapterConfig): importing peft, and the
    transformers modules it pulls in, was 3.3 s and 170 MB of every merge."""
    statement = f"from sclora_tools import merge; merge({str(fp32_trained.trained)!r}, {str(tmp_path / 'out')!r}, progress=False)"
    assert heavy_imports_of(statement) == []
    assert (tmp_path / "out" / "lora" / "adapter_config.json").is_file()


@pytest.mark.parametrize("damage", ["a module less", "a module more", "another width"])
def test_an_adapter_over_other_modules_is_refused_and_nothing_written(damage, fp32_trained, tmp_path):
    trained = fresh_copy(fp32_trained.trained, tmp_path)
    path = trained / "adapter" / "adapter_model.safetensors"
    tensors = load_file(path)
    a_key = next(k for k in sorted(tensors) if k.endswith(".lora_A.weight") and ".layers.0." in k)
    b_key = a_key.replace(".lora_A.", ".lora_B.")
    if damage == "a module less":
        del tensors[a_key], tensors[b_key]
    elif damage == "a module more":
        for key in (a_key, b_key):
            tensors[key.replace("layers.0", "layers.7")] = tensors[key].clone()
    else:
        tensors[a_key] = torch.cat([tensors[a_key], tensors[a_key][:, :1]], dim=1)
    save_file(tensors, str(path), metadata={"format": "pt"})
    rehash(trained, "train")
    with pytest.raises(MismatchError, match={"a module less": "no factors", "a module more": "adapts 1 modules init did not",
                                             "another width": "no factors of init's shapes"}[damage]):
        merge(trained, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
