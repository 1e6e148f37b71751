"""Payloads for the Hub test double's own tests: a >10 MB safetensors-looking file, a small model
repo's three files, and one commit through the real client."""

from __future__ import annotations

import json
import os
import struct

from huggingface_hub import CommitOperationAdd, HfApi

REPO = "fake-org/tiny-model"


BIG_SIZE = 11 * 1024 * 1024  # > 10 MB => LFS by size, whatever the extension


def safetensors_bytes(size: int) -> bytes:
    """A valid-looking safetensors file of exactly `size` bytes (header + one uint8 tensor)."""
    for pad in range(8):
        n = size - 8 - 100 - pad
        header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
        header += b" " * (100 + pad - len(header)) if len(header) <= 100 + pad else b""
        if 8 + len(header) + n == size:
            return struct.pack("<Q", len(header)) + header + os.urandom(n)
    raise AssertionError("could not build payload")


def three_files(big: bytes) -> dict[str, bytes]:
    return {
        "config.json": json.dumps({"model_type": "llama", "hidden_size": 8}).encode(),
        "README.md": b"---\nlicense: apache-2.0\ntags:\n- sclora\n---\n\n# tiny model\n",
        "model.safetensors": big,
    }


def upload(api: HfApi, repo_id: str, files: dict[str, bytes], message: str = "Upload model", **kwargs):
    ops = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
    return api.create_commit(repo_id, ops, commit_message=message, **kwargs)
