"""A sharded safetensors writer that streams: each tensor goes to disk as soon as it is added.

When every tensor's name, dtype and shape are known before the first one is computed (a stage
that rewrites a checkpoint tensor by tensor, in the same order), each shard's header can be
written first and the tensors appended one by one. Nothing accumulates in memory (a
ShardedWriter holds up to a whole shard), and the operating system writes back while the next
tensor is computed. Same layout rules and file names as ShardedWriter: shards of at most
`max_shard_bytes` in order, temporary names until close(), an index when there are several.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from .checkpoint import SAFETENSORS_DTYPES, finish_shards
from .hashing import BackgroundSha256, raw_bytes

DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * torch.empty(0, dtype=self.dtype).element_size()


def plan_shards(specs: list[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Greedy, in order: a new shard when the next tensor would overflow a non-empty one."""
    shards: list[list[TensorSpec]] = []
    size = 0
    for spec in specs:
        if not shards or (shards[-1] and size + spec.nbytes > max_shard_bytes):
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


def header_bytes(shard: list[TensorSpec], metadata: dict[str, str]) -> bytes:
    header, offset = {"__metadata__": metadata}, 0
    for spec in shard:
        header[spec.name] = {"dtype": DTYPE_NAMES[spec.dtype], "shape": list(spec.shape), "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return len(encoded).to_bytes(8, "little") + encoded


class StreamingWriter:
    """add() tensors in exactly the planned order; close() renames the shards into place.
    Each shard is hashed as it is written (on a worker thread): `file_hashes` holds the final
    paths' sha256 after close(), so the manifest need not read the shards back."""

    def __init__(self, out_dir: Path, specs: list[TensorSpec], max_shard_bytes: int, stem: str = "model",
                 metadata: dict[str, str] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.stem, self.metadata = stem, metadata or {"format": "pt"}
        self.shards = plan_shards(specs, max_shard_bytes)
        self.temporary = [self.out_dir / f".{stem}.part{i:05d}.tmp" for i in range(len(self.shards))]
        self.shard, self.position, self.handle = -1, 0, None
        self.hash_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sclora-hash")
        self.digests: list[BackgroundSha256] = []
        self.file_hashes: dict[Path, str] = {}

    def add(self, name: str, tensor: torch.Tensor) -> None:
        spec = self.next_spec()
        if (name, tensor.dtype, tuple(tensor.shape)) != (spec.name, spec.dtype, spec.shape):
            raise ValueError(f"expected {spec.name} {spec.dtype} {list(spec.shape)} next, got {name} {tensor.dtype} {list(tensor.shape)}")
        data = raw_bytes(tensor)
        self.handle.write(data)
        self.digests[-1].update(data)
        self.position += 1

    def next_spec(self) -> TensorSpec:
        if self.handle is None or self.position == len(self.shards[self.shard]):
            self.open_next()
        return self.shards[self.shard][self.position]

    def open_next(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.shard, self.position = self.shard + 1, 0
        if self.shard >= len(self.shards):
            raise ValueError("more tensors added than planned")
        self.handle = open(self.temporary[self.shard], "wb")  # noqa: SIM115 - one shard open at a time, closed on the next or in close()
        header = header_bytes(self.shards[self.shard], self.metadata)
        self.handle.write(header)
        self.digests.append(BackgroundSha256(self.hash_pool))
        self.digests[-1].update(header)

    def close(self) -> list[Path]:
        """Check that every planned tensor came, then rename into place (and write the index)."""
        if self.handle is not None:
            self.handle.close()
        if self.shard != len(self.shards) - 1 or (self.shards and self.position != len(self.shards[-1])):
            raise ValueError("the checkpoint is incomplete: fewer tensors added than planned")
        written = [(path, [spec.name for spec in shard]) for path, shard in zip(self.temporary, self.shards, strict=True)]
        digests = [digest.hexdigest() for digest in self.digests]
        self.hash_pool.shutdown()
        finals = finish_shards(self.out_dir, self.stem, written, sum(spec.nbytes for shard in self.shards for spec in shard))
        self.file_hashes = {path.resolve(): digest for path, digest in zip(finals, digests, strict=True)}
        return finals

    def abort(self) -> None:
        """Close and delete whatever was written (after an error)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        self.hash_pool.shutdown(cancel_futures=True)
        for path in self.temporary:
            if path.exists():
                os.unlink(path)

    def __enter__(self) -> StreamingWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.abort()


def specs_of(reader) -> list[TensorSpec]:
    """Name, dtype and shape of every tensor of a CheckpointReader, in its order."""
    found: dict[str, TensorSpec] = {}
    for path in reader.files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                piece = handle.get_slice(name)
                found[name] = TensorSpec(name, SAFETENSORS_DTYPES[piece.get_dtype()], tuple(piece.get_shape()))
    return [found[name] for name in reader.names]
