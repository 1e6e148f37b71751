"""Storage forms of a covariance: exact layouts, per-entry error bounds, and the effect that
matters, on the chosen subspace (reward R(S) under the float64 covariances)."""

from __future__ import annotations

import pytest
import torch

from sclora_tools.core import covariance_codec as codec
from sclora_tools.core import subspace

F64 = torch.float64


def activations_like(dim: int, tokens: int, seed: int) -> torch.Tensor:
    """Covariance of LLM-like activations: power-law spectrum, random basis, a few outlier
    channels 30x larger than the rest, one dead channel."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=F64))
    spectrum = torch.arange(1, dim + 1, dtype=F64) ** -1.0
    x = (torch.randn(tokens, dim, generator=generator, dtype=F64) * spectrum.sqrt()) @ basis.T
    x[:, torch.randperm(dim, generator=generator)[:3]] *= 30.0
    x[:, 5] = 0.0
    return x.T @ x / tokens


@pytest.fixture(scope="module")
def covariance() -> torch.Tensor:
    return activations_like(96, 400, seed=0)


@pytest.mark.parametrize("form", codec.FORMATS)
def test_every_form_decodes_to_a_symmetric_float64_matrix_of_the_stated_size(form, covariance):
    parts = codec.encode(covariance, form)
    decoded = codec.decode(parts, 96, form)
    assert decoded.dtype == F64 and decoded.shape == (96, 96) and torch.equal(decoded, decoded.T)
    assert sum(t.numel() * t.element_size() for t in parts.values()) == codec.stored_bytes(96, form)
    assert bool((decoded[5] == 0).all())  # a dead channel stays exactly zero


@pytest.mark.parametrize("form", codec.LOSSLESS)
def test_lossless_forms_are_exact(form, covariance):
    assert torch.equal(codec.decode(codec.encode(covariance, form), 96, form), covariance)


@pytest.mark.parametrize("form, relative", [("float32", 2.0**-24), ("float24", 2.0**-16)])
def test_float_forms_round_each_entry_to_nearest(form, relative, covariance):
    decoded = codec.decode(codec.encode(covariance, form), 96, form)
    error = (decoded - covariance).abs()
    assert bool((error <= relative * covariance.abs() * (1 + 1e-9)).all())
    assert error.max() > 0


@pytest.mark.parametrize("form, step", [("corr24", 1 / codec.CORR24_SCALE), ("corr16", 1 / codec.CORR16_SCALE)])
def test_correlation_forms_keep_variances_exact_and_bound_the_error_by_the_scales(form, step, covariance):
    decoded = codec.decode(codec.encode(covariance, form), 96, form)
    assert torch.equal(decoded.diagonal(), covariance.diagonal())
    scales = covariance.diagonal().sqrt()
    bound = (0.5 * step + 1e-12) * torch.outer(scales, scales)
    assert bool(((decoded - covariance).abs() <= bound).all())


def test_float24_bytes_round_trip_negative_values_and_carries():
    values = torch.tensor([1.0, -1.0, 1.0 - 2.0**-20, -3.0e-7, 6.5e4, 0.0], dtype=torch.float32)
    back = codec.float24_values(codec.float24_bytes(values))
    assert back.tolist()[:2] == [1.0, -1.0] and back[2].item() == 1.0  # rounds up into the next binade
    assert torch.allclose(back, values, rtol=2.0**-16, atol=0)
    ints = torch.tensor([0, 1, -1, 2**23 - 1, -(2**23)], dtype=torch.int32)
    assert torch.equal(codec.int24_values(codec.int24_bytes(ints)), ints)


def relative_reward_loss(cov_pos, cov_neg, stored_pos, stored_neg, beta, rank, weight=None):
    """(R* - R(S_stored)) / |R*| with R under the float64 covariances, at the output of h = W x."""
    weight = torch.eye(cov_pos.shape[0], dtype=F64) if weight is None else weight
    side = "input"
    chosen = subspace.select_subspace(weight, stored_pos, stored_neg, side, beta, rank).basis
    best = subspace.select_subspace(weight, cov_pos, cov_neg, side, beta, rank).basis
    true = subspace.output_covariance(weight, subspace.delta_covariance(cov_pos, cov_neg, beta))
    reward = lambda basis: torch.trace(basis.T @ true @ basis).item()  # noqa: E731
    return (reward(best) - reward(chosen)) / abs(reward(best))


def test_auto_stores_correlations_only_for_well_determined_covariances():
    assert codec.resolve_form("auto", fewest_tokens=2 * 4096, largest_dim=4096) == "corr24"
    assert codec.resolve_form("auto", fewest_tokens=2 * 4096 - 1, largest_dim=4096) == "float32"
    assert codec.resolve_form("float64", fewest_tokens=10, largest_dim=4096) == "float64"


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.99])
def test_corr24_moves_the_chosen_subspace_reward_by_less_than_1e_minus_5(beta):
    """What auto stores for well-determined covariances (4 tokens per dimension here)."""
    cov_pos, cov_neg = activations_like(256, 1024, seed=1), activations_like(256, 1024, seed=2)
    weight = torch.randn(320, 256, generator=torch.Generator().manual_seed(3), dtype=F64) / 16
    stored = [codec.decode(codec.encode(c, "corr24"), 256, "corr24") for c in (cov_pos, cov_neg)]
    for rank in (8, 64):
        loss = relative_reward_loss(cov_pos, cov_neg, *stored, beta, rank, weight)
        assert -1e-12 <= loss <= 1e-5, (rank, loss)


# ------------------------------------------ decode against the simple definitions, bit for bit


def ref_int24_values(stored):
    wide = stored.reshape(-1, 3).to(torch.int64)
    values = wide[:, 0] | (wide[:, 1] << 8) | (wide[:, 2] << 16)
    return torch.where(values >= 2**23, values - 2**24, values).to(torch.int32)


def ref_float24_values(stored):
    bits = ref_int24_values(stored).to(torch.int64) << 8
    return torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32).view(torch.float32)


def ref_unpack_symmetric(packed, dim, diagonal=None):
    matrix = torch.zeros(dim, dim, dtype=F64)
    upper = torch.ones(dim, dim, dtype=torch.bool).triu(0 if diagonal is None else 1)
    matrix[upper] = packed.to(F64)
    matrix += matrix.triu(1).T
    if diagonal is not None:
        matrix.diagonal().copy_(diagonal.to(F64))
    return matrix


def ref_decode(parts, dim, form):
    """Scatter the upper triangle, mirror it by a sum, then scale the correlations by outer(s, s)."""
    main = parts[""]
    if form == "float64":
        return main.to(F64)
    if form in ("float64-packed", "float32"):
        return ref_unpack_symmetric(main, dim)
    if form == "float24":
        return ref_unpack_symmetric(ref_float24_values(main), dim)
    scale = codec.CORR16_SCALE if form == "corr16" else codec.CORR24_SCALE
    integers = main if form == "corr16" else ref_int24_values(main)
    diagonal = parts["diag"].to(F64)
    scales = diagonal.clamp_min(0).sqrt()
    matrix = ref_unpack_symmetric(integers.to(F64) / scale, dim, torch.ones(dim, dtype=F64))
    matrix *= torch.outer(scales, scales)
    matrix.diagonal().copy_(diagonal)
    return matrix


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def edge_covariance(dim, seed):
    """A covariance with negative entries, a dead channel, channels that correlate exactly +1 and
    -1 with another, and entries that are -0.0."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3 * dim + 2, dim, generator=generator, dtype=F64) * torch.rand(dim, generator=generator, dtype=F64) * 8
    if dim >= 3:
        x[:, 1], x[:, 2] = x[:, 0] * 3.0, x[:, 0] * -0.5
    x[:, dim - 1] = 0.0
    covariance = x.T @ x / x.shape[0]
    covariance[0, dim - 1] = covariance[dim - 1, 0] = -0.0
    return covariance


def arbitrary_parts(dim, form, seed):
    """Stored parts with every bit pattern likely: random bytes, diagonals negative, zero or huge."""
    generator = torch.Generator().manual_seed(seed)
    random_bytes = lambda count: torch.randint(0, 256, (count,), generator=generator, dtype=torch.uint8)  # noqa: E731
    strict, full = codec.packed_length(dim) - dim, codec.packed_length(dim)
    if form == "float24":
        return {"": random_bytes(3 * full).reshape(full, 3)}
    diagonal = torch.randn(dim, generator=generator, dtype=F64) * 10.0 ** torch.randint(-5, 6, (dim,), generator=generator)
    diagonal[::3] = 0.0
    if form == "corr16":
        return {"": random_bytes(2 * strict).view(torch.int16), "diag": diagonal}
    stored = random_bytes(3 * strict).reshape(strict, 3)
    stored[: min(strict, 4)] = torch.tensor([[0, 0, 0x80], [0xFF, 0xFF, 0x7F], [0xFF, 0xFF, 0xFF], [1, 0, 0]], dtype=torch.uint8)[: min(strict, 4)]
    return {"": stored, "diag": diagonal}


@pytest.mark.parametrize("dim", [1, 2, 3, 130, 577])
@pytest.mark.parametrize("form", codec.FORMATS)
def test_decode_matches_the_simple_definition_bit_for_bit(form, dim):
    for seed in range(2):
        parts = codec.encode(edge_covariance(dim, seed), form)
        assert same_bits(codec.decode(parts, dim, form), ref_decode(parts, dim, form))


@pytest.mark.parametrize("dim", [1, 2, 3, 130, 577])
@pytest.mark.parametrize("form", ["float24", "corr24", "corr16"])
def test_decode_of_arbitrary_stored_bits_matches_the_simple_definition(form, dim):
    parts = arbitrary_parts(dim, form, seed=dim)
    assert same_bits(codec.decode(parts, dim, form), ref_decode(parts, dim, form))


def test_decode_keeps_signed_zeros_as_the_simple_definition_does():
    covariance = torch.tensor([[-0.0, -0.0], [-0.0, 4.0]], dtype=F64)
    for form in ("float64-packed", "float32", "float24"):
        decoded = codec.decode(codec.encode(covariance, form), 2, form)
        assert same_bits(decoded, ref_decode(codec.encode(covariance, form), 2, form))
        assert not bool(decoded.signbit().any())  # the sum that mirrored the triangle made them +0.0
    parts = {"": torch.tensor([-1], dtype=torch.int16), "diag": torch.tensor([-1.0, 4.0], dtype=F64)}
    decoded = codec.decode(parts, 2, "corr16")
    assert same_bits(decoded, ref_decode(parts, 2, "corr16")) and bool(decoded[0, 1].signbit())


def test_every_int24_word_layout_sign_extends_like_the_simple_definition():
    every = torch.arange(-(2**23), 2**23, 4099, dtype=torch.int32)
    stored = codec.int24_bytes(torch.cat([every, torch.tensor([-(2**23), -1, 0, 1, 2**23 - 1], dtype=torch.int32)]))
    expected = ref_int24_values(stored)
    assert torch.equal(codec.int24_values(stored), expected)
    assert torch.equal(codec.int24_words_overlapping(stored) >> 8, expected)
    assert torch.equal(codec.int24_words_padded(stored) >> 8, expected)  # the path off the CPU
    assert torch.equal(codec.float24_values(stored).view(torch.int32), ref_float24_values(stored).view(torch.int32))
    assert torch.equal(codec.int24_values(stored[:0]), torch.zeros(0, dtype=torch.int32))


def test_indices_past_the_cached_size_are_rebuilt_and_give_the_same_matrix(monkeypatch):
    matrix = edge_covariance(7, seed=5)
    parts = codec.encode(matrix, "corr24")
    expected = ref_decode(parts, 7, "corr24")
    for limit, kept in ((6, 0), (7, 1)):
        codec.symmetric_gather_index.cache.cache_clear()
        monkeypatch.setattr(codec, "CACHED_INDEX_DIM", limit)
        assert same_bits(codec.decode(parts, 7, "corr24"), expected)
        assert codec.symmetric_gather_index.cache.cache_info().currsize == kept


def test_released_indices_are_rebuilt_on_the_next_decode():
    parts = codec.encode(edge_covariance(5, seed=2), "corr24")
    first = codec.decode(parts, 5, "corr24")
    codec.release_decode_indices()
    assert codec.symmetric_gather_index.cache.cache_info().currsize == 0
    assert same_bits(codec.decode(parts, 5, "corr24"), first)
    assert codec.symmetric_gather_index.cache.cache_info().currsize == 1
