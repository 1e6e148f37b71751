"""sclora_tools.core.methods: the SC-LoRA and LoRA factors, and the method registry."""

from __future__ import annotations

import math

import torch

from sclora_tools.core import methods, subspace
from tests.core.matrices import F64, orthonormal, projector, randn


def test_sclora_factors_orthonormal_b_and_projection():
    weight = randn(20, 12, seed=36)
    basis = orthonormal(20, 5, seed=37)
    chosen = subspace.Subspace(basis=basis, eigenvalues=torch.arange(5, 0, -1, dtype=F64))
    factors = methods.sclora_factors(weight.float(), chosen)
    assert factors.b.dtype == factors.a.dtype == F64
    assert factors.b.shape == (20, 5) and factors.a.shape == (5, 12)
    assert torch.allclose(factors.b.T @ factors.b, torch.eye(5, dtype=F64), atol=1e-12)
    assert torch.allclose(factors.b @ factors.a, basis @ basis.T @ weight.float().double(), atol=1e-12)
    # B A x = P_S(W0 x)  (Theorem 2)
    x = randn(12, 3, seed=38)
    assert torch.allclose(factors.b @ (factors.a @ x), projector(basis) @ (weight.float().double() @ x), atol=1e-12)


def test_lora_factors_zero_b_and_deterministic():
    weight = randn(20, 12, seed=39)
    first = methods.lora_factors(weight, rank=4, seed=7)
    again = methods.lora_factors(weight, rank=4, seed=7)
    other = methods.lora_factors(weight, rank=4, seed=8)
    assert first.b.shape == (20, 4) and first.a.shape == (4, 12)
    assert torch.equal(first.b, torch.zeros(20, 4, dtype=F64))
    assert torch.equal(first.a, again.a)
    assert not torch.equal(first.a, other.a)
    bound = 1.0 / math.sqrt(12)
    assert first.a.abs().max() <= bound
    assert first.a.std() > bound / 4


def test_methods_registry():
    assert "sclora" in methods.METHODS and "lora" in methods.METHODS
    assert set(methods.SUBSPACE_METHODS) <= set(methods.METHODS)
