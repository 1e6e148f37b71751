"""The exact-rebuild grid for factors of any norm (PiSSA's U sqrt(S), CorDA, LoRA-Null): B A is
exact in float64 under every summation order, SC-LoRA's orthonormal grid is unchanged, and the
grid can be read back from the stored B alone."""

from __future__ import annotations

import math

import pytest
import torch

from sclora_tools.core import exact

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def wide_factors(d_out: int, d_in: int, rank: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B columns and A rows whose norms span twelve orders of magnitude, in both directions."""
    g = gen(seed)
    column_scale = torch.logspace(-6, 6, rank, dtype=F64)[torch.randperm(rank, generator=g)]
    b = torch.randn(d_out, rank, generator=g, dtype=F64) * column_scale
    a = torch.randn(rank, d_in, generator=g, dtype=F64) / column_scale.unsqueeze(1)
    return b, a


def integer_units(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Write the quantised factors as integers: B = Bu * 2^(e - 21), A = Au * q_j * 2^-e (row k,
    column j), so that B @ A = (Bu @ Au) * 2^-21 * q_j exactly. Returns (Bu, Au, q)."""
    exponents = exact.b_column_exponents(b)
    power = torch.pow(2.0, exponents)
    b_units = b / power * 2.0**exact.B_FRACTION_BITS
    scaled_a = a * power.unsqueeze(1)
    column_max = scaled_a.abs().amax(dim=0)
    mantissa, exponent = torch.frexp(column_max)
    ceil_log2 = (exponent - (mantissa == 0.5).to(exponent.dtype)).to(F64)
    quantum = torch.pow(2.0, ceil_log2 - exact.a_significant_bits(b.shape[1]))
    a_units = scaled_a / quantum
    assert torch.equal(b_units, b_units.round()) and torch.equal(a_units, a_units.round())
    assert b_units.abs().max() <= 2**exact.B_FRACTION_BITS
    assert a_units.abs().max() <= 2 ** exact.a_significant_bits(b.shape[1])
    return b_units.to(torch.int64), a_units.to(torch.int64), quantum


def summation_orders(b: torch.Tensor, a: torch.Tensor):
    rank = b.shape[1]
    yield "matmul", b @ a
    perm = torch.randperm(rank, generator=gen(5))
    yield "permuted", b[:, perm] @ a[perm]
    yield "transposed", (a.T @ b.T).T
    yield "broadcast-sum", (b.unsqueeze(2) * a.unsqueeze(0)).sum(dim=1)
    outer = torch.zeros(b.shape[0], a.shape[1], dtype=F64)
    for k in torch.randperm(rank, generator=gen(6)).tolist():
        outer += torch.outer(b[:, k], a[k])
    yield "rank-one-random-order", outer
    chunks = [slice(i, min(i + 5, rank)) for i in range(0, rank, 5)]
    backward = torch.zeros(b.shape[0], a.shape[1], dtype=F64)
    for c in reversed(chunks):
        backward = backward + b[:, c] @ a[c]
    yield "chunks-reversed", backward


@pytest.mark.parametrize("rank", [3, 24, 64, 300])
def test_product_of_any_norm_factors_is_exact_in_every_summation_order(rank):
    b, a = exact.quantize_factors(*wide_factors(40, 36, rank, seed=rank))
    b_units, a_units, quantum = integer_units(b, a)
    exact_units = b_units @ a_units  # int64: the true value of B @ A in units of 2^-21 q_j
    assert exact_units.abs().max() <= 2**53
    truth = exact_units.to(F64) * quantum.unsqueeze(0) * 2.0**-exact.B_FRACTION_BITS
    for name, product in summation_orders(b, a):
        assert torch.equal(product, truth), name
    assert torch.equal(exact.init_product(b, a, 1.0), truth)


def test_worst_case_units_at_the_top_of_every_grid_stay_exact():
    rank = 256
    g = gen(9)
    power = torch.pow(2.0, torch.randint(-8, 9, (rank,), generator=g).to(F64))
    bits = exact.a_significant_bits(rank)
    b_units = (2**21 - torch.randint(0, 2, (32, rank), generator=g)) * torch.where(torch.rand(32, rank, generator=g) < 0.5, -1, 1)
    a_units = 2**bits - torch.randint(0, 2, (rank, 20), generator=g)
    b = b_units.to(F64) * 2.0**-21 * power
    a = a_units.to(F64) * 2.0 ** (3 - bits) / power.unsqueeze(1)
    qb, qa = exact.quantize_factors(b, a)
    assert torch.equal(qb, b) and torch.equal(qa, a)  # already on the grid: quantisation is the identity
    truth = (b_units @ a_units).to(F64) * 2.0 ** (3 - bits - 21)
    for name, product in summation_orders(qb, qa):
        assert torch.equal(product, truth), name


def test_quantisation_keeps_each_factor_close_and_float32_exact():
    b, a = wide_factors(50, 30, 16, seed=3)
    qb, qa = exact.quantize_factors(b, a)
    assert torch.equal(qb.float().double(), qb) and torch.equal(qa.float().double(), qa)
    column_max = b.abs().amax(dim=0)
    assert bool(((qb - b).abs() <= column_max * 2.0**-21 + 0.0).all())  # 21 bits relative to each column
    product, truth = qb @ qa, b @ a
    assert (product - truth).norm() <= 1e-5 * truth.norm()


def test_no_rescaling_the_column_norms_of_b_are_kept():
    b, a = wide_factors(50, 30, 12, seed=4)
    qb, _ = exact.quantize_factors(b, a)
    assert torch.allclose(qb.norm(dim=0), b.norm(dim=0), rtol=1e-5)


def test_orthonormal_b_keeps_the_plain_sclora_grid_bit_for_bit():
    q, _ = torch.linalg.qr(torch.randn(48, 8, generator=gen(11), dtype=F64))
    a = q.T @ (0.05 * torch.randn(48, 30, generator=gen(12), dtype=F64))
    assert torch.equal(exact.b_column_exponents(q), torch.zeros(8, dtype=F64))
    qb, qa = exact.quantize_factors(q, a)
    assert torch.equal(qb, exact.quantize_b(q))
    assert torch.equal(qa, exact.quantize_a(a, 8))


def test_the_grid_is_recoverable_from_the_stored_factors():
    b, a = wide_factors(30, 20, 10, seed=13)
    qb, qa = exact.quantize_factors(b, a)
    stored_b, stored_a = qb.float(), qa.float()  # what the PEFT adapter file holds
    assert torch.equal(exact.b_column_exponents(stored_b.double()), exact.b_column_exponents(b))
    again_b, again_a = exact.quantize_factors(stored_b.double(), stored_a.double())
    assert torch.equal(again_b, qb) and torch.equal(again_a, qa)  # idempotent: the stored factors are on their grid


def test_exponents_are_exact_at_powers_of_two():
    b = torch.tensor([[4.0, 2.0**-3 * (1 + 2.0**-52), 0.0, 0.6], [1.0, 0.0, 0.0, 0.8]], dtype=F64)
    assert exact.b_column_exponents(b).tolist() == [2.0, -2.0, 0.0, 0.0]  # last column: unit norm
    assert math.isclose(float(b[:, 3].norm()), 1.0)


def test_non_finite_factors_are_refused():
    with pytest.raises(ValueError, match="NaN or Inf"):
        exact.quantize_factors(torch.tensor([[math.inf]], dtype=F64), torch.ones(1, 2, dtype=F64))
