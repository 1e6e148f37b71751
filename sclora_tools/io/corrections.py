"""exact/corrections.safetensors: the exact-rebuild corrections, four tensors per target module.

The file's metadata records the step stream's codec (core.step_codec); a file without it was
written before the codec was recorded and holds lzma streams.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.exact import Correction
from ..core.step_codec import LZMA_INT8
from .hashing import raw_bytes
from .streaming_writer import TensorSpec, header_bytes

FILE = "exact/corrections.safetensors"
CODEC_KEY = "sclora_step_codec"


def write_corrections(path: Path, corrections: dict[str, Correction]) -> None:
    codecs = {c.codec for c in corrections.values()}
    if len(codecs) > 1:
        raise ValueError(f"one corrections file holds one codec, got {sorted(codecs)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, c in corrections.items():
        tensors[f"{name}.steps"] = torch.frombuffer(bytearray(c.steps), dtype=torch.uint8) if c.steps else torch.zeros(0, dtype=torch.uint8)
        tensors[f"{name}.escapes"] = c.escapes
        tensors[f"{name}.patch_indices"] = c.patch_indices
        tensors[f"{name}.patch_values"] = c.patch_values
    metadata = {"format": "pt"} | ({CODEC_KEY: codecs.pop()} if codecs else {})
    write_in_order(path, tensors, metadata)


def write_in_order(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """A safetensors file whose header keeps the given order: safetensors' own writer orders the
    metadata keys at random, so two identical inits recorded different corrections hashes."""
    specs = [TensorSpec(name, tensor.dtype, tuple(tensor.shape)) for name, tensor in tensors.items()]
    with open(path, "wb") as handle:
        handle.write(header_bytes(specs, metadata))
        for tensor in tensors.values():
            handle.write(raw_bytes(tensor))


def stored_codec(tensors) -> str:
    """The codec recorded in an open safetensors handle (lzma-int8 when none is)."""
    metadata = tensors.metadata() if hasattr(tensors, "metadata") else None
    return (metadata or {}).get(CODEC_KEY, LZMA_INT8)


def read_correction(tensors, name: str) -> Correction:
    """One module's correction from an open safetensors handle (or anything with get_tensor)."""
    return Correction(
        steps=tensors.get_tensor(f"{name}.steps").numpy().tobytes(),
        escapes=tensors.get_tensor(f"{name}.escapes"),
        patch_indices=tensors.get_tensor(f"{name}.patch_indices"),
        patch_values=tensors.get_tensor(f"{name}.patch_values"),
        codec=stored_codec(tensors),
    )
