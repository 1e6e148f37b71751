"""sclora_tools.core.exact: the quantisation grids that make B A order-independent, and the residual +
correction scheme that rebuilds W0 bit for bit."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sclora_tools.core import exact
from tests.core.matrices import DTYPES, F64, bits_equal, gen, orthonormal, randn

# ----------------------------------------------------------------------------- grids


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


# ----------------------------------------------------------------------------- rebuild


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
