"""core.drift's trace formulas equal the definitions on the formed d_out x d_in update."""

from __future__ import annotations

import pytest
import torch

from sclora_tools.core import drift

F64 = torch.float64


def factors(d_out: int, d_in: int, rank: int, seed: int, step: float):
    g = torch.Generator().manual_seed(seed)
    b0, _ = torch.linalg.qr(torch.randn(d_out, rank, generator=g, dtype=F64))
    a0 = torch.randn(rank, d_in, generator=g, dtype=F64)
    b = b0 + step * torch.randn(d_out, rank, generator=g, dtype=F64)
    a = a0 + step * torch.randn(rank, d_in, generator=g, dtype=F64)
    return b0.float(), a0.float(), b.float(), a.float()


def dense_drift(b0, a0, b, a, scale):
    update = drift.weight_update(b0, a0, b, a, scale)
    q = drift.orthonormal_basis(b0)
    delta_b = b.double() - b0.double()
    return {"update_sq": float(update.square().sum()),
            "update_outside_sq": float(drift.outside(q, update).square().sum()),
            "b_change_sq": float(delta_b.square().sum()),
            "b_change_outside_sq": float(drift.outside(q, delta_b).square().sum())}


@pytest.mark.parametrize("step", [1e-1, 1e-3, 1e-6])
@pytest.mark.parametrize("shape", [(48, 80), (96, 32)])
def test_trace_formulas_equal_the_formed_update(step, shape):
    b0, a0, b, a = factors(*shape, rank=6, seed=1, step=step)
    fast, dense = drift.layer_drift(b0, a0, b, a, 2.0), dense_drift(b0, a0, b, a, 2.0)
    for key in dense:
        assert fast[key] == pytest.approx(dense[key], rel=1e-9, abs=1e-30), key
    pairs = [factors(*shape, rank=6, seed=s, step=step) for s in (2, 3)]
    expected = sum(float(drift.weight_update(*p, 0.5).square().sum()) for p in pairs) ** 0.5
    assert drift.update_norm(pairs, 0.5) == pytest.approx(expected, rel=1e-9)


def test_untouched_and_frozen_b_give_zero_outside():
    b0, a0, _, a = factors(40, 30, rank=4, seed=4, step=1e-2)
    still = drift.layer_drift(b0, a0, b0, a0, 1.0)
    assert still["update_sq"] == 0.0 and still["b_change_sq"] == 0.0
    frozen = drift.layer_drift(b0, a0, b0, a, 1.0)
    assert frozen["update_sq"] > 0 and frozen["update_outside_sq"] == pytest.approx(0.0, abs=1e-20)
