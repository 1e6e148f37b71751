"""Merging as pure functions: the in-place delta and sum give the bits of the plain formula
to_dtype(W0 + s (B A - B_init A_init)), and an untrained adapter gives W0 itself."""

from __future__ import annotations

import pytest
import torch

from sclora_tools.core import exact
from sclora_tools.core.merge import adapter_delta, merged_weight


def factors(d_out: int, d_in: int, rank: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator) * 0.05 for shape in ((d_out, rank), (rank, d_in), (d_out, rank), (rank, d_in))]


def plain_merge(w0, b, a, b_init, a_init, scale):
    delta = scale * (b.double() @ a.double() - b_init.double() @ a_init.double())
    return exact.to_dtype(w0.double() + delta, w0.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [1.0, 0.37, 2.0])
def test_the_in_place_merge_has_the_bits_of_the_plain_formula(dtype, scale):
    w0 = (torch.randn(96, 40, generator=torch.Generator().manual_seed(1)) * 0.2).to(dtype)
    w0.view(-1)[:5] = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 3.0]).to(dtype)  # zeros, underflow, a plain value
    b, a, b_init, a_init = factors(96, 40, 6, seed=2)
    merged = merged_weight(w0, adapter_delta(b, a, b_init, a_init, scale))
    assert merged.dtype == dtype
    assert torch.equal(exact.bit_view(merged), exact.bit_view(plain_merge(w0, b, a, b_init, a_init, scale)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_untrained_adapter_merges_to_w0_bit_for_bit(dtype):
    w0 = torch.randn(64, 48, generator=torch.Generator().manual_seed(3)).to(dtype)
    w0.view(-1)[:2] = torch.tensor([0.0, -0.0]).to(dtype)
    b, a, _, _ = factors(64, 48, 8, seed=4)
    merged = merged_weight(w0, adapter_delta(b, a, b.clone(), a.clone(), 0.5))
    assert torch.equal(exact.bit_view(merged), exact.bit_view(w0))
