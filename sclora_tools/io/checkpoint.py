"""Safetensors checkpoints: lazy tensor-by-tensor reads and sharded, atomic writes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import InputError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 5 * 1024**3
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model directory, in index order."""
    model_dir = Path(model_dir)
    index = model_dir / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    if (model_dir / SINGLE_FILE).is_file():
        return [model_dir / SINGLE_FILE]
    pickles = [p.name for p in model_dir.glob("*.bin")] + [p.name for p in model_dir.glob("*.pt")]
    hint = " (only pickle weights found, which sclora never loads)" if pickles else ""
    raise InputError(f"{model_dir} has no safetensors weights{hint}; convert the model to safetensors first.")


class CheckpointReader:
    """Reads one tensor at a time from a (sharded) safetensors checkpoint; never the whole model."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        self.files = weight_files(self.model_dir)
        self.location: dict[str, Path] = {}
        for path in self.files:
            try:
                with safe_open(path, framework="pt") as handle:
                    for name in handle.keys():
                        self.location[name] = path
            except (SafetensorError, OSError) as exc:
                raise InputError(f"{path} is not a readable safetensors file ({exc}); it is truncated or damaged: "
                                 "download or save the model again.") from exc

    @property
    def names(self) -> list[str]:
        return list(self.location)

    def __contains__(self, name: str) -> bool:
        return name in self.location

    def read(self, name: str) -> torch.Tensor:
        if name not in self.location:
            raise InputError(f"tensor {name} is not in the checkpoint at {self.model_dir}; check the model directory.")
        with safe_open(self.location[name], framework="pt") as handle:
            return handle.get_tensor(name)

    def dtype_of(self, name: str) -> torch.dtype:
        with safe_open(self.location[name], framework="pt") as handle:
            return SAFETENSORS_DTYPES[handle.get_slice(name).get_dtype()]

    def shape_of(self, name: str) -> tuple[int, ...]:
        with safe_open(self.location[name], framework="pt") as handle:
            return tuple(handle.get_slice(name).get_shape())


def module_of(tensor_name: str) -> str | None:
    """The module a checkpoint key is the weight of (model.layers.0.q_proj.weight -> model.layers.0.q_proj)."""
    return tensor_name.removesuffix(".weight") if tensor_name.endswith(".weight") else None


def copy_model_files(model_dir: Path, out_dir: Path) -> None:
    """config, generation config, tokenizer and chat template: every non-weight file at the top,
    but no provenance file (manifest.json, sclora_*.json) whose hashes describe other weights."""
    for path in sorted(Path(model_dir).iterdir()):
        if path.is_file() and not path.name.startswith((".", "sclora_")) and not path.name.endswith(WEIGHT_SUFFIXES) \
                and not path.name.endswith(".index.json") and path.name != "manifest.json":
            shutil.copy2(path, out_dir / path.name)


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class ShardedWriter:
    """Writes tensors into shards of at most `max_shard_bytes`, named as transformers names them.

    Shards are written under temporary names and renamed in close(), so a crash leaves no file
    that looks like a finished checkpoint.
    """

    def __init__(self, out_dir: Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES, stem: str = "model") -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_shard_bytes = max_shard_bytes
        self.stem = stem
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.written: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor_bytes(tensor)
        if self.pending and self.pending_bytes + size > self.max_shard_bytes:
            self.flush()
        self.pending[name] = tensor.detach().contiguous().cpu()
        self.pending_bytes += size
        self.total_bytes += size

    def flush(self) -> None:
        if not self.pending:
            return
        path = self.out_dir / f".{self.stem}.part{len(self.written):05d}.tmp"
        save_file(self.pending, str(path), metadata={"format": "pt"})
        self.written.append((path, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> list[Path]:
        """Rename the shards to their final names and write the index if there are several."""
        self.flush()
        return finish_shards(self.out_dir, self.stem, self.written, self.total_bytes)


def finish_shards(out_dir: Path, stem: str, written: list[tuple[Path, list[str]]], total_bytes: int) -> list[Path]:
    """Rename temporary shards (path, tensor names) to transformers' names; index if several."""
    count = len(written)
    if count == 1:
        final = out_dir / f"{stem}.safetensors"
        os.replace(written[0][0], final)
        return [final]
    weight_map, finals = {}, []
    for number, (path, names) in enumerate(written, start=1):
        final = out_dir / f"{stem}-{number:05d}-of-{count:05d}.safetensors"
        os.replace(path, final)
        finals.append(final)
        weight_map.update({name: final.name for name in names})
    index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
    (out_dir / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return finals


def parse_size(text: str) -> int:
    """'500MB', '5GB', '2GiB' or a plain byte count -> bytes."""
    units = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30, "b": 1}
    cleaned = text.strip().lower()
    for suffix in sorted(units, key=len, reverse=True):
        if cleaned.endswith(suffix):
            number = cleaned[: -len(suffix)].strip()
            try:
                return int(float(number) * units[suffix])
            except ValueError:
                break
    try:
        return int(cleaned)
    except ValueError:
        raise InputError(f"cannot read the size {text!r}; write it like 500MB, 5GB or 2GiB.") from None
