"""sha256 of files, tensors and text collections."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import torch

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK * 8):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tensor(tensor: torch.Tensor) -> str:
    """sha256 of the tensor's raw little-endian bytes in its own dtype (as safetensors stores them)."""
    flat = tensor.detach().contiguous().reshape(-1).cpu()
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def sha256_texts(texts: Iterable[str]) -> str:
    """sha256 over a sequence of texts, each length-prefixed so that boundaries count."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
