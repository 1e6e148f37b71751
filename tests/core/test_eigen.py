"""core.eigen: the certified block-Krylov solver returns the subspace a full eigh returns (reward
R(S) = tr(Q^T M Q) within 1e-6 relative, and within its certified bound; eigenvalues within the
bound; where the r-th gap is open, the subspace within sqrt(bound / gap)) on spectra with
negative and clustered eigenvalues, refuses (so the caller falls back to eigh) when no gap below
the top r is resolved, and select_subspace uses it only where r << d, with the same answer."""

from __future__ import annotations

import pytest
import torch

from sclora_tools.core import eigen, mixed_eigen, subspace

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def with_spectrum(values, seed: int) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=F64)
    basis, _ = torch.linalg.qr(torch.randn(values.numel(), values.numel(), generator=gen(seed), dtype=F64))
    return (basis * values) @ basis.T


def reward(basis: torch.Tensor, matrix: torch.Tensor) -> float:
    return float(torch.trace(basis.T @ matrix @ basis))


def sin_theta(a: torch.Tensor, b: torch.Tensor) -> float:
    """||sin Theta||_F between two subspaces with orthonormal bases."""
    return float((a - b @ (b.T @ a)).norm())


def assert_same_subspace(found: eigen.Eigenpairs, matrix: torch.Tensor, rank: int) -> None:
    """The certificate's promises, checked against a full eigh: the reward falls short of the best
    by no more than the bound (itself within the tolerance), each eigenvalue too, and the subspace
    is the dense one within sqrt(bound / gap) wherever the r-th gap is open."""
    every = torch.linalg.eigvalsh(matrix).flip(0)
    best, rounding = float(every[:rank].sum()), 1e-12 * float(matrix.abs().max()) * rank
    shortfall = best - reward(found.vectors, matrix)
    assert -rounding <= shortfall <= found.reward_bound + rounding
    assert found.reward_bound <= eigen.REWARD_TOLERANCE * abs(best) and shortfall <= 1e-6 * abs(best)
    short = every[:rank] - found.values
    assert bool((short >= -rounding).all()) and bool((short <= found.reward_bound + rounding).all())
    assert torch.allclose(found.vectors.T @ found.vectors, torch.eye(rank, dtype=F64), atol=1e-12)
    gap = float(every[rank - 1] - every[rank])
    if gap > 1e-9:
        exact = eigen.dense_top(matrix, rank)
        assert sin_theta(found.vectors, exact.vectors) ** 2 <= (found.reward_bound + rounding) / gap * 1.0001


def assert_same_answer(chosen: subspace.Subspace, dense: subspace.Subspace, matrix: torch.Tensor, rank: int) -> None:
    """select_subspace's Krylov answer against the dense one: R(S) short by no more than its
    certified bound (and 1e-6 relative), the subspace within sqrt(bound / r-th gap)."""
    best, rounding = reward(dense.basis, matrix), 1e-12 * float(matrix.abs().max()) * rank
    shortfall = best - reward(chosen.basis, matrix)
    assert -rounding <= shortfall <= chosen.reward_bound + rounding and shortfall <= 1e-6 * abs(best)
    every = torch.linalg.eigvalsh(matrix).flip(0)
    gap = float(every[rank - 1] - every[rank])
    assert gap > 0 and sin_theta(chosen.basis, dense.basis) ** 2 <= (chosen.reward_bound + rounding) / gap * 1.0001


def decaying_with_negative_bulk(dim: int, seed: int) -> torch.Tensor:
    """Like dCov at beta = 0.5: a few large positive outliers, a power-law positive tail and a
    negative part larger in magnitude than the top."""
    index = torch.arange(1, dim + 1, dtype=F64)
    positive = 60.0 / index[: dim // 2]
    negative = -80.0 / index[: dim - dim // 2]
    return with_spectrum(torch.cat([positive, negative]), seed)


@pytest.mark.parametrize("rank", [4, 16])
def test_krylov_matches_eigh_with_negative_eigenvalues(rank):
    matrix = decaying_with_negative_bulk(600, seed=1)
    found = eigen.krylov_top(eigen.DenseOperator(matrix), rank, max_dim=300)
    assert found is not None and found.solver == "krylov" and found.krylov_dim <= 300
    assert_same_subspace(found, matrix, rank)


def test_krylov_matches_eigh_with_clusters_inside_the_top_r():
    """Exactly repeated eigenvalues (multiplicities up to 5, under the block's r + 4 columns)
    inside the top r, a clear gap after, a uniform bulk reaching far below zero."""
    top = [9.0] * 5 + [7.0] * 3 + [6.5] * 4 + [6.0] * 4  # r = 16
    rest = torch.linspace(3.0, -40.0, 684).tolist()
    matrix = with_spectrum(top + rest, seed=2)
    found = eigen.krylov_top(eigen.DenseOperator(matrix), 16, max_dim=600)
    assert found is not None
    assert_same_subspace(found, matrix, 16)


def test_krylov_matches_eigh_with_an_all_negative_spectrum():
    values = [-1.0 * 1.5**k for k in range(12)] + torch.linspace(-150.0, -400.0, 388).tolist()
    matrix = with_spectrum(values, seed=3)
    found = eigen.krylov_top(eigen.DenseOperator(matrix), 8, max_dim=200)
    assert found is not None and bool((found.values < 0).all())
    assert_same_subspace(found, matrix, 8)


def test_krylov_refuses_when_the_top_is_too_crowded_for_the_budget():
    """Eigenvalues crowding at the top (relative gaps ~1e-5 of the spread): refused, not guessed."""
    matrix = with_spectrum(-torch.logspace(-2, 2, 500, dtype=F64), seed=3)
    assert eigen.krylov_top(eigen.DenseOperator(matrix), 8, max_dim=250) is None


@pytest.mark.parametrize("gap", [0.0, 1e-14])
def test_a_cluster_straddling_r_is_certified_by_cutting_below_it(gap):
    """A cluster straddling r / r+1 (exact or within rounding): which of its vectors comes r-th is
    arbitrary and the reward the same, so the cut is put below the cluster and the answer certified."""
    values = [10.0, 9.0, 8.0, 5.0, 5.0 - gap, 5.0 - 2 * gap] + torch.linspace(2.0, -30.0, 394).tolist()
    matrix = with_spectrum(values, seed=4)
    found = eigen.krylov_top(eigen.DenseOperator(matrix), 4, max_dim=200)
    assert found is not None and found.cut_vectors.shape[1] >= 6
    assert_same_subspace(found, matrix, 4)
    assert found.values.tolist() == pytest.approx([10.0, 9.0, 8.0, 5.0], abs=1e-9)


def test_krylov_refuses_when_the_cluster_at_r_is_wider_than_the_block():
    """Ten equal eigenvalues from the r-th down: the block (r + 4 columns) cannot reach below them,
    so no cut has a gap and the dense solver decides."""
    values = [10.0, 9.0, 8.0] + [5.0] * 10 + torch.linspace(2.0, -30.0, 387).tolist()
    matrix = with_spectrum(values, seed=4)
    assert eigen.krylov_top(eigen.DenseOperator(matrix), 4, max_dim=200) is None
    # r = 3 has a clear gap (8 vs 5) and is certified
    assert eigen.krylov_top(eigen.DenseOperator(matrix), 3, max_dim=200) is not None


def test_the_bound_holds_and_is_not_vacuous_given_the_true_top_of_the_rest():
    """Ritz pairs of 60 perturbed top-6 eigenspaces, with tau the exact top of the matrix on their
    complement: the reward of the top 3 falls short of the best by no more than the bound (here
    6-9% of it), so a bound 100x too small or 100x too large would fail."""
    ratios = []
    for seed in range(60):
        values = torch.cat([torch.tensor([10.0, 9.0, 8.5, 8.0, 7.5, 7.0]), torch.linspace(5.0, -20.0, 54)]).to(F64)
        matrix = with_spectrum(values, seed=100 + seed)
        top = torch.linalg.eigh(matrix)[1].flip(1)[:, :6]
        space = torch.linalg.qr(top + 0.03 * torch.randn(60, 6, generator=gen(seed), dtype=F64))[0]
        complement = torch.linalg.qr(torch.cat([space, torch.randn(60, 54, generator=gen(seed), dtype=F64)], 1))[0][:, 6:]
        tau = float(torch.linalg.eigvalsh(complement.T @ matrix @ complement)[-1])
        theta, rotation = torch.linalg.eigh(space.T @ matrix @ space)
        ritz = space @ rotation.flip(1)
        check = eigen.reward_check(ritz, matrix @ ritz, theta.flip(0), 3, rest=tau)
        ratios.append(float(values[:3].sum() - check.values.sum()) / check.reward_bound)
    assert 0.0 < min(ratios) and max(ratios) <= 1.0
    assert max(ratios) >= 0.02


def test_a_space_missing_a_top_eigenvector_gets_no_certificate():
    """Rayleigh-Ritz on a space that lacks the top eigenvector: the top of the rest (10) lies above
    theta_2, so there is no gap and no bound."""
    matrix = with_spectrum([10.0, 9.0, 8.0] + torch.linspace(3.0, -5.0, 97).tolist(), seed=23)
    vectors = torch.linalg.eigh(matrix)[1].flip(1)
    space = vectors[:, 1:5]
    theta, rotation = torch.linalg.eigh(space.T @ matrix @ space)
    ritz = space @ rotation.flip(1)
    check = eigen.reward_check(ritz, matrix @ ritz, theta.flip(0), 2, rest=10.0)
    assert check.reward_bound == float("inf") and check.relative_bound() == float("inf")


def test_krylov_refuses_when_the_budget_is_too_small():
    matrix = decaying_with_negative_bulk(600, seed=5)
    assert eigen.krylov_top(eigen.DenseOperator(matrix), 16, max_dim=60) is None


def test_krylov_is_deterministic_and_sign_fixed_by_the_caller():
    matrix = decaying_with_negative_bulk(400, seed=6)
    first = eigen.krylov_top(eigen.DenseOperator(matrix), 6, max_dim=200)
    second = eigen.krylov_top(eigen.DenseOperator(matrix.clone()), 6, max_dim=200)
    assert torch.equal(first.vectors, second.vectors) and torch.equal(first.values, second.values)


def test_krylov_on_a_low_rank_sandwich_exhausts_the_space_and_stays_exact():
    """W D W^T with d_out > d_in has rank <= d_in: the Krylov space runs out and is exact."""
    weight = torch.randn(500, 40, generator=gen(7), dtype=F64)
    inner = with_spectrum(torch.linspace(5.0, -3.0, 40), seed=8)
    operator = eigen.SandwichOperator(weight, inner)
    found = eigen.krylov_top(operator, 6, max_dim=250)
    assert found is not None
    assert_same_subspace(found, operator.dense(), 6)


def low_rank_covariance(dim: int, tokens: int, seed: int, spread: float) -> torch.Tensor:
    x = torch.randn(tokens, dim, generator=gen(seed), dtype=F64) * torch.logspace(0, -spread, dim, dtype=F64)
    return x.T @ x / tokens


@pytest.mark.parametrize("side,shape", [("output", (400, 400)), ("input", (400, 400)), ("input", (900, 400)), ("input", (400, 700))])
def test_select_subspace_uses_krylov_where_r_is_small_and_agrees_with_eigh(side, shape, small_krylov_threshold):
    d_out, d_in = shape
    dim = d_out if side == "output" else d_in
    weight = torch.randn(d_out, d_in, generator=gen(9), dtype=F64) / d_in**0.5
    pos, neg = low_rank_covariance(dim, 1500, 10, 3.0), low_rank_covariance(dim, 1500, 11, 2.0)
    chosen = subspace.select_subspace(weight, pos, neg, side, 0.5, 8)
    assert chosen.solver == "krylov"
    inner = subspace.delta_covariance(pos, neg, 0.5)
    dense = subspace.dense_subspace(weight, inner, side, 8)
    matrix = inner if side == "output" else weight @ inner @ weight.T
    assert_same_answer(chosen, dense, matrix, 8)
    # the same sign convention as the dense path
    pivots = chosen.basis.abs().argmax(dim=0)
    assert bool((chosen.basis[pivots, torch.arange(8)] > 0).all())


def test_select_subspace_falls_back_to_eigh_when_krylov_refuses(small_krylov_threshold):
    weight = torch.randn(400, 400, generator=gen(12), dtype=F64)
    values = [4.0, 3.0] + [2.0] * 8 + torch.linspace(1.0, -5.0, 390).tolist()  # r = 3 cuts a cluster wider than the block
    cov = with_spectrum(values, seed=13)
    chosen = subspace.select_subspace(weight, cov, torch.zeros_like(cov), "output", 0.0, 3)
    assert chosen.solver == "eigh" and chosen.reward_bound == 0.0
    assert chosen.eigenvalues.tolist() == pytest.approx([4.0, 3.0, 2.0])


def test_small_problems_and_large_ranks_stay_on_eigh():
    weight = torch.randn(300, 300, generator=gen(14), dtype=F64)
    cov = low_rank_covariance(300, 600, 15, 1.0)
    assert subspace.select_subspace(weight, cov, cov * 0.5, "input", 0.5, 4).solver == "eigh"
    big = eigen.DenseOperator(torch.eye(2048, dtype=F64))
    per_block = eigen.KRYLOV_DIM_PER_BLOCK
    assert eigen.worth_krylov(big, 16, per_block) and not eigen.worth_krylov(big, 200, per_block)


def test_above_beta_075_krylov_needs_twice_the_room(monkeypatch):
    """Measured: the certificate takes 8-13 blocks at beta <= 0.75 and 12-25 above, so there a
    problem needs 40 blocks' worth of dimensions (not 20) for a try, and none at beta = 1."""
    tried = []
    monkeypatch.setattr(eigen, "krylov_top", lambda operator, rank, **_: tried.append(operator.dim))
    matrix = decaying_with_negative_bulk(700, seed=24)  # rank 8: blocks of 12, 58 blocks' worth
    for beta in (0.5, 0.75, 0.9, 0.99, 1.0):
        subspace.top_eigenpairs_dispatched(matrix, 8, beta)
    for beta in (0.5, 0.75, 0.9, 0.99, 1.0):
        subspace.top_eigenpairs_dispatched(matrix, 24, beta)  # blocks of 30: 23 blocks' worth
    assert tried == [700] * 4 + [700] * 2
    assert subspace.krylov_dims_per_block(0.75) == eigen.KRYLOV_DIM_PER_BLOCK
    assert subspace.krylov_dims_per_block(0.9) == 2 * eigen.KRYLOV_DIM_PER_BLOCK and subspace.krylov_dims_per_block(1.0) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_a_gpu_the_dense_eigh_runs_there_and_agrees_with_the_cpu(monkeypatch):
    monkeypatch.setattr(eigen, "KRYLOV_MIN_DIM", 10**9)  # the CPU side dense too: the same solver on both
    monkeypatch.setattr(mixed_eigen, "MIXED_MIN_DIM", 10**9)  # and float64 on both (mixed on a GPU: test_mixed_eigen)
    weight = torch.randn(1100, 900, generator=gen(16), dtype=F64)
    pos, neg = low_rank_covariance(900, 1500, 17, 1.5), low_rank_covariance(900, 1500, 18, 1.0)
    on_gpu = subspace.select_subspace(weight, pos.cuda(), neg.cuda(), "input", 0.5, 8)
    on_cpu = subspace.select_subspace(weight, pos, neg, "input", 0.5, 8)
    assert on_gpu.solver in ("eigh", "eigh-reduced") and on_gpu.basis.device.type == "cpu"
    assert sin_theta(on_gpu.basis, on_cpu.basis) <= 1e-6
    assert torch.allclose(on_gpu.eigenvalues, on_cpu.eigenvalues, rtol=1e-9)


def test_tall_weights_use_the_reduced_krylov_and_agree_with_eigh(small_krylov_threshold):
    """d_out > d_in: Krylov on L^T dCov L (W^T W = L L^T), certified against W dCov W^T itself,
    also for a badly conditioned W (singular values over six decades)."""
    u, _ = torch.linalg.qr(torch.randn(900, 400, generator=gen(19), dtype=F64))
    v, _ = torch.linalg.qr(torch.randn(400, 400, generator=gen(20), dtype=F64))
    for spread in (0.0, 6.0):
        weight = (u * torch.logspace(0, -spread, 400, dtype=F64)) @ v.T
        pos, neg = low_rank_covariance(400, 1500, 21, 3.0), low_rank_covariance(400, 1500, 22, 2.0)
        chosen = subspace.select_subspace(weight, pos, neg, "input", 0.5, 8)
        inner = subspace.delta_covariance(pos, neg, 0.5)
        matrix = weight @ inner @ weight.T
        assert chosen.solver == "krylov"
        assert_same_answer(chosen, subspace.top_eigenpairs(matrix, 8), matrix, 8)
    assert subspace.GRAMS.holds(weight)  # the energy diagnostics reuse W^T W
