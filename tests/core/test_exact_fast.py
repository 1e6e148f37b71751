"""The blocked, bit-level exact-rebuild scheme (core.exact) gives the same W_res, steps and
patches as the simple whole-tensor definition (below), both step codecs round-trip, and
corrections made by the scheme and codec of main at da272ef (below, verbatim in its maths)
still rebuild W0 bit for bit."""

from __future__ import annotations

import lzma
import math

import pytest
import torch

from sclora_tools.core import exact, step_codec

F64 = torch.float64
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# ------------------------------------------------------------------ the simple definitions


def ref_spacing(t):
    magnitude = t.abs()
    return torch.nextafter(magnitude, torch.full_like(magnitude, math.inf)).to(F64) - magnitude.to(F64)


def ref_coarse(w_res, dense):
    return ref_spacing(w_res) > ref_spacing(dense)


def nudged(weight, product, w_res, missed):
    """Entries of `missed` move to the first of NUDGE_STEPS whose rebuild hits W0."""
    nearest = w_res.clone()
    for steps in exact.NUDGE_STEPS:
        if not bool(missed.any()):
            break
        where = missed.nonzero(as_tuple=True)
        candidate = exact.nudge(nearest[where], steps)
        fixed = exact.same_bits(exact.rebuild_dense(candidate, product[where]), weight[where])
        hit = tuple(index[fixed] for index in where)
        w_res[hit] = candidate[fixed]
        missed[hit] = False
    return w_res, missed


def ref_choose_residual(weight, product):
    """Today's definition: nearest W_res; where outside the coarse set its rebuild misses, nudge."""
    w_res = exact.to_dtype(weight.to(F64) - product, weight.dtype)
    missed = ~exact.same_bits(exact.rebuild_dense(w_res, product), weight)
    fixable = missed & ~ref_coarse(w_res, exact.rebuild_dense(w_res, product))
    w_res, still = nudged(weight, product, w_res, fixable)
    return w_res, still | (missed & ~fixable)


def ref_residual_and_correction(weight, product, choose=ref_choose_residual):
    """Returns W_res, the step values in flat order and a correction in the lzma codec."""
    w_res, missed = choose(weight, product)
    dense = exact.rebuild_dense(w_res, product)
    coarse = ref_coarse(w_res, dense)
    steps = (exact.ordered_int(weight) - exact.ordered_int(dense))[coarse]
    small = steps.abs() < 128
    stream = torch.where(small, steps, torch.full_like(steps, -128)).to(torch.int8)
    blob = lzma.compress(stream.numpy().tobytes(), preset=6)
    outside = (missed & ~(coarse | exact.same_bits(dense, weight))).reshape(-1).nonzero().squeeze(1)
    correction = exact.Correction(steps=blob, escapes=steps[~small].to(torch.int64), patch_indices=outside.to(torch.int32),
                                  patch_values=weight.reshape(-1)[outside].clone(), codec=step_codec.LZMA_INT8)
    return w_res, steps, correction


def da272ef_choose_residual(weight, product):
    """main at da272ef: every miss, coarse or not, tries the nudges."""
    w_res = exact.to_dtype(weight.to(F64) - product, weight.dtype)
    missed = ~exact.same_bits(exact.rebuild_dense(w_res, product), weight)
    return nudged(weight, product, w_res, missed)


# ------------------------------------------------------------------ cases


def gen(seed):
    return torch.Generator().manual_seed(seed)


def weight_with_specials(dtype, d_out, d_in, seed):
    info = torch.finfo(dtype)
    w = (torch.randn(d_out, d_in, generator=gen(seed), dtype=F64) * 0.05).to(dtype)
    smallest = torch.nextafter(torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype))
    w[0, :6] = torch.tensor([0.0, -0.0, info.smallest_normal / 4, -info.smallest_normal / 3, 1.0, -2.0]).to(dtype)
    w[:, 3] = -0.0
    w[-1, 6:9] = torch.stack([smallest, -smallest, torch.tensor(1.0e3 if dtype == torch.float16 else 1.0e30, dtype=dtype)])
    if d_out > 2:
        w[2, :] = 0.0
    return w


def product_for(weight, rank, scale, seed):
    q, _ = torch.linalg.qr(torch.randn(weight.shape[0], rank, generator=gen(seed), dtype=F64))
    b, a = exact.quantize_factors(q, q.T @ weight.to(F64))
    return exact.init_product(b, a, scale)


def bits(t):
    return exact.bit_view(t)


@pytest.fixture(params=[8192, 1 << 20], ids=["small-blocks", "default-blocks"])
def block_entries(request, monkeypatch):
    monkeypatch.setattr(exact, "BLOCK_ENTRIES", request.param)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,rank,scale", [((300, 70), 8, 1.0), ((64, 257), 16, 2.0), ((1, 33), 1, 0.5)])
def test_fast_scheme_matches_the_reference(dtype, shape, rank, scale, block_entries):
    weight = weight_with_specials(dtype, *shape, seed=shape[0] + rank)
    product = product_for(weight, rank, scale, seed=rank)
    ref_res, ref_steps, ref_correction = ref_residual_and_correction(weight, product)
    w_res, correction = exact.residual_and_correction(weight, product)
    assert torch.equal(bits(w_res), bits(ref_res))
    assert torch.equal(correction.patch_indices.long(), ref_correction.patch_indices.long())
    assert torch.equal(bits(correction.patch_values), bits(ref_correction.patch_values))
    assert torch.equal(correction.escapes, ref_correction.escapes)
    # the same steps, whatever the codec
    _, gaps = exact.coarse_positions(w_res, exact.rebuild_dense(w_res, product))
    stream = step_codec.decode(correction.steps, gaps, correction.codec)
    assert torch.equal(step_codec.from_stream(stream, correction.escapes), ref_steps)
    # both the new and the old (lzma) corrections rebuild W0 bit for bit
    assert torch.equal(bits(exact.rebuild(w_res, product, correction)), bits(weight))
    assert torch.equal(bits(exact.rebuild(ref_res, product, ref_correction)), bits(weight))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_large_product_with_many_misses_matches_the_reference(dtype, block_entries):
    weight = weight_with_specials(dtype, 200, 90, seed=4)
    product = product_for(weight, 12, 1.0, seed=5) * 37.0
    ref_res, ref_steps, ref_correction = ref_residual_and_correction(weight, product)
    w_res, correction = exact.residual_and_correction(weight, product)
    assert torch.equal(bits(w_res), bits(ref_res))
    assert torch.equal(correction.patch_indices.long(), ref_correction.patch_indices.long())
    assert torch.equal(bits(exact.rebuild(w_res, product, correction)), bits(weight))
    assert ref_steps.numel() > 0.05 * weight.numel()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_corrections_made_by_main_at_da272ef_still_rebuild(dtype):
    """Old runs: W_res chosen by the old rule (coarse misses nudged too), lzma stream, no codec
    recorded (read as lzma-int8)."""
    weight = weight_with_specials(dtype, 120, 80, seed=15)
    product = product_for(weight, 8, 2.0, seed=16)
    old_res, _, old = ref_residual_and_correction(weight, product, choose=da272ef_choose_residual)
    assert torch.equal(bits(exact.rebuild(old_res, product, old)), bits(weight))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_coarse_entries_from_exponent_bits_equal_the_spacing_comparison(dtype):
    """Every bit pattern class: zeros, subnormals, normals, the largest finite value, inf, NaN."""
    info = torch.finfo(dtype)
    specials = torch.tensor([0.0, -0.0, info.tiny, info.tiny / 4, info.max, -info.max, math.inf, -math.inf, math.nan,
                             1.0, 2.0, 1.5, info.eps, 65504.0 if dtype == torch.float16 else 3.0e38]).to(dtype)
    randoms = torch.randint(-(2 ** (8 * specials.element_size() - 1)), 2 ** (8 * specials.element_size() - 1), (4000,),
                            generator=gen(7), dtype=torch.int64).to(exact.INT_FOR_SIZE[specials.element_size()]).view(dtype)
    values = torch.cat([specials, randoms])
    a = values.repeat_interleave(values.numel())
    b = values.repeat(values.numel())
    pick = torch.randperm(a.numel(), generator=gen(8))[:300000]
    pairs = torch.cat([torch.arange(specials.numel() ** 2), pick])
    a, b = a[pairs], b[pairs]
    assert torch.equal(exact.coarse_entries(a, b), ref_coarse(a, b))
    top_binade = exact.FORMATS[dtype][1] >> exact.FORMATS[dtype][0]
    exponent = lambda t: exact.exponent_bits(t) >> exact.FORMATS[dtype][0]  # noqa: E731 - the biased exponent field
    plain = (exponent(a) < top_binade) & (exponent(b) < top_binade)  # the fast path
    assert torch.equal(exact.coarse_entries(a[plain], b[plain]), ref_coarse(a[plain], b[plain]))


@pytest.mark.parametrize("codec", step_codec.CODECS)
def test_step_codecs_round_trip(codec):
    steps = torch.cat([torch.randint(-3, 4, (5000,), generator=gen(9)), torch.tensor([300, -129, 127, -127, 0])])
    gaps = torch.randint(1, 12, (steps.numel(),), generator=gen(10))
    stream, escapes = step_codec.to_stream(steps)
    assert escapes.tolist() == [300, -129]
    blob = step_codec.encode(stream, gaps, codec)
    assert torch.equal(step_codec.from_stream(step_codec.decode(blob, gaps, codec), escapes), steps)
    empty = step_codec.encode(stream[:0], gaps[:0], codec)
    assert step_codec.decode(empty, gaps[:0], codec).numel() == 0


def test_gap_codec_rejects_damaged_or_mismatched_streams():
    stream, _ = step_codec.to_stream(torch.randint(-3, 4, (4000,), generator=gen(11)))
    gaps = torch.randint(1, 4, (4000,), generator=gen(12))
    blob = step_codec.encode(stream, gaps, step_codec.ZLIB_BY_GAP)
    with pytest.raises(ValueError):
        step_codec.decode(blob[:-3], gaps, step_codec.ZLIB_BY_GAP)
    with pytest.raises(ValueError):
        step_codec.decode(blob + b"x", gaps, step_codec.ZLIB_BY_GAP)
    with pytest.raises(ValueError, match="binade gap"):
        step_codec.decode(blob, torch.ones_like(gaps), step_codec.ZLIB_BY_GAP)
    with pytest.raises(ValueError, match="unknown correction codec"):
        step_codec.decode(blob, gaps, "brotli")


def test_gap_codec_is_smaller_than_lzma_on_a_realistic_stream():
    weight = (torch.randn(512, 384, generator=gen(13), dtype=F64) * 0.02).to(torch.bfloat16)
    product = product_for(weight, 16, 1.0, seed=14)
    _, new = exact.residual_and_correction(weight, product)
    w_res, old = exact.residual_and_correction(weight, product, codec=step_codec.LZMA_INT8)
    assert old.codec == step_codec.LZMA_INT8 and new.codec == step_codec.ZLIB_BY_GAP
    assert len(new.steps) < len(old.steps)
    assert torch.equal(bits(exact.rebuild(w_res, product, old)), bits(weight))
