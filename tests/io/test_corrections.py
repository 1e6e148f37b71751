"""exact/corrections.safetensors: written the same byte for byte every time, read back exactly."""

from __future__ import annotations

import torch
from safetensors import safe_open

from sclora_tools.core import exact
from sclora_tools.io.corrections import read_correction, write_corrections


def corrections() -> dict[str, exact.Correction]:
    generator = torch.Generator().manual_seed(0)
    out = {}
    for name, shape in (("layers.0.q", (12, 8)), ("layers.0.up", (20, 8))):
        weight = (torch.randn(*shape, generator=generator) * 0.05).to(torch.bfloat16)
        b = torch.linalg.qr(torch.randn(shape[0], 2, generator=generator, dtype=torch.float64))[0]
        b, a = exact.quantize_factors(b, b.T @ weight.double())
        out[name] = exact.residual_and_correction(weight, exact.init_product(b, a, 2.0))[1]
    return out


def test_two_writes_give_the_same_bytes_and_read_back_exactly(tmp_path):
    written = corrections()
    for name in ("first", "second"):
        write_corrections(tmp_path / name / "corrections.safetensors", written)
    assert (tmp_path / "first" / "corrections.safetensors").read_bytes() == (tmp_path / "second" / "corrections.safetensors").read_bytes()
    with safe_open(tmp_path / "first" / "corrections.safetensors", "pt") as handle:
        assert handle.metadata() == {"format": "pt", "sclora_step_codec": next(iter(written.values())).codec}
        for name, correction in written.items():
            back = read_correction(handle, name)
            assert back.steps == correction.steps and back.codec == correction.codec
            for field in ("escapes", "patch_indices", "patch_values"):
                assert torch.equal(getattr(back, field), getattr(correction, field))
