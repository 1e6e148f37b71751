"""Runs made before the step codec was recorded (lzma streams, no codec in the corrections
file's metadata) still merge to W0 bit for bit; new runs record their codec."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sclora_tools import merge
from sclora_tools.core import exact, step_codec
from sclora_tools.io.adapter import read_adapter
from sclora_tools.io.checkpoint import CheckpointReader
from sclora_tools.io.corrections import CODEC_KEY, FILE, read_correction
from sclora_tools.io.manifest import read_manifest, write_manifest
from tests.chain import fresh_copy


def bits_of(model_dir: Path) -> dict[str, bytes]:
    reader = CheckpointReader(model_dir)
    return {name: exact.bit_view(reader.read(name)).numpy().tobytes() for name in reader.names}


def rewrite_as_lzma(run: Path) -> None:
    """Re-encode every step stream with the first codec and drop the codec from the metadata,
    as init wrote corrections before the codec was recorded; then re-record the file hashes."""
    config, pairs = read_adapter(run / "adapter")
    residual = CheckpointReader(run / "residual")
    tensors = {}
    with safe_open(run / FILE, "pt") as handle:
        for module, pair in pairs.items():
            new = read_correction(handle, module)
            w_res = residual.read(f"{module}.weight")
            dense = exact.rebuild_dense(w_res, exact.init_product(pair.b, pair.a, config.scale))
            _, gaps = exact.coarse_positions(w_res, dense)
            stream = step_codec.decode(new.steps, gaps, new.codec)
            old = step_codec.encode(stream, gaps, step_codec.LZMA_INT8)
            tensors[f"{module}.steps"] = torch.frombuffer(bytearray(old), dtype=torch.uint8)
            for part in ("escapes", "patch_indices", "patch_values"):
                tensors[f"{module}.{part}"] = handle.get_tensor(f"{module}.{part}")
    save_file(tensors, str(run / FILE), metadata={"format": "pt"})
    manifest = read_manifest(run, "init")
    write_manifest(run, {k: v for k, v in manifest.items() if k != "files"})


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_a_run_with_lzma_corrections_merges_bit_exactly(dtype, small_run, tiny_model, tmp_path):
    run = fresh_copy(small_run(dtype), tmp_path)
    with safe_open(run / FILE, "pt") as handle:
        assert handle.metadata()[CODEC_KEY] == step_codec.ZLIB_BY_GAP
    rewrite_as_lzma(run)
    with safe_open(run / FILE, "pt") as handle:
        assert CODEC_KEY not in handle.metadata()
        assert read_correction(handle, next(iter(read_adapter(run / "adapter")[1]))).codec == step_codec.LZMA_INT8
    manifest = merge(run, rebuild_base=tmp_path / "base", progress=False)
    assert manifest["verification"]["passed"]
    assert bits_of(tmp_path / "base" / "base") == bits_of(tiny_model(dtype))
