"""sclora_tools.core.subspace: dCov, its top eigenpairs, Theorem 1, and the input-side fast paths."""

from __future__ import annotations

import math

import pytest
import torch

from sclora_tools.core import subspace
from tests.core.matrices import F64, eigengap, gen, orthonormal, projector, psd, randn, with_spectrum


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


def reward_of(basis, matrix):
    return float(torch.trace(basis.T @ matrix @ basis))


def inner_with_output_spectrum(weight, spectrum, seed):
    """M such that the nonzero spectrum of W M W^T is `spectrum` (M = R^-1 T R^-T, W = Q R)."""
    r_factor = torch.linalg.qr(weight)[1]
    target = with_spectrum(spectrum, seed=seed)
    return torch.linalg.solve(r_factor, torch.linalg.solve(r_factor, target).T)


def certified_reduced_dense(weight, inner, rank):
    """The Cholesky route alone (what subspace.reduced_subspace tries first): K = L^T dCov L solved
    densely, lifted and certified, or None."""
    solved = subspace.reduced_dense_eigenpairs(weight, inner, rank)
    return None if solved is None else subspace.certified_lift(weight, inner, *solved, rank, "eigh-reduced")


SPECTRA = {
    "clustered": [9.0, 9.0, 9.0 + 1e-9, 5.0, 4.0] + torch.linspace(1.0, -3.0, 19).tolist(),  # a tight cluster inside the top 5
    "negative": [3.0, 2.5, 2.0, 1.5, 1.2] + torch.linspace(-0.5, -50.0, 19).tolist(),  # dCov dominated by Cov-
}


@pytest.mark.parametrize("spectrum", list(SPECTRA))
def test_reduced_dense_path_gives_the_householder_answer_and_is_what_select_subspace_takes(spectrum):
    d_out, d_in, rank = 60, 24, 5
    weight = randn(d_out, d_in, seed=31)
    inner = inner_with_output_spectrum(weight, SPECTRA[spectrum], seed=32)
    fast = certified_reduced_dense(weight, inner, rank)
    householder = subspace.top_eigenpairs_of_projection(weight, inner, rank)
    assert fast is not None and householder is not None
    full = subspace.output_covariance(weight, inner)
    best = reward_of(householder.basis, full)
    assert abs(reward_of(fast.basis, full) - best) <= 1e-6 * abs(best)
    assert torch.allclose(fast.eigenvalues, torch.tensor(SPECTRA[spectrum][:rank], dtype=F64), rtol=1e-9)
    assert torch.allclose(fast.basis.T @ fast.basis, torch.eye(rank, dtype=F64), atol=1e-12)
    assert subspace.select_subspace(weight, inner, torch.zeros_like(inner), "input", 0.0, rank).solver == "eigh-reduced"


def test_reduced_dense_path_refuses_what_it_cannot_certify_and_select_subspace_still_answers():
    d_out, d_in, rank = 40, 12, 4
    pos, neg = psd(d_in, seed=36), psd(d_in, seed=37, scale=0.3)
    inner = subspace.delta_covariance(pos, neg, 0.5)
    deficient = randn(d_out, d_in, seed=38)
    deficient[:, -1] = deficient[:, 0]  # W^T W singular: no Cholesky
    split = randn(d_out, d_in, seed=39)
    tied_spectrum = [5.0, 4.0, 3.0, 2.0, 2.0] + torch.linspace(1.0, 0.1, d_in - 5).tolist()  # r = 4 splits the 2.0 pair
    tied_inner = inner_with_output_spectrum(split, tied_spectrum, seed=40)
    assert torch.allclose(torch.linalg.eigvalsh(split @ tied_inner @ split.T)[-5:], torch.tensor([2.0, 2.0, 3.0, 4.0, 5.0], dtype=F64))
    for weight, inner_of_case in [(deficient, inner), (split, tied_inner)]:
        assert certified_reduced_dense(weight, inner_of_case, rank) is None
    positive = certified_reduced_dense(split, psd(d_in, seed=41), d_in)  # r = d_in: the rest is the zeros off range(W)
    assert positive is not None and torch.allclose((split.T @ positive.basis).norm(), split.norm())
    assert certified_reduced_dense(split, inner, d_in) is None  # some eigenvalue <= 0: the zeros would join the top r
    chosen = subspace.select_subspace(deficient, pos, neg, "input", 0.5, rank)
    full = subspace.output_covariance(deficient, inner)
    expected = torch.linalg.eigvalsh(full).flip(0)[:rank]
    assert torch.allclose(chosen.eigenvalues, expected, rtol=1e-9, atol=1e-9)


def test_a_reduced_problem_with_negatives_in_its_top_r_goes_straight_to_the_full_one(monkeypatch):
    """The Householder path would solve the same d_in-sized problem only to refuse it: not tried."""
    d_out, d_in, rank = 12, 8, 7
    weight = randn(d_out, d_in, seed=16)
    inner = inner_with_output_spectrum(weight, [100.0, 60.0] + torch.linspace(-0.5, -4.0, 6).tolist(), seed=17)
    monkeypatch.setattr(subspace, "top_eigenpairs_of_projection", lambda *args: pytest.fail("Householder path tried"))
    chosen = subspace.dense_subspace(weight, inner, "input", rank)
    expected = torch.linalg.eigvalsh(subspace.output_covariance(weight, inner)).flip(0)[:rank]
    assert torch.allclose(chosen.eigenvalues, expected, atol=1e-9)
    assert chosen.eigenvalues[2:6].abs().max() < 1e-9  # the four zeros off range(W) joined the top r
