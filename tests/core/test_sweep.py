"""core.sweep: each beta's subspace is the one select_subspace (what init runs) chooses, by the
same solver: the certified Krylov one where r << d, a dense eigh elsewhere."""

from __future__ import annotations

import pytest
import torch

from sclora_tools.core import eigen, subspace, sweep

from .matrices import randn, with_spectrum

BETAS = [0.0, 0.5, 0.9, 1.0]
RANK = 8


def decaying(dim: int, seed: int, scale: float) -> torch.Tensor:
    """A covariance with a power-law spectrum, as calibration covariances have."""
    return with_spectrum(scale / torch.arange(1, dim + 1, dtype=torch.float64) ** 1.5, seed)


def site(d_out: int, d_in: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    weight = randn(d_out, d_in, seed=seed, scale=d_in**-0.5)
    return weight, decaying(d_in, seed + 1, 30.0), decaying(d_in, seed + 2, 20.0)


def reward(basis: torch.Tensor, matrix: torch.Tensor) -> float:
    return float(torch.trace(basis.T @ matrix @ basis))


def count_krylov_calls(monkeypatch) -> list:
    calls = []
    original = eigen.krylov_top

    def counted(*args, **kwargs):
        found = original(*args, **kwargs)
        calls.append(found is not None)
        return found

    monkeypatch.setattr(eigen, "krylov_top", counted)
    return calls


@pytest.mark.parametrize("shape", [(400, 400), (300, 400)])
def test_each_beta_gets_the_objective_select_subspace_gets(shape):
    weight, pos, neg = site(*shape, seed=3)
    points = sweep.sweep_site(sweep.prepare_site(weight, pos, neg, "input"), BETAS, RANK)
    for beta, point in zip(BETAS, points, strict=True):
        chosen = subspace.select_subspace(weight, pos, neg, "input", beta, RANK)
        assert point.objective == pytest.approx(float(chosen.eigenvalues.sum()), rel=1e-10, abs=1e-12)


def test_where_r_is_small_the_sweep_solves_by_krylov_and_keeps_the_dense_answer(small_krylov_threshold, monkeypatch):
    weight, pos, neg = site(400, 400, seed=5)
    prepared = sweep.prepare_site(weight, pos, neg, "input")
    calls = count_krylov_calls(monkeypatch)
    fast = sweep.sweep_site(prepared, BETAS, RANK)
    # Krylov answers every beta below 1, certified; at beta = 1 the top of -Cov- is the crowded
    # bottom of Cov-'s power law, where no gap is resolved, so it is not even tried
    assert calls == [True, True, True]
    monkeypatch.setattr(eigen, "KRYLOV_MIN_DIM", 10**9)
    dense = sweep.sweep_site(prepared, BETAS, RANK)
    assert calls == [True, True, True]  # the dense run tried no Krylov
    for beta, a, b in zip(BETAS, fast, dense, strict=True):
        assert a.objective == pytest.approx(b.objective, rel=1e-6), beta
        # the certificate pins R(S) = (1 - beta) captured+ - beta captured-; each part moves with the
        # subspace, which it pins only within sqrt(bound / gap) (core.eigen)
        assert a.captured_pos == pytest.approx(b.captured_pos, rel=1e-5, abs=1e-9), beta
        assert a.captured_neg == pytest.approx(b.captured_neg, rel=1e-5, abs=1e-9), beta


def test_the_dispatched_solver_returns_the_dense_reward(small_krylov_threshold):
    matrix = decaying(400, 11, 50.0) - decaying(400, 12, 40.0)
    found = subspace.top_eigenpairs_dispatched(matrix, RANK, 0.5)
    exact = subspace.top_eigenpairs(matrix, RANK)
    assert found.solver == "krylov" and 0.0 < found.reward_bound <= eigen.REWARD_TOLERANCE * float(exact.eigenvalues.sum())
    assert reward(found.basis, matrix) == pytest.approx(reward(exact.basis, matrix), rel=1e-6)
    short = exact.eigenvalues - found.eigenvalues  # each >= 0 (interlacing) and within the bound
    assert bool((short >= -1e-12).all()) and bool((short <= found.reward_bound + 1e-12).all())


def test_at_beta_1_the_dense_eigh_answers_without_a_krylov_try(small_krylov_threshold, monkeypatch):
    calls = count_krylov_calls(monkeypatch)
    matrix = -decaying(400, 15, 40.0)
    assert subspace.top_eigenpairs_dispatched(matrix, RANK, 1.0).solver == "eigh"
    weight, pos, neg = site(400, 400, seed=7)
    assert subspace.select_subspace(weight, pos, neg, "input", 1.0, RANK).solver == "eigh"
    assert calls == []


def test_tall_weights_solve_the_reduced_problem_by_krylov_and_fall_back_like_init(small_krylov_threshold, monkeypatch):
    """d_out > d_in (gate/up): each beta's reduced d_in-sized problem by Krylov; where the reduced
    answer cannot decide (beta = 1), the full problem, with the answer init gets."""
    weight, pos, neg = site(500, 400, seed=9)
    calls = count_krylov_calls(monkeypatch)
    points = sweep.sweep_site(sweep.prepare_site(weight, pos, neg, "input"), BETAS, RANK)
    assert calls == [True, True, True]
    for beta, point in zip(BETAS, points, strict=True):
        chosen = subspace.select_subspace(weight, pos, neg, "input", beta, RANK)
        assert point.objective == pytest.approx(float(chosen.eigenvalues.sum()), rel=1e-6, abs=1e-12), beta
        reference = subspace.top_eigenpairs(subspace.output_covariance(weight, subspace.delta_covariance(pos, neg, beta)), RANK)
        assert point.objective == pytest.approx(float(reference.eigenvalues.sum()), rel=1e-6, abs=1e-12), beta


def test_small_problems_stay_on_the_dense_eigh():
    matrix = decaying(64, 13, 5.0) - decaying(64, 14, 4.0)
    assert subspace.top_eigenpairs_dispatched(matrix, RANK, 0.5).solver == "eigh"
