"""sclora_tools.core.layer_init: one layer's init, close to W0 in its dtype and rebuilt bit for bit."""

from __future__ import annotations

import pytest
import torch

from sclora_tools.core import exact, subspace
from sclora_tools.core.layer_init import InitSettings, initialize_layer
from tests.core.matrices import DTYPES, F64, bits_equal, psd, randn


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "d_out,d_in,side,alpha",
    [(48, 32, "input", 16.0), (24, 40, "input", 8.0), (24, 40, "output", 24.0), (32, 32, "input", 8.0 / 3.0)],
)
def test_initialize_layer_close_and_bit_exact(dtype, d_out, d_in, side, alpha):
    weight = randn(d_out, d_in, seed=d_out + d_in, scale=0.08).to(dtype)
    weight[0, 0] = -0.0
    weight[1, :] = 0.0
    dim = d_out if side == "output" else d_in
    cov_pos, cov_neg = psd(dim, seed=40), psd(dim, seed=41, scale=2.0)
    settings = InitSettings(method="sclora", beta=0.5, rank=8, alpha=alpha)
    layer = initialize_layer(weight, cov_pos.float(), cov_neg.float(), side, settings, layer_index=3)
    assert layer.w_res.dtype == dtype and layer.w_res.shape == weight.shape
    assert layer.a.dtype == layer.b.dtype == torch.float32
    assert layer.b.shape == (d_out, 8) and layer.a.shape == (8, d_in)
    approx = layer.w_res.double() + settings.scale * (layer.b.double() @ layer.a.double())
    error = (approx - weight.double()).abs()
    assert bool((error <= 2.5 * exact.spacing(layer.w_res)).all()), float((error / exact.spacing(layer.w_res)).max())
    product = exact.init_product(layer.b.double(), layer.a.double(), settings.scale)
    assert bits_equal(exact.rebuild(layer.w_res, product, layer.correction), weight)
    # B is (up to the 2^-21 grid) the chosen orthonormal basis
    assert torch.allclose(layer.b.double().T @ layer.b.double(), torch.eye(8, dtype=F64), atol=1e-5)
    info = layer.diagnostics
    assert info["shape"] == [d_out, d_in]
    assert 0.0 <= info["energy_pos"] <= 1.0 and 0.0 <= info["energy_neg"] <= 1.0
    assert info["correction_bytes"] == layer.correction.nbytes
    # the subspace of B is the one select_subspace chooses
    chosen = subspace.select_subspace(weight.double(), cov_pos.float(), cov_neg.float(), side, 0.5, 8)
    assert torch.allclose(layer.b.double(), chosen.basis, atol=2.0**-21)
    assert info["objective"] == pytest.approx(chosen.eigenvalues.sum().item(), rel=1e-9)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_initialize_layer_lora_keeps_weight(dtype):
    weight = randn(16, 12, seed=42, scale=0.1).to(dtype)
    settings = InitSettings(method="lora", rank=4, alpha=4.0, seed=1)
    layer = initialize_layer(weight, None, None, "input", settings, layer_index=2)
    assert bits_equal(layer.w_res, weight)
    assert torch.equal(layer.b, torch.zeros(16, 4))
    assert layer.correction.patch_indices.numel() == 0
    again = initialize_layer(weight, None, None, "input", settings, layer_index=2)
    assert torch.equal(layer.a, again.a)
    shifted = initialize_layer(weight, None, None, "input", settings, layer_index=3)
    assert not torch.equal(layer.a, shifted.a)
    assert "energy_pos" not in layer.diagnostics


def test_initialize_layer_unknown_method():
    with pytest.raises(ValueError, match="unknown method"):
        initialize_layer(torch.zeros(4, 4), None, None, "input", InitSettings(method="pissa", rank=2, alpha=2.0))


def test_init_settings_scale():
    assert InitSettings(rank=8, alpha=16.0).scale == 2.0
    assert InitSettings(rank=8, alpha=4.0).scale == 0.5
