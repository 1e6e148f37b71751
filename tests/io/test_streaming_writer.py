"""io.streaming_writer and io.prefetch: a checkpoint written tensor by tensor from a plan reads
back exactly like one written by ShardedWriter (same shards, names, index), refuses tensors out
of plan, and the prefetched reader yields every tensor and its sha256 in order."""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from sclora_tools.io import manifest as manifests
from sclora_tools.io.checkpoint import CheckpointReader, ShardedWriter
from sclora_tools.io.hashing import BackgroundSha256, sha256_file, sha256_tensor
from sclora_tools.io.prefetch import prefetched
from sclora_tools.io.streaming_writer import StreamingWriter, TensorSpec, specs_of


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(50, 16, generator=g).to(torch.bfloat16),
        "layers.0.q.weight": torch.randn(16, 16, generator=g),
        "layers.0.norm.weight": torch.ones(16, dtype=torch.float16),
        "layers.0.count": torch.arange(7, dtype=torch.int64),
        "layers.1.q.weight": torch.randn(24, 16, generator=g).to(torch.bfloat16),
        "head.weight": torch.randn(50, 16, generator=g),
        "empty": torch.zeros(0, 4),
    }


@pytest.mark.parametrize("shard_bytes", [10**9, 2000])
def test_streamed_checkpoint_equals_the_sharded_writers(tmp_path, shard_bytes):
    data = tensors()
    plain = ShardedWriter(tmp_path / "plain", shard_bytes)
    for name, tensor in data.items():
        plain.add(name, tensor)
    plain.close()
    specs = [TensorSpec(name, t.dtype, tuple(t.shape)) for name, t in data.items()]
    with StreamingWriter(tmp_path / "streamed", specs, shard_bytes) as writer:
        for name, tensor in data.items():
            writer.add(name, tensor)
        writer.close()
    files = sorted(p.name for p in (tmp_path / "plain").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "streamed").iterdir())
    assert (len(files) > 2) == (shard_bytes == 2000)
    for name in files:
        if name.endswith(".json"):
            assert json.loads((tmp_path / "plain" / name).read_text()) == json.loads((tmp_path / "streamed" / name).read_text())
            continue
        ours, theirs = load_file(tmp_path / "streamed" / name), load_file(tmp_path / "plain" / name)
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key])
        with safe_open(str(tmp_path / "streamed" / name), framework="pt") as handle:
            assert handle.metadata() == {"format": "pt"}
    reader = CheckpointReader(tmp_path / "streamed")
    assert sorted(reader.names) == sorted(data)
    assert specs_of(reader) == [next(spec for spec in specs if spec.name == name) for name in reader.names]


def test_out_of_plan_and_incomplete_writes_are_refused_and_leave_nothing(tmp_path):
    data = tensors()
    specs = [TensorSpec(name, t.dtype, tuple(t.shape)) for name, t in data.items()]
    writer = StreamingWriter(tmp_path / "out", specs, 10**9)
    with pytest.raises(ValueError, match="expected embed.weight"):
        writer.add("head.weight", data["head.weight"])
    with pytest.raises(ValueError, match="expected"):
        writer.add("embed.weight", data["embed.weight"].float())
    writer.add("embed.weight", data["embed.weight"])
    with pytest.raises(ValueError, match="incomplete"):
        writer.close()
    with pytest.raises(RuntimeError), StreamingWriter(tmp_path / "out2", specs, 10**9) as failing:
        failing.add("embed.weight", data["embed.weight"])
        raise RuntimeError("a stage failed mid-way")
    assert list((tmp_path / "out2").iterdir()) == []


def test_prefetched_reads_every_tensor_with_its_hash_in_order(tmp_path):
    data = tensors()
    writer = ShardedWriter(tmp_path / "model", 3000)
    for name, tensor in data.items():
        writer.add(name, tensor)
    writer.close()
    reader = CheckpointReader(tmp_path / "model")
    seen = list(prefetched(reader, depth=2))
    assert [name for name, _, _ in seen] == reader.names and sorted(reader.names) == sorted(data)
    for name, tensor, digest in seen:
        assert torch.equal(tensor, data[name]) and digest == sha256_tensor(data[name])
    # a consumer that stops early leaves no thread behind
    partial = prefetched(reader, depth=3)
    assert next(partial)[0] == reader.names[0]
    partial.close()


@pytest.mark.parametrize("shard_bytes", [10**9, 2000])
def test_each_shard_is_hashed_as_written_to_the_sha256_of_its_file(tmp_path, shard_bytes):
    data = tensors()
    specs = [TensorSpec(name, t.dtype, tuple(t.shape)) for name, t in data.items()]
    with StreamingWriter(tmp_path / "streamed", specs, shard_bytes) as writer:
        for name, tensor in data.items():
            writer.add(name, tensor)
        finals = writer.close()
    assert sorted(writer.file_hashes) == sorted(path.resolve() for path in finals)
    assert writer.file_hashes == {path.resolve(): sha256_file(path) for path in finals}


def test_a_manifest_takes_known_hashes_and_reads_every_other_file(tmp_path, monkeypatch):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    read = []
    monkeypatch.setattr(manifests, "sha256_file", lambda path: read.append(path.name) or sha256_file(path))
    known = {(tmp_path / "model.safetensors").resolve(): "a" * 64}
    written = manifests.write_manifest(tmp_path, manifests.new_manifest("init"), known=known)
    assert written["files"] == {"config.json": sha256_file(tmp_path / "config.json"), "model.safetensors": "a" * 64}
    assert read == ["config.json"]


def test_background_sha256_equals_hashlib_over_the_same_chunks_in_order():
    chunks = [bytes([i]) * (1000 + 37 * i) for i in range(20)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        background = BackgroundSha256(pool, backlog_bytes=5000)
        for chunk in chunks:
            background.update(memoryview(chunk))
        assert background.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_tensor_hash_is_the_hash_of_its_stored_bytes():
    for tensor in tensors().values():
        for view in (tensor, tensor.T if tensor.dim() == 2 else tensor):
            stored = view.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            assert sha256_tensor(view) == hashlib.sha256(stored).hexdigest()


def test_background_sha256_keeps_no_more_than_its_backlog_waiting():
    gate = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(gate.wait, 5)  # the worker is busy: nothing gets hashed until the gate opens
        background = BackgroundSha256(pool, backlog_bytes=2500)
        background.update(b"a" * 1000)
        background.update(b"b" * 1000)
        assert background.pending_bytes == 2000
        gate.set()
        background.update(b"c" * 1000)  # over the backlog: the oldest chunks are waited for
        assert background.pending_bytes <= 2500
        assert background.hexdigest() == hashlib.sha256(b"a" * 1000 + b"b" * 1000 + b"c" * 1000).hexdigest()
