"""Unit tests of the pure maths in sclora_tools.core: small seeded float64 matrices, no model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sclora_tools.core import exact, methods, subspace
from sclora_tools.core.covariance import NORMALIZATIONS, SecondMoment, normalize
from sclora_tools.core.layer_init import InitSettings, initialize_layer

F64 = torch.float64
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# ----------------------------------------------------------------------------- helpers


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=F64) * scale


def orthonormal(rows: int, cols: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(randn(rows, cols, seed=seed))
    return q


def psd(dim: int, seed: int, rank: int | None = None, scale: float = 1.0) -> torch.Tensor:
    x = randn(rank or 2 * dim, dim, seed=seed)
    return scale * (x.T @ x) / x.shape[0]


def with_spectrum(values, seed: int) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=F64)
    v = orthonormal(values.numel(), values.numel(), seed)
    return v @ torch.diag(values) @ v.T


def projector(basis: torch.Tensor) -> torch.Tensor:
    return basis @ basis.T


def eigengap(matrix: torch.Tensor, rank: int) -> float:
    """(lambda_r - lambda_{r+1}) / max|lambda|, eigenvalues in descending order."""
    values = torch.linalg.eigvalsh(subspace.symmetrize(matrix)).flip(0)
    return float((values[rank - 1] - values[rank]) / values.abs().max())


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(exact.same_bits(a, b).all())


# ----------------------------------------------------------------------------- covariance


def test_second_moment_batches_equal_gram_of_all_rows_exactly_for_integer_rows():
    # Small integers: every float32 product and partial sum is exact, so the batch split and the
    # float32 GEMM cannot hide behind a tolerance.
    x = torch.randint(-8, 9, (103, 12), generator=gen(0)).to(F64)
    moment = SecondMoment(12)
    for start in range(0, 103, 17):
        moment.add(x[start : start + 17])
    assert moment.total.dtype == F64
    assert moment.tokens == 103
    assert torch.equal(moment.total, x.T @ x)


def test_second_moment_batches_match_float64_gram_of_random_rows():
    x = randn(240, 16, seed=1)
    reference = x.T @ x
    split = SecondMoment(16)
    for chunk in torch.split(x, [1, 30, 64, 100, 45]):
        split.add(chunk)
    whole = SecondMoment(16)
    whole.add(x)
    assert split.tokens == whole.tokens == 240
    # each batch product is formed in float32 (documented): float32-level agreement with the
    # float64 Gram; the accumulator itself is float64.
    assert torch.allclose(split.total, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())
    assert torch.allclose(split.total, whole.total, rtol=1e-5, atol=1e-5 * reference.abs().max().item())
    assert torch.allclose(split.total, split.total.T, rtol=0, atol=0)


def test_second_moment_accepts_batched_rows_and_counts_tokens():
    x = randn(3, 5, 8, seed=2)
    moment = SecondMoment(8)
    moment.add(x)
    assert moment.tokens == 15
    flat = x.reshape(15, 8)
    assert torch.allclose(moment.total, flat.T @ flat, rtol=1e-5, atol=1e-5)


def test_second_moment_rejects_wrong_width():
    moment = SecondMoment(8)
    with pytest.raises(ValueError, match="width 8"):
        moment.add(torch.zeros(4, 7))
    assert moment.tokens == 0


def test_second_moment_float32_accumulator():
    x = torch.randint(-4, 5, (50, 6), generator=gen(3)).to(F64)
    moment = SecondMoment(6, dtype=torch.float32)
    moment.add(x[:20])
    moment.add(x[20:])
    assert moment.total.dtype == torch.float32
    assert torch.equal(moment.total.double(), x.T @ x)


def test_normalize_token_and_sample():
    total = psd(6, seed=4) * 100
    assert NORMALIZATIONS == ("token", "sample")
    assert torch.equal(normalize(total, tokens=50, samples=5, mode="token"), total / 50)
    assert torch.equal(normalize(total, tokens=50, samples=5, mode="sample"), total / 5)
    # with equal lengths L the two differ by exactly L on both sides
    ratio = normalize(total, 50, 5, "sample") / normalize(total, 50, 5, "token")
    assert torch.allclose(ratio, torch.full_like(ratio, 10.0))


@pytest.mark.parametrize("mode", ["bogus", "tokens", "", "TOKEN"])
def test_normalize_bad_mode_raises(mode):
    with pytest.raises(ValueError, match="normalisation"):
        normalize(torch.eye(3), 3, 1, mode)


@pytest.mark.parametrize("mode", NORMALIZATIONS)
def test_normalize_zero_count_raises(mode):
    with pytest.raises(ValueError, match="zero tokens"):
        normalize(torch.eye(3), 0, 0, mode)


# ----------------------------------------------------------------------------- subspace


@pytest.mark.parametrize("beta", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_delta_covariance_formula(beta):
    pos, neg = psd(7, seed=5), psd(7, seed=6)
    delta = subspace.delta_covariance(pos.float(), neg.float(), beta)
    assert delta.dtype == F64
    expected = (1 - beta) * pos.float().double() - beta * neg.float().double()
    assert torch.allclose(delta, expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("beta", [-0.1, 1.5, -1e-9, 1.0000001, math.nan])
def test_delta_covariance_beta_out_of_range_raises(beta):
    with pytest.raises(ValueError, match="beta"):
        subspace.delta_covariance(torch.eye(3), torch.eye(3), beta)


def test_output_covariance_is_w_c_wt():
    w, c = randn(9, 5, seed=7), psd(5, seed=8)
    assert torch.allclose(subspace.output_covariance(w.float(), c), w.float().double() @ c @ w.float().double().T, rtol=1e-13, atol=1e-13)


def test_top_eigenpairs_are_largest_algebraic_not_absolute():
    values = [-100.0, -50.0, 3.0, 2.0, 1.0, 0.5, -0.25, -7.0]
    matrix = with_spectrum(values, seed=9)
    top = subspace.top_eigenpairs(matrix, 3)
    assert torch.allclose(top.eigenvalues, torch.tensor([3.0, 2.0, 1.0], dtype=F64), atol=1e-12)
    # each column is an eigenvector with its eigenvalue
    assert torch.allclose(matrix @ top.basis, top.basis * top.eigenvalues, atol=1e-11)
    # descending order
    assert bool((top.eigenvalues[:-1] >= top.eigenvalues[1:]).all())


def test_top_eigenpairs_orthonormal_and_sign_convention():
    matrix = with_spectrum(torch.linspace(-5, 10, 12), seed=10)
    top = subspace.top_eigenpairs(matrix, 5)
    basis = top.basis
    assert basis.shape == (12, 5) and basis.dtype == F64
    assert torch.allclose(basis.T @ basis, torch.eye(5, dtype=F64), atol=1e-12)
    pivots = basis.abs().argmax(dim=0)
    assert bool((basis[pivots, torch.arange(5)] > 0).all())
    # the convention removes the eigensolver's arbitrary sign: any sign pattern maps back
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0, -1.0], dtype=F64)
    assert torch.equal(subspace.fix_signs(basis * signs), basis)
    assert torch.equal(subspace.top_eigenpairs(matrix.clone(), 5).basis, basis)


def test_top_eigenpairs_all_negative_spectrum():
    matrix = with_spectrum([-1.0, -2.0, -3.0, -4.0, -5.0], seed=11)
    top = subspace.top_eigenpairs(matrix, 2)
    assert torch.allclose(top.eigenvalues, torch.tensor([-1.0, -2.0], dtype=F64), atol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 0.8, 1.0])
def test_theorem_1_subspace_maximises_objective(beta):
    d, r = 16, 4
    pos, neg = psd(d, seed=12), psd(d, seed=13, scale=1.5)
    weight = torch.empty(d, d, dtype=F64)  # only its shape matters for side="output"
    chosen = subspace.select_subspace(weight, pos, neg, "output", beta, r)
    delta = subspace.delta_covariance(pos, neg, beta)
    top_sum = torch.linalg.eigvalsh(delta).flip(0)[:r].sum().item()
    best = subspace.objective(chosen.basis, pos, neg, beta)
    assert best == pytest.approx(top_sum, rel=1e-12, abs=1e-12)
    assert chosen.eigenvalues.sum().item() == pytest.approx(top_sum, rel=1e-12, abs=1e-12)
    # R(S) = (1-beta) E|P_S h+|^2 - beta E|P_S h-|^2, written with traces
    q = chosen.basis
    direct = (1 - beta) * torch.trace(q.T @ pos @ q) - beta * torch.trace(q.T @ neg @ q)
    assert best == pytest.approx(direct.item(), rel=1e-12, abs=1e-12)
    g = gen(100)
    for _ in range(200):
        random_basis, _ = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=F64))
        assert subspace.objective(random_basis, pos, neg, beta) <= best + 1e-10


def _input_vs_output(weight, pos, neg, beta, rank):
    via_input = subspace.select_subspace(weight, pos, neg, "input", beta, rank)
    pos_out, neg_out = subspace.output_covariance(weight, pos), subspace.output_covariance(weight, neg)
    via_output = subspace.select_subspace(weight, pos_out, neg_out, "output", beta, rank)
    return via_input, via_output


@pytest.mark.parametrize(
    "d_out,d_in,rank,beta",
    [(6, 14, 3, 0.3), (10, 10, 4, 0.5), (20, 8, 4, 0.2), (20, 8, 8, 0.1), (24, 16, 5, 0.5)],
)
def test_select_subspace_input_side_equals_output_side(d_out, d_in, rank, beta):
    weight = randn(d_out, d_in, seed=d_out * 100 + d_in)
    pos, neg = psd(d_in, seed=14), psd(d_in, seed=15, scale=0.5)
    delta_out = subspace.output_covariance(weight, subspace.delta_covariance(pos, neg, beta))
    assert eigengap(delta_out, rank) > 1e-3, "test setup: the spectrum needs a clear eigengap at r"
    if d_out > d_in:  # this case must take the reduced d_in-sized path
        assert subspace.top_eigenpairs_of_projection(weight, subspace.delta_covariance(pos, neg, beta), rank) is not None
    via_input, via_output = _input_vs_output(weight, pos, neg, beta, rank)
    assert via_input.basis.shape == (d_out, rank)
    assert torch.allclose(projector(via_input.basis), projector(via_output.basis), atol=1e-8)
    assert torch.allclose(via_input.eigenvalues, via_output.eigenvalues, rtol=1e-9, atol=1e-10)
    assert torch.allclose(via_input.basis.T @ via_input.basis, torch.eye(rank, dtype=F64), atol=1e-12)
    # same sign convention on both paths -> the bases themselves agree
    assert torch.allclose(via_input.basis, via_output.basis, atol=1e-8)


def test_select_subspace_reduced_problem_falls_back_when_too_few_nonnegative_eigenvalues():
    # d_out > d_in: W M W^T has d_out - d_in zero eigenvalues besides those of the d_in problem.
    # With beta near 1 and Cov- dominating, M has only 2 positive eigenvalues; rank 7 needs the
    # 2 positives, all 4 zeros of the complement of range(W) and the largest negative one.
    d_out, d_in, rank, beta = 12, 8, 7, 0.9
    weight = randn(d_out, d_in, seed=16)
    u = orthonormal(d_in, 2, seed=17)
    pos = u @ torch.diag(torch.tensor([100.0, 60.0], dtype=F64)) @ u.T
    neg = with_spectrum(torch.linspace(0.5, 4.0, d_in), seed=18)
    inner = subspace.delta_covariance(pos, neg, beta)
    assert int((torch.linalg.eigvalsh(inner) >= 0).sum()) == 2
    assert subspace.top_eigenpairs_of_projection(weight, inner, rank) is None
    full = subspace.output_covariance(weight, inner)
    assert eigengap(full, rank) > 1e-3
    via_input, via_output = _input_vs_output(weight, pos, neg, beta, rank)
    expected = torch.linalg.eigvalsh(full).flip(0)[:rank]
    assert torch.allclose(via_input.eigenvalues, expected, atol=1e-9)
    assert via_input.eigenvalues[2:6].abs().max() < 1e-9  # the four zeros
    assert via_input.eigenvalues[6] < 0
    assert torch.allclose(projector(via_input.basis), projector(via_output.basis), atol=1e-8)
    assert torch.allclose(via_input.basis.T @ via_input.basis, torch.eye(rank, dtype=F64), atol=1e-12)


def test_select_subspace_all_negative_reduced_problem_picks_null_space_of_wt():
    # beta = 1: M = -Cov- is negative definite; the best r-dim subspaces (r <= d_out - d_in) are
    # those inside null(W^T), objective 0. Not unique, so check the characterisation instead.
    d_out, d_in, rank = 14, 6, 5
    weight = randn(d_out, d_in, seed=19)
    neg = psd(d_in, seed=20)
    pos = psd(d_in, seed=21)
    inner = subspace.delta_covariance(pos, neg, 1.0)
    assert subspace.top_eigenpairs_of_projection(weight, inner, rank) is None
    chosen = subspace.select_subspace(weight, pos, neg, "input", 1.0, rank)
    expected = torch.linalg.eigvalsh(subspace.output_covariance(weight, inner)).flip(0)[:rank]
    assert torch.allclose(chosen.eigenvalues, expected, atol=1e-9)
    assert (weight.T @ chosen.basis).abs().max() < 1e-9
    assert torch.allclose(chosen.basis.T @ chosen.basis, torch.eye(rank, dtype=F64), atol=1e-12)


def test_select_subspace_bad_side_and_beta():
    weight = randn(4, 4, seed=22)
    with pytest.raises(ValueError, match="side"):
        subspace.select_subspace(weight, torch.eye(4), torch.eye(4), "middle", 0.5, 2)
    with pytest.raises(ValueError, match="beta"):
        subspace.select_subspace(weight, torch.eye(4), torch.eye(4), "input", 1.5, 2)


@pytest.mark.parametrize("d_out,d_in", [(6, 10), (12, 5)])
def test_energy_parts_at_input_site_equal_captured_energy_of_output_covariance(d_out, d_in):
    weight = randn(d_out, d_in, seed=23)
    cov_in = psd(d_in, seed=24)
    basis = orthonormal(d_out, 3, seed=25)
    cov_out = subspace.output_covariance(weight, cov_in)
    captured, total = subspace.energy_parts_at_site(weight, basis, cov_in, "input")
    assert total == pytest.approx(torch.trace(cov_out).item(), rel=1e-12)
    assert captured == pytest.approx(torch.trace(basis.T @ cov_out @ basis).item(), rel=1e-12)
    assert captured / total == pytest.approx(subspace.captured_energy(basis, cov_out), rel=1e-12)
    out_captured, out_total = subspace.energy_parts_at_site(weight, basis, cov_out, "output")
    assert (out_captured, out_total) == pytest.approx((captured, total), rel=1e-12)
    assert 0.0 <= captured / total <= 1.0


def test_captured_energy_edge_cases():
    basis = orthonormal(5, 5, seed=26)
    cov = psd(5, seed=27)
    assert subspace.captured_energy(basis, cov) == pytest.approx(1.0, rel=1e-12)
    assert subspace.captured_energy(basis[:, :2], torch.zeros(5, 5, dtype=F64)) == 0.0


# ----------------------------------------------------------------------------- exact: grids


def test_a_significant_bits():
    assert exact.a_significant_bits(1) == 24
    assert exact.a_significant_bits(2) == 24
    assert exact.a_significant_bits(256) == 24
    assert exact.a_significant_bits(257) == 23
    assert exact.a_significant_bits(512) == 23
    assert exact.a_significant_bits(4096) == 20
    for rank in itertools.chain(range(1, 70), [127, 128, 129, 255, 256, 1000, 1024, 1025, 8192, 65536]):
        bits = exact.a_significant_bits(rank)
        assert bits <= 24  # float32-representable A
        # |B| <= 2^21 quanta, |A| <= 2^bits quanta, r terms: every partial sum below 2^53
        assert exact.B_FRACTION_BITS + bits + math.ceil(math.log2(rank)) <= 53


def test_quantize_b_grid_and_float32_exact():
    q = orthonormal(40, 8, seed=28)
    b = exact.quantize_b(q.float())
    assert b.dtype == F64
    scaled = b * 2**21
    assert torch.equal(scaled, scaled.round())
    assert torch.equal(b.float().double(), b)
    assert (b - q.float().double()).abs().max() <= 2.0**-22
    assert torch.equal(exact.quantize_b(torch.tensor([1.0, -1.0, 0.0, -0.0], dtype=F64)), torch.tensor([1.0, -1.0, 0.0, -0.0], dtype=F64))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        exact.quantize_b(torch.tensor([[1.0 + 1e-12]], dtype=F64))


@pytest.mark.parametrize("rank", [1, 4, 64, 257, 1000])
def test_quantize_a_per_column_power_of_two_grid(rank):
    g = gen(rank)
    a = torch.randn(rank, 9, generator=g, dtype=F64) * torch.logspace(-30, 30, 9, dtype=F64)
    a[:, 3] = 0.0
    a[0, 4] = 2.0**-20 * (1 + 2.0**-40)  # just above a power of two
    a[1:, 4] = 2.0**-21
    a[0, 5] = -(2.0**7)  # exactly a power of two, negative
    quantized = exact.quantize_a(a, rank)
    bits = exact.a_significant_bits(rank)
    assert torch.equal(quantized.float().double(), quantized)
    assert torch.equal(quantized[:, 3], torch.zeros(rank, dtype=F64))
    column_max = a.abs().amax(dim=0)
    for j in range(a.shape[1]):
        if column_max[j] == 0:
            continue
        exponent = math.ceil(math.log2(column_max[j].item()))
        units = quantized[:, j] / 2.0 ** (exponent - bits)
        assert torch.equal(units, units.round()), j
        assert units.abs().max() <= 2**bits
        # round to nearest on that grid
        assert (quantized[:, j] - a[:, j]).abs().max() <= 2.0 ** (exponent - bits - 1)


def quantised_pair(d_out: int, d_in: int, rank: int, seed: int):
    q = orthonormal(d_out, rank, seed)
    w = randn(d_out, d_in, seed=seed + 1, scale=0.05)
    return exact.quantize_factors(q, q.T @ w)


def products_in_other_orders(b: torch.Tensor, a: torch.Tensor):
    rank = b.shape[1]
    perm = torch.randperm(rank, generator=gen(29))
    yield "reference", b @ a
    yield "permuted", b[:, perm] @ a[perm]
    yield "flipped", b.flip(1) @ a.flip(0)
    yield "transposed", (a.T @ b.T).T
    yield "einsum", torch.einsum("ik,kj->ij", b, a)
    yield "broadcast-sum", (b.unsqueeze(2) * a.unsqueeze(0)).sum(dim=1)
    chunks = [slice(i, min(i + 7, rank)) for i in range(0, rank, 7)]
    forward = sum((b[:, c] @ a[c] for c in chunks), torch.zeros(b.shape[0], a.shape[1], dtype=F64))
    yield "chunks-of-7", forward
    backward = torch.zeros(b.shape[0], a.shape[1], dtype=F64)
    for c in reversed(chunks):
        backward = backward + b[:, c] @ a[c]
    yield "chunks-reversed", backward
    outer = torch.zeros(b.shape[0], a.shape[1], dtype=F64)
    for k in torch.randperm(rank, generator=gen(30)).tolist():
        outer += torch.outer(b[:, k], a[k])
    yield "rank-one-random-order", outer
    yield "column-blocks-of-7", torch.cat([b @ a[:, j : j + 7] for j in range(0, a.shape[1], 7)], dim=1)
    yield "row-blocks-of-7", torch.cat([b[i : i + 7] @ a for i in range(0, b.shape[0], 7)], dim=0)


@pytest.mark.parametrize("rank", [5, 32, 64])
def test_quantised_product_is_bit_identical_in_any_summation_order(rank):
    b, a = quantised_pair(96, 80, rank, seed=rank)
    reference = exact.init_product(b, a, 1.0)
    for name, product in products_in_other_orders(b, a):
        assert bits_equal(product, reference), name
    # an unquantised product is NOT order-independent in general: the grid is what matters
    q = orthonormal(96, rank, seed=rank)
    raw_a = q.T @ randn(96, 80, seed=rank + 1, scale=0.05)
    differs = [not bits_equal(p, q @ raw_a) for _, p in products_in_other_orders(q, raw_a)]
    assert any(differs)


@pytest.mark.parametrize("rank", [64, 256, 300])
def test_worst_case_magnitudes_stay_exact(rank):
    # every entry at (or near) the top of its grid: the sums reach 2^53 quanta and stay exact
    bits = exact.a_significant_bits(rank)
    g = gen(rank)
    b_units = 2**21 - torch.randint(0, 3, (48, rank), generator=g)
    b_units *= torch.where(torch.rand(48, rank, generator=g) < 0.5, -1, 1)
    a_units = 2**bits - torch.randint(0, 3, (rank, 40), generator=g)
    a_units[:, :20] *= torch.where(torch.rand(rank, 20, generator=g) < 0.5, -1, 1)  # half the columns all positive
    b_units[:, :] = torch.where(torch.arange(48).unsqueeze(1) < 8, 2**21, b_units)  # some rows at +1 exactly
    exponent = 3
    b = b_units.to(F64) * 2.0**-21
    a = a_units.to(F64) * 2.0 ** (exponent - bits)
    assert torch.equal(exact.quantize_b(b), b)
    assert torch.equal(exact.quantize_a(a, rank), a)
    exact_units = b_units @ a_units  # int64 matmul: the true value
    assert exact_units.abs().max() <= 2**53
    expected = exact_units.to(F64) * 2.0 ** (exponent - bits - 21)
    assert torch.equal(exact_units.to(F64).to(torch.int64), exact_units)  # representable
    for name, product in products_in_other_orders(b, a):
        assert torch.equal(product, expected), name


def test_init_product_independent_of_thread_count():
    b, a = quantised_pair(384, 256, 48, seed=31)
    threads = torch.get_num_threads()
    try:
        default = exact.init_product(b, a, 2.0)
        torch.set_num_threads(1)
        single = exact.init_product(b, a, 2.0)
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads
    assert bits_equal(single, default)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_init_product_on_cuda_matches_cpu_bit_for_bit():
    b, a = quantised_pair(512, 384, 64, seed=43)
    cpu = exact.init_product(b, a, 1.0 / 3.0)
    cuda = exact.init_product(b.cuda(), a.cuda(), 1.0 / 3.0).cpu()
    assert bits_equal(cuda, cpu)
    weight = randn(512, 384, seed=44, scale=0.02).to(torch.bfloat16)
    q = orthonormal(512, 64, seed=45)
    b, a = exact.quantize_factors(q, q.T @ weight.double())
    product = exact.init_product(b, a, 2.0)
    w_res, correction = exact.residual_and_correction(weight, product)
    on_gpu = exact.init_product(b.float().cuda().double(), a.float().cuda().double(), 2.0).cpu()
    assert bits_equal(exact.rebuild(w_res, on_gpu, correction), weight)


# ----------------------------------------------------------------------------- exact: rebuild


def special_weight(dtype: torch.dtype, d_out: int = 48, d_in: int = 40, seed: int = 0) -> torch.Tensor:
    """Random weights plus exact zeros, negative zeros, subnormals, the smallest subnormal and
    large values, a zero row and a negative-zero column, in `dtype`."""
    info = torch.finfo(dtype)
    w = randn(d_out, d_in, seed=seed, scale=0.05).to(dtype)
    smallest = torch.nextafter(torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype))
    large = 1.0e3 if dtype == torch.float16 else 1.0e30
    w[0, 0] = 0.0
    w[0, 1] = -0.0
    w[1, 0] = info.smallest_normal / 4
    w[1, 1] = -info.smallest_normal / 3
    w[1, 2] = smallest
    w[1, 3] = -smallest
    w[2, 2] = large
    w[2, 3] = -large / 7
    w[4, 9] = info.smallest_normal
    w[5, :] = 0.0
    w[:, 6] = -0.0
    w[7, 7] = 1.0
    w[8, 8] = -2.0
    assert bool(torch.signbit(w[0, 1])) and bool(torch.signbit(w[3, 6]))
    return w


def product_for(weight: torch.Tensor, rank: int, scale: float, seed: int = 0):
    q = orthonormal(weight.shape[0], rank, seed=seed + 7)
    b, a = exact.quantize_factors(q, q.T @ weight.double())
    return b, a, exact.init_product(b, a, scale)


@pytest.mark.parametrize("scale", [1.0, 2.0, 0.5, 1.0 / 3.0])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_residual_and_correction_rebuild_bit_exact(dtype, scale):
    weight = special_weight(dtype)
    b, a, product = product_for(weight, rank=6, scale=scale)
    w_res, correction = exact.residual_and_correction(weight, product)
    assert w_res.dtype == dtype and w_res.shape == weight.shape
    assert bool(torch.isfinite(w_res).all())
    rebuilt = exact.rebuild(w_res, product, correction)
    assert bits_equal(rebuilt, weight)
    assert torch.equal(rebuilt.view(exact.INT_FOR_SIZE[rebuilt.element_size()]), weight.view(exact.INT_FOR_SIZE[weight.element_size()]))
    # the product recomputed with a differently ordered matmul gives the same bits
    perm = torch.randperm(b.shape[1], generator=gen(32))
    other = exact.init_product(b[:, perm].flip(1), a[perm].flip(0), scale)
    assert bits_equal(other, product)
    assert bits_equal(exact.rebuild(w_res, other, correction), weight)
    # and from the float32 factors that PEFT stores
    stored = exact.init_product(b.float().double(), a.float().double(), scale)
    assert bits_equal(exact.rebuild(w_res, stored, correction), weight)
    # the rebuild is a function of the stored bytes only: same answer twice
    assert bits_equal(exact.rebuild(w_res.clone(), product.clone(), correction), rebuilt)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rebuild_exact_for_plain_random_weights_with_small_overhead(dtype):
    weight = randn(128, 96, seed=33, scale=0.02).to(dtype)
    _, _, product = product_for(weight, rank=16, scale=1.0, seed=3)
    w_res, correction = exact.residual_and_correction(weight, product)
    assert bits_equal(exact.rebuild(w_res, product, correction), weight)
    # the extra bytes are small: a few percent of the weight (measured 3% fp32, 5-6% bf16/fp16 here)
    assert correction.nbytes < 0.10 * weight.numel() * weight.element_size()
    # explicit patches (misses outside the decodable "coarse" set) are rare; they occur for W0
    # just below a power of two whose dense rebuild rounds up into the coarser binade
    assert correction.patch_indices.numel() <= 1e-3 * weight.numel()
    patched = correction.patch_indices.long()
    assert not bool(exact.coarse_entries(w_res, exact.rebuild_dense(w_res, product)).reshape(-1)[patched].any())


def test_zero_product_gives_residual_equal_to_weight():
    weight = special_weight(torch.bfloat16)
    zero = torch.zeros(weight.shape, dtype=F64)
    w_res, correction = exact.residual_and_correction(weight, zero)
    assert bits_equal(w_res, weight)
    assert bits_equal(exact.rebuild(w_res, zero, correction), weight)
    assert correction.escapes.numel() == 0


def test_residual_rejects_unsupported_dtype():
    with pytest.raises(ValueError, match="exact rebuild supports"):
        exact.residual_and_correction(torch.zeros(3, 3, dtype=F64), torch.zeros(3, 3, dtype=F64))


@pytest.fixture(scope="module")
def bf16_case():
    weight = special_weight(torch.bfloat16, seed=34)
    _, _, product = product_for(weight, rank=6, scale=2.0, seed=5)
    w_res, correction = exact.residual_and_correction(weight, product)
    assert bits_equal(exact.rebuild(w_res, product, correction), weight)
    return weight, product, w_res, correction


def _replace(correction: exact.Correction, **changes) -> exact.Correction:
    fields = {"steps": correction.steps, "escapes": correction.escapes,
              "patch_indices": correction.patch_indices, "patch_values": correction.patch_values}
    return exact.Correction(**{**fields, **changes})


def _raises_or_differs(w_res, product, correction, weight) -> bool:
    try:
        rebuilt = exact.rebuild(w_res, product, correction)
    except Exception:  # noqa: BLE001 - any refusal is fine
        return True
    return not bits_equal(rebuilt, weight)


def test_corrupted_correction_stream_is_not_silently_accepted(bf16_case):
    weight, product, w_res, correction = bf16_case
    assert len(correction.steps) > 0
    for position in range(0, len(correction.steps), max(1, len(correction.steps) // 8)):
        flipped = bytearray(correction.steps)
        flipped[position] ^= 0x5A
        assert _raises_or_differs(w_res, product, _replace(correction, steps=bytes(flipped)), weight), position
    for cut in (1, len(correction.steps) // 2, len(correction.steps) - 1):
        assert _raises_or_differs(w_res, product, _replace(correction, steps=correction.steps[:cut]), weight), cut
    with pytest.raises(Exception):  # noqa: B017 - lzma or the length check
        exact.rebuild(w_res, product, _replace(correction, steps=b""))


def test_corrupted_escapes_or_patch_are_not_silently_accepted(bf16_case):
    weight, product, w_res, correction = bf16_case
    extra = torch.cat([correction.escapes, torch.tensor([1000], dtype=torch.int64)])
    assert _raises_or_differs(w_res, product, _replace(correction, escapes=extra), weight)
    if correction.patch_indices.numel():
        values = correction.patch_values.clone()
        values[0] = 1.5
        assert _raises_or_differs(w_res, product, _replace(correction, patch_values=values), weight)


def test_tampered_residual_changes_the_rebuild(bf16_case):
    weight, product, w_res, correction = bf16_case
    raw = exact.bit_view(w_res).reshape(-1)
    g = gen(35)
    positions = torch.randperm(raw.numel(), generator=g)[:40].tolist()
    # Only changes at or above W0's own resolution can show: where |W_res| << |W0| its low bits
    # are absorbed by the rounding to W0's dtype (then W0 is still rebuilt exactly; the file's
    # sha256 in the manifest is what detects such tampering). So tamper entries whose grid is
    # at least as fine as... no: at least as coarse as W0's.
    flat_res, flat_w = w_res.reshape(-1), weight.reshape(-1)
    relevant = (exact.spacing(flat_res) >= exact.spacing(flat_w)) & (flat_w != 0) & torch.isfinite(flat_res)
    candidates = relevant.nonzero().squeeze(1)
    assert candidates.numel() > 100
    positions = candidates[torch.randperm(candidates.numel(), generator=g)[:40]].tolist()
    for position in positions:
        for bit in (6, 3, 0):  # mantissa bits of bfloat16 (7 explicit bits), down to the last one
            tampered = raw.clone()
            tampered[position] ^= 1 << bit
            w_bad = tampered.view(torch.bfloat16).reshape(w_res.shape)
            assert _raises_or_differs(w_bad, product, correction, weight), (position, bit)
    # a sign flip of any nonzero entry is detected as well
    nonzero = (flat_res != 0).nonzero().squeeze(1)
    for position in nonzero[torch.randperm(nonzero.numel(), generator=g)[:40]].tolist():
        tampered = raw.clone()
        tampered[position] ^= -(1 << 15)
        assert _raises_or_differs(tampered.view(torch.bfloat16).reshape(w_res.shape), product, correction, weight), position


def special_values(dtype: torch.dtype) -> torch.Tensor:
    info = torch.finfo(dtype)
    zero = torch.zeros((), dtype=dtype)
    smallest = torch.nextafter(zero, torch.ones((), dtype=dtype))
    values = [0.0, -0.0, 1.0, -1.0, info.max, -info.max, info.smallest_normal, -info.smallest_normal,
              math.inf, -math.inf, info.eps, 0.5, -3.25]
    t = torch.tensor(values, dtype=dtype)
    return torch.cat([t, smallest.reshape(1), -smallest.reshape(1), torch.tensor([info.smallest_normal / 2], dtype=dtype)])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ordered_int_round_trip_and_order(dtype):
    values = special_values(dtype)
    ordered = exact.ordered_int(values)
    assert ordered.dtype == torch.int64
    assert bits_equal(exact.from_ordered_int(ordered, dtype), values)
    zero = torch.tensor([0.0, -0.0], dtype=dtype)
    assert exact.ordered_int(zero).tolist() == [0, -1]
    # NaN (any payload, either sign) round-trips bit for bit
    size = values.element_size()
    nan_bits = torch.tensor([torch.tensor(math.nan, dtype=dtype).view(exact.INT_FOR_SIZE[size]).item()], dtype=exact.INT_FOR_SIZE[size])
    nans = torch.cat([nan_bits, nan_bits | (1 << (8 * size - 1)) if size < 8 else nan_bits]).view(dtype)
    assert bits_equal(exact.from_ordered_int(exact.ordered_int(nans), dtype), nans)
    # monotone, and neighbours differ by exactly one
    finite = values[torch.isfinite(values) & ~(torch.signbit(values) & (values == 0))]  # -0 ties +0
    order = torch.argsort(finite.float())
    sorted_values = finite[order]
    keys = exact.ordered_int(sorted_values)
    assert bool((keys[1:] >= keys[:-1]).all())
    up = torch.nextafter(sorted_values, torch.full_like(sorted_values, math.inf))
    assert torch.equal(exact.ordered_int(up) - exact.ordered_int(sorted_values), torch.ones_like(keys))
    # every ordered int in a window around zero and around one maps to a value and back
    for centre in (0, int(exact.ordered_int(torch.tensor([1.0], dtype=dtype))[0])):
        window = torch.arange(centre - 300, centre + 300, dtype=torch.int64)
        back = exact.from_ordered_int(window, dtype)
        assert torch.equal(exact.ordered_int(back), window)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_spacing_and_nudge(dtype):
    values = torch.tensor([1.0, -1.0, 0.0, 1000.0], dtype=dtype)
    eps = torch.finfo(dtype).eps
    assert exact.spacing(values)[0].item() == eps
    assert exact.spacing(values)[1].item() == eps
    assert exact.spacing(values)[2].item() > 0
    moved = exact.nudge(values, 2)
    assert torch.equal(exact.ordered_int(moved) - exact.ordered_int(values), torch.full((4,), 2, dtype=torch.int64))
    assert torch.equal(exact.nudge(moved, -2), values)


# ----------------------------------------------------------------------------- methods


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


# ----------------------------------------------------------------------------- layer_init


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
        initialize_layer(torch.zeros(4, 4), None, None, "input", InitSettings(method="no-such-method", rank=2, alpha=2.0))


def test_init_settings_scale():
    assert InitSettings(rank=8, alpha=16.0).scale == 2.0
    assert InitSettings(rank=8, alpha=4.0).scale == 0.5


def test_update_norm_is_the_frobenius_norm_of_the_whole_weight_update():
    from sclora_tools.core.drift import update_norm

    generator = torch.Generator().manual_seed(3)
    b0, a0 = torch.randn(12, 4, generator=generator), torch.randn(4, 9, generator=generator)
    b, a = b0 + 0.1 * torch.randn(12, 4, generator=generator), a0 + 0.1 * torch.randn(4, 9, generator=generator)
    lora_b, lora_a = torch.randn(7, 2, generator=generator), torch.randn(2, 5, generator=generator)
    pairs = [(b0, a0, b, a), (torch.zeros(7, 2), lora_a, lora_b, lora_a)]
    expected = torch.cat([(2.0 * (b.double() @ a.double() - b0.double() @ a0.double())).flatten(),
                          (2.0 * lora_b.double() @ lora_a.double()).flatten()]).norm()
    assert update_norm(pairs, 2.0) == pytest.approx(float(expected), rel=1e-12)
    assert update_norm([(b0, a0, b0, a0)], 2.0) == 0.0
