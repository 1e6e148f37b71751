"""core.mixed_eigen: a float32 eigh refined and certified in float64 returns what the float64
eigh returns (reward within its certified bound and 1e-6 relative, eigenvalues within the bound,
the subspace within sqrt(bound / gap)) on negative, clustered, flat and massive-outlier spectra
and at any scale; refuses (so the caller's float64 eigh decides) what float32 cannot resolve, a
refusal that the Cholesky proof of the certificate's premise makes; and select_subspace takes it
for the dense problems where Krylov does not pay."""

from __future__ import annotations

import pytest
import torch

from sclora_tools.core import eigen, mixed_eigen, subspace
from tests.core.test_eigen import F64, assert_same_answer, assert_same_subspace, decaying_with_negative_bulk, gen, low_rank_covariance, with_spectrum

CLUSTERED = [9.0] * 5 + [7.0] * 3 + [6.5] * 4 + [6.0] * 4 + torch.linspace(3.0, -40.0, 584).tolist()  # r = 16 ends a cluster
ALL_NEGATIVE = [-1.0 * 1.5**k for k in range(12)] + torch.linspace(-150.0, -400.0, 588).tolist()


@pytest.fixture
def mixed_from_512(monkeypatch):
    """Let 600-dim problems take the mixed route (the production threshold is 2,048), so the
    dispatch is tested at a size a test can afford."""
    monkeypatch.setattr(mixed_eigen, "MIXED_MIN_DIM", 512)


def with_massive(value: float, seed: int, top=None) -> torch.Tensor:
    """One massive-activation eigenvalue 1e4-1e6 times the r-th one (SmolLM2's q_proj at beta
    0.9), and by default a top with gaps of a few percent of it."""
    top = torch.linspace(1.0, 0.2, 40).tolist() if top is None else top
    return with_spectrum([value] + top + torch.linspace(0.15, -20.0, 599 - len(top)).tolist(), seed=seed)


def q_proj_like(seed: int) -> torch.Tensor:
    """SmolLM2's layer-0 q_proj at beta 0.9: one massive eigenvalue (-503), a negative tail from
    -73 and a top falling as 0.11 / k^2, so lambda_64 = 2.7e-5 sits under float32's error even
    after the deflation (~1e-4): the float32 order near r is scrambled."""
    k = torch.arange(1, 301, dtype=F64)
    return with_spectrum(torch.cat([torch.tensor([-503.0], dtype=F64), -73.0 / k[:299], 0.11 / k**2]).tolist(), seed=seed)


@pytest.mark.parametrize("name,rank", [("negative bulk", 16), ("negative bulk", 64), ("clustered", 16), ("all negative", 8)])
def test_mixed_matches_eigh(name, rank):
    matrix = {"negative bulk": decaying_with_negative_bulk(600, seed=1), "clustered": with_spectrum(CLUSTERED, seed=2),
              "all negative": with_spectrum(ALL_NEGATIVE, seed=3)}[name]
    found = mixed_eigen.mixed_top(matrix, rank)
    assert found is not None and found.solver == "mixed"
    assert_same_subspace(found, matrix, rank)


@pytest.mark.parametrize("value", [-1e6, 1e6])
def test_a_massive_direction_is_taken_out_before_the_float32_eigh(value, monkeypatch):
    """A massive eigenvalue, below the rest or at the very top: found in float64, deflated, and the
    answer certified; without the deflation float32's error (eps32 x 1e6) swamps the gaps near r."""
    matrix = with_massive(value, seed=5)
    values, vectors = mixed_eigen.massive_pairs(matrix)
    assert values.tolist() == pytest.approx([value], rel=1e-12) and vectors.shape == (600, 1)
    found = mixed_eigen.mixed_top(matrix, 16)
    assert found is not None
    assert_same_subspace(found, matrix, 16)
    if value > 0:
        assert float(found.values[0]) == pytest.approx(value, rel=1e-12)
    monkeypatch.setattr(mixed_eigen, "DEFLATE_STEPS", 0)  # nothing converges: nothing deflated
    assert mixed_eigen.massive_pairs(matrix)[0].numel() == 0
    assert mixed_eigen.mixed_top(matrix, 16) is None


@pytest.mark.parametrize("positive", [0, 8])
def test_a_top_with_few_positive_eigenvalues_and_a_massive_direction_is_certified(positive):
    """The deflated direction leaves a spurious ~0 eigenvalue in M', above every negative one: it
    is dropped from the float32 block instead of taking the place of a real top eigenvector."""
    top = torch.linspace(2.0, 0.5, positive).tolist() + torch.linspace(-0.1, -1.0, 40).tolist()
    matrix = with_massive(-1e5, seed=6, top=top)
    found = mixed_eigen.mixed_top(matrix, 16)
    assert found is not None
    assert_same_subspace(found, matrix, 16)


def test_nothing_is_deflated_without_a_dominant_direction():
    values, vectors = mixed_eigen.massive_pairs(decaying_with_negative_bulk(600, seed=1))
    assert values.numel() == 0 and vectors.shape == (600, 0)


@pytest.mark.parametrize("scale", [1e40, 1e-42])
def test_any_scale_is_solved_through_an_exact_power_of_two(scale):
    """Past float32's range (overflow at 1e40, subnormals at 1e-42) the matrix is scaled by a power
    of two before the cast, exactly, and the answer is the float64 eigh's."""
    matrix = decaying_with_negative_bulk(600, seed=7) * scale
    found = mixed_eigen.mixed_top(matrix, 16)
    assert found is not None
    assert_same_subspace(found, matrix, 16)


def test_complement_below_proves_the_top_beyond_a_span_and_nothing_more():
    values = torch.tensor([10.0, 9.0, 8.0, 7.0, 6.9] + torch.linspace(3.0, -5.0, 95).tolist(), dtype=F64)
    matrix = with_spectrum(values, seed=23)
    vectors = torch.linalg.eigh(matrix)[1].flip(1)
    top4, lacking_the_4th = vectors[:, :4], torch.cat([vectors[:, :3], vectors[:, 4:5]], dim=1)
    assert mixed_eigen.complement_below(matrix, top4, 6.9 + 1e-9)
    assert not mixed_eigen.complement_below(matrix, top4, 6.9 - 1e-9)
    assert not mixed_eigen.complement_below(matrix, lacking_the_4th, 6.9 + 1e-9)  # 7.0 lies in its complement
    assert mixed_eigen.complement_below(matrix, lacking_the_4th, 7.0 + 1e-9)
    assert not mixed_eigen.complement_below(matrix, top4, float("inf"))


def test_estimated_ceilings_steer_the_cut_away_from_a_swapped_eigenvector():
    """What float32 can hand over when its errors exceed the gaps near r: exact eigenvectors, but
    the 4th-largest swapped for the 7th. Every residual is 0, so the Ritz values alone (tau from
    the next Ritz value) certify a wrong answer; with ceilings above the true spectrum the swapped
    cut is not matched to the top k (Kahan), and only the cut below the swap remains."""
    values = torch.tensor([10.0, 9.0, 8.0, 7.0, 6.9, 6.8, 6.7] + torch.linspace(3.0, -5.0, 93).tolist(), dtype=F64)
    matrix = with_spectrum(values, seed=23)
    vectors = torch.linalg.eigh(matrix)[1].flip(1)
    space = torch.cat([vectors[:, :3], vectors[:, 4:7], vectors[:, 8:10]], dim=1)  # lacks the 4th (7.0), holds 6.9, 6.8, 6.7
    theta, rotation = torch.linalg.eigh(space.T @ matrix @ space)
    theta, ritz = theta.flip(0), space @ rotation.flip(1)
    blind = eigen.reward_check(ritz, matrix @ ritz, theta, 4)
    assert blind.relative_bound() <= eigen.REWARD_TOLERANCE and float(values[:4].sum() - blind.values.sum()) > 0.09
    assert not mixed_eigen.complement_below(matrix, blind.cut_vectors, blind.rest_bound)  # the proof refuses it too
    ceilings = torch.cat([values + 1e-9, torch.tensor([-float("inf")], dtype=F64)])
    assert eigen.reward_check(ritz, matrix @ ritz, theta, 4, ceilings=ceilings).reward_bound == float("inf")
    below = eigen.reward_check(ritz, matrix @ ritz, theta, 3, ceilings=ceilings)
    assert below.relative_bound() <= eigen.REWARD_TOLERANCE and mixed_eigen.complement_below(matrix, below.cut_vectors, below.rest_bound)


def without_ceilings(monkeypatch) -> None:
    krylov_top = eigen.krylov_top
    monkeypatch.setattr(eigen, "krylov_top", lambda *args, **options: krylov_top(*args, **{**options, "ceilings": None}))


@pytest.mark.parametrize("rank", [16, 64])
def test_where_float32_misplaces_eigenvectors_the_proof_alone_refuses(rank, monkeypatch):
    """The estimated ceilings off, the Cholesky proof on: the misplaced eigenvector lies in the
    complement above tau, and the proof refuses what the Ritz values would certify."""
    without_ceilings(monkeypatch)
    calls = []
    complement_below = mixed_eigen.complement_below
    monkeypatch.setattr(mixed_eigen, "complement_below", lambda *args: calls.append(1) or complement_below(*args))
    assert mixed_eigen.mixed_top(q_proj_like(seed=40), rank) is None and calls == [1]


@pytest.mark.parametrize("rank", [16, 64])
def test_where_float32_misplaces_eigenvectors_mixed_refuses_and_eigh_answers(rank, monkeypatch, mixed_from_512):
    """Without the proof and the ceilings the Ritz values of the float32 space claim a bound of
    1e-11 and fall short by 5e-6 to 2e-4 (measured: this is what they are for); with them (here
    the ceilings already steer every cut away), no certificate, and the float64 eigh answers."""
    matrix = q_proj_like(seed=40)
    assert mixed_eigen.mixed_top(matrix, rank) is None
    chosen = subspace.formed_eigenpairs(matrix, rank)
    assert chosen.solver == "eigh" and torch.equal(chosen.basis, subspace.top_eigenpairs(matrix, rank).basis)
    without_ceilings(monkeypatch)
    monkeypatch.setattr(mixed_eigen, "complement_below", lambda *_: True)
    blind = mixed_eigen.mixed_top(matrix, rank)
    best = float(torch.linalg.eigvalsh(matrix).flip(0)[:rank].sum())
    assert blind is not None and best - float(blind.values.sum()) > 1e4 * blind.reward_bound


@pytest.mark.parametrize("seed", range(3))
def test_a_flat_spectrum_at_production_size_is_certified_only_when_right(seed):
    """Equally spaced eigenvalues at 1,024 dimensions, where MKL's float32 eigh was seen 2.4 u ||M||
    outside the first version's Weyl estimate: certified, and right."""
    matrix = with_spectrum(torch.linspace(-20.0, 20.0, 1024).tolist(), seed=seed)
    found = mixed_eigen.mixed_top(matrix, 64)
    assert found is not None  # certified: gaps of 0.04 against float32's ~1e-4
    assert_same_subspace(found, matrix, 64)


def test_mixed_refuses_what_float32_cannot_resolve_and_the_dense_route_still_answers(mixed_from_512):
    """Many large eigenvalues (no few to deflate) a million times the top ones, whose gaps float32
    cannot see (SmolLM2's o_proj at layer 0, beta 0.9, rank 64): refused, then a float64 eigh."""
    values = torch.linspace(1e-6, 5e-7, 40).tolist() + torch.linspace(-1e5, -1e6, 560).tolist()
    matrix = with_spectrum(values, seed=6)
    assert mixed_eigen.mixed_top(matrix, 16) is None
    chosen = subspace.formed_eigenpairs(matrix, 16)
    assert chosen.solver == "eigh" and torch.equal(chosen.basis, subspace.top_eigenpairs(matrix, 16).basis)


def test_mixed_is_deterministic():
    matrix = decaying_with_negative_bulk(600, seed=8)
    first, second = mixed_eigen.mixed_top(matrix, 16), mixed_eigen.mixed_top(matrix.clone(), 16)
    assert torch.equal(first.vectors, second.vectors) and torch.equal(first.values, second.values)


@pytest.mark.parametrize("side,shape,solver", [("output", (600, 600), "mixed"), ("input", (600, 600), "mixed"),
                                               ("input", (1200, 600), "mixed-reduced")])
def test_select_subspace_takes_mixed_where_krylov_does_not_pay(side, shape, solver, mixed_from_512):
    """Rank 64 at 600 dimensions: 7.5 blocks' worth, too few for Krylov, enough for mixed."""
    d_out, d_in = shape
    dim = d_out if side == "output" else d_in
    weight = torch.randn(d_out, d_in, generator=gen(9), dtype=F64) / d_in**0.5
    pos, neg = low_rank_covariance(dim, 1500, 10, 3.0), low_rank_covariance(dim, 1500, 11, 2.0)
    chosen = subspace.select_subspace(weight, pos, neg, side, 0.5, 64)
    assert chosen.solver == solver and chosen.reward_bound > 0.0
    inner = subspace.delta_covariance(pos, neg, 0.5)
    matrix = inner if side == "output" else weight @ inner @ weight.T
    assert_same_answer(chosen, subspace.top_eigenpairs(matrix, 64), matrix, 64)


def test_the_householder_reduction_keeps_the_mixed_solver_and_its_bound(mixed_from_512):
    weight = torch.randn(1200, 600, generator=gen(15), dtype=F64) / 600**0.5
    inner = low_rank_covariance(600, 1500, 16, 3.0) - 0.3 * low_rank_covariance(600, 1500, 17, 2.0)
    chosen = subspace.top_eigenpairs_of_projection(weight, inner, 16)
    assert chosen is not None and chosen.solver == "mixed" and chosen.reward_bound > 0.0
    matrix = weight @ inner @ weight.T
    assert_same_answer(chosen, subspace.top_eigenpairs(matrix, 16), matrix, 16)


def test_at_beta_1_the_mixed_solver_is_not_tried(monkeypatch, mixed_from_512):
    """The top of -Cov- is the crowded bottom of Cov-: float32 cannot order it, so no try there."""
    tried = []
    mixed_top = mixed_eigen.mixed_top
    monkeypatch.setattr(mixed_eigen, "mixed_top", lambda matrix, rank, **options: tried.append(matrix.shape[0]) or mixed_top(matrix, rank))
    weight = torch.randn(1200, 600, generator=gen(18), dtype=F64) / 600**0.5
    pos, neg = low_rank_covariance(600, 1500, 19, 3.0), low_rank_covariance(600, 1500, 20, 2.0)
    matrix = subspace.delta_covariance(pos, neg, 1.0)
    for chosen in (subspace.select_subspace(weight, pos, neg, "input", 1.0, 64), subspace.select_subspace(weight, pos, neg, "output", 1.0, 64),
                   subspace.top_eigenpairs_dispatched(matrix, 64, 1.0)):
        assert chosen.solver in ("eigh", "eigh-reduced")
    assert tried == []
    subspace.top_eigenpairs_dispatched(matrix, 64, 0.9)
    assert tried == [600]


def test_small_problems_and_wide_blocks_stay_on_the_float64_eigh():
    assert mixed_eigen.worth_mixed(2048, 64) and mixed_eigen.worth_mixed(4096, 256)
    assert not mixed_eigen.worth_mixed(1024, 16) and not mixed_eigen.worth_mixed(4096, 1200)  # under 2,048; a block over a third
    assert subspace.formed_eigenpairs(decaying_with_negative_bulk(600, seed=12), 8).solver == "eigh"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_a_gpu_mixed_runs_there_and_matches_eigh():
    matrix = with_massive(-1e6, seed=13)
    found = mixed_eigen.mixed_top(matrix.cuda(), 16)
    assert found is not None and found.vectors.device.type == "cuda"
    cpu = eigen.Eigenpairs(values=found.values.cpu(), vectors=found.vectors.cpu(), solver=found.solver, reward_bound=found.reward_bound)
    assert_same_subspace(cpu, matrix, 16)
