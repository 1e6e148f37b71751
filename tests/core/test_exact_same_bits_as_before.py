"""The faster exact-rebuild scheme (core.exact) writes the very same artefacts as the blocked
scheme it replaced (main at 0605b21, copied below verbatim in its maths): the same W_res bits,
the same step bytes, escapes and patches, and its rebuild gives the same W0, on random and
adversarial weights in every supported dtype and across row-block boundaries."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from sclora_tools.core import exact, step_codec
from tests.core.matrices import DTYPES, F64, gen, orthonormal

# ------------------------------------------------------------ the scheme of main at 0605b21


def old_to_dtype(values, dtype):
    as_float32 = values.to(torch.float32)
    return as_float32 if dtype == torch.float32 else as_float32.to(dtype)


def old_rounded_sum(w, p, dtype, sign=1.0):
    wide = w.to(torch.float64)
    (wide.add_ if sign > 0 else wide.sub_)(p)
    return old_to_dtype(wide, dtype)


def old_rebuild_dense(w_res, product):
    return old_to_dtype(w_res.to(torch.float64) + product, w_res.dtype)


def old_bits(t):
    return t.contiguous().view(exact.INT_FOR_SIZE[t.element_size()])


def old_same_bits(a, b):
    return old_bits(a) == old_bits(b)


def old_ordered_int(t):
    bits = old_bits(t).to(torch.int64)
    magnitude_mask = (1 << (t.element_size() * 8 - 1)) - 1
    return torch.where(bits >= 0, bits, -(bits & magnitude_mask) - 1)


def old_from_ordered_int(ordered, dtype):
    size = torch.empty(0, dtype=dtype).element_size()
    sign_bit = 1 << (size * 8 - 1)
    bits = torch.where(ordered >= 0, ordered, (-(ordered + 1)) | sign_bit)
    wrapped = torch.where(bits >= sign_bit, bits - 2 * sign_bit, bits)
    return wrapped.to(exact.INT_FOR_SIZE[size]).view(dtype)


def old_exponent_field(t):
    significand_bits, _ = exact.FORMATS[t.dtype]
    return (old_bits(t) & (2 ** (t.element_size() * 8 - 1) - 1)) >> significand_bits


def old_binade_keys(t):
    significand_bits, largest = exact.FORMATS[t.dtype]
    magnitude = old_bits(t) & (2 ** (t.element_size() * 8 - 1) - 1)
    exponent = magnitude >> significand_bits
    top = (largest >> significand_bits) + 1
    keys = torch.where(magnitude == largest, torch.full_like(exponent, top), exponent.clamp_min(1))
    return keys, exponent < top


@dataclass
class OldKeys:
    coarse: torch.Tensor
    res: torch.Tensor
    dense: torch.Tensor

    def gaps(self, where):
        return self.res[where].to(torch.int32) - self.dense[where].to(torch.int32)


def old_coarse_keys(w_res, dense):
    top_binade = exact.FORMATS[w_res.dtype][1] >> exact.FORMATS[w_res.dtype][0]
    exponents_res, exponents_dense = old_exponent_field(w_res), old_exponent_field(dense)
    if bool((exponents_res >= top_binade).any()) or bool((exponents_dense >= top_binade).any()):
        (keys_res, finite_res), (keys_dense, finite_dense) = old_binade_keys(w_res), old_binade_keys(dense)
        return OldKeys((keys_res > keys_dense) & finite_res & finite_dense, keys_res, keys_dense)
    keys_res, keys_dense = exponents_res.clamp_min(1), exponents_dense.clamp_min(1)
    return OldKeys(keys_res > keys_dense, keys_res, keys_dense)


def old_nudge(values, steps):
    target = torch.full_like(values, math.inf if steps > 0 else -math.inf)
    for _ in range(abs(steps)):
        values = torch.nextafter(values, target)
    return values


def old_nudge_into(block, where, target, part):
    start = block["w_res"][where]
    chosen, open_ = start, torch.ones(where.numel(), dtype=torch.bool)
    for steps in exact.NUDGE_STEPS:
        candidate = old_nudge(start, steps)
        hit = open_ & old_same_bits(old_rebuild_dense(candidate, part), target)
        chosen = torch.where(hit, candidate, chosen)
        open_ &= ~hit
    dense = torch.where(open_, block["dense"][where], target)
    block["w_res"][where], block["dense"][where], block["missed"][where] = chosen, dense, open_
    keys, all_keys = old_coarse_keys(chosen, dense), block["keys"]
    all_keys.coarse[where], all_keys.res[where], all_keys.dense[where] = keys.coarse, keys.res, keys.dense


def old_choose_block(weight, product):
    w_res = old_rounded_sum(weight, product, weight.dtype, sign=-1.0)
    dense = old_rounded_sum(w_res, product, weight.dtype)
    missed = ~old_same_bits(dense, weight)
    block = {"w_res": w_res, "dense": dense, "missed": missed, "keys": old_coarse_keys(w_res, dense)}
    fixable = (missed & ~block["keys"].coarse).nonzero().squeeze(1)
    if fixable.numel():
        old_nudge_into(block, fixable, weight[fixable], product[fixable])
    return block


def old_row_blocks(rows, columns):
    step = max(1, exact.BLOCK_ENTRIES // max(columns, 1))
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def old_as_rows(t):
    return t.reshape(t.shape[0], -1) if t.dim() >= 1 and t.numel() else t.reshape(1, -1)


def old_encode_block(weight, product, w_res_out):
    block = old_choose_block(weight, product)
    w_res_out.copy_(block["w_res"])
    keys = block["keys"]
    where = keys.coarse.nonzero().squeeze(1)
    steps = old_ordered_int(weight[where]) - old_ordered_int(block["dense"][where])
    outside = (block["missed"] & ~keys.coarse).nonzero().squeeze(1)
    return steps, keys.gaps(where), outside


def old_residual_and_correction(weight, product, codec=step_codec.ZLIB_BY_GAP):
    rows_w, rows_p = old_as_rows(weight), old_as_rows(product)
    w_res = torch.empty_like(rows_w)
    steps, gaps, outside = [], [], []
    for start, stop in old_row_blocks(*rows_w.shape):
        part = old_encode_block(rows_w[start:stop].reshape(-1), rows_p[start:stop].reshape(-1), w_res[start:stop].view(-1))
        steps.append(part[0])
        gaps.append(part[1])
        outside.append(part[2] + start * rows_w.shape[1])
    stream, escapes = step_codec.to_stream(torch.cat(steps))
    patch = torch.cat(outside)
    index_dtype = torch.int32 if weight.numel() < 2**31 else torch.int64
    return w_res.reshape(weight.shape), exact.Correction(
        steps=step_codec.encode(stream, torch.cat(gaps), codec), escapes=escapes, patch_indices=patch.to(index_dtype),
        patch_values=weight.reshape(-1)[patch].clone(), codec=codec)


def old_rebuild(w_res, product, correction):
    rows_res, rows_p = old_as_rows(w_res), old_as_rows(product)
    dense = torch.empty_like(rows_res)
    for start, stop in old_row_blocks(*rows_res.shape):
        dense[start:stop] = old_rounded_sum(rows_res[start:stop], rows_p[start:stop], w_res.dtype)
    rebuilt = dense.reshape(-1)
    keys = old_coarse_keys(w_res.reshape(-1), rebuilt)
    where = keys.coarse.nonzero().squeeze(1)
    stream = step_codec.decode(correction.steps, keys.gaps(where), correction.codec)
    steps = step_codec.from_stream(stream, correction.escapes)
    rebuilt[where] = old_from_ordered_int(old_ordered_int(rebuilt[where]) + steps, w_res.dtype)
    if correction.patch_indices.numel():
        rebuilt[correction.patch_indices.long()] = correction.patch_values.to(rebuilt.dtype)
    return rebuilt.reshape(w_res.shape)


# ------------------------------------------------------------------ cases


def bits(t):
    return old_bits(t)


def assert_same_artefacts(weight, product, codec=step_codec.ZLIB_BY_GAP):
    old_res, old = old_residual_and_correction(weight, product, codec)
    w_res, new = exact.residual_and_correction(weight, product, codec)
    assert w_res.dtype == old_res.dtype and w_res.shape == old_res.shape
    assert torch.equal(bits(w_res), bits(old_res))
    assert new.steps == old.steps and new.codec == old.codec
    assert new.escapes.dtype == old.escapes.dtype and torch.equal(new.escapes, old.escapes)
    assert new.patch_indices.dtype == old.patch_indices.dtype and torch.equal(new.patch_indices, old.patch_indices)
    assert new.patch_values.dtype == old.patch_values.dtype and torch.equal(bits(new.patch_values), bits(old.patch_values))
    rebuilt = exact.rebuild(w_res, product, new)
    assert torch.equal(bits(rebuilt), bits(old_rebuild(old_res, product, old)))
    assert torch.equal(bits(rebuilt), bits(weight))
    return new


def grid_product(weight, rank, scale, seed):
    """P as init makes it: an orthonormal B from QR, A = B^T W, both on the exact grids."""
    q = orthonormal(weight.shape[0], rank, seed)
    b, a = exact.quantize_factors(q, q.T @ weight.reshape(weight.shape[0], -1).to(F64))
    return exact.init_product(b, a, scale).reshape(weight.shape)


def specials(dtype, top_binade=True):
    """Zeros of both signs, subnormals, the smallest normal, values just below the top binade
    and, with `top_binade`, values in it up to the largest finite one, each with both signs."""
    info = torch.finfo(dtype)
    one = torch.ones((), dtype=dtype)
    largest = torch.tensor(info.max, dtype=dtype)
    smallest = torch.nextafter(torch.zeros((), dtype=dtype), one)
    tiny = torch.tensor(info.tiny, dtype=dtype)
    values = [torch.zeros((), dtype=dtype), smallest, smallest * 3, (tiny.double() / 2).to(dtype), tiny,
              torch.nextafter(tiny, -one), (largest.double() / 2).to(dtype), (largest.double() / 3).to(dtype), one]
    if top_binade:
        values += [largest, torch.nextafter(largest, -largest), (largest.double() / 1.5).to(dtype)]
    values = torch.stack(values)
    return torch.cat([values, -values])


def adversarial_weight(dtype, rows, columns, seed, top_binade=True):
    w = (torch.randn(rows, columns, generator=gen(seed), dtype=F64) * 0.05).to(dtype)
    marks = specials(dtype, top_binade)
    w.view(-1)[: marks.numel()] = marks
    w.view(-1)[-marks.numel():] = marks.flip(0)
    w[:, 5] = -0.0
    w[1, :] = 0.0
    return w


@pytest.fixture(params=[4096, 1 << 20], ids=["small-blocks", "default-blocks"])
def block_entries(request, monkeypatch):
    monkeypatch.setattr(exact, "BLOCK_ENTRIES", request.param)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("scale", [1.0, 2.0, 64.0])
def test_random_weights_with_init_products_give_the_same_artefacts(dtype, scale, block_entries):
    weight = (torch.randn(160, 96, generator=gen(1), dtype=F64) * 0.04).to(dtype)
    assert_same_artefacts(weight, grid_product(weight, 16, scale, seed=2))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("top_binade", [False, True], ids=["below-top-binade", "with-top-binade"])
def test_zeros_subnormals_and_the_top_binade_give_the_same_artefacts(dtype, top_binade, block_entries):
    weight = adversarial_weight(dtype, 130, 70, seed=3, top_binade=top_binade)
    noise = torch.randn(weight.shape, generator=gen(4), dtype=F64)
    tiny = torch.finfo(dtype).tiny
    for product in (noise * 0.01, noise * tiny, noise * tiny * 2.0**-4, noise * torch.finfo(dtype).max / 4):
        assert_same_artefacts(weight, product)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_products_that_lift_w_res_into_higher_binades_give_the_same_artefacts(dtype, block_entries):
    weight = adversarial_weight(dtype, 90, 110, seed=5)
    product = grid_product(weight, 8, 1.0, seed=6) * 37.0
    correction = assert_same_artefacts(weight, product)
    assert correction.escapes.numel() > 0  # steps beyond int8 went through the escape list


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_w_res_that_overflows_gives_the_same_patches(dtype):
    """W0 - P beyond the largest finite value rounds to inf: those entries can only be patched."""
    weight = adversarial_weight(dtype, 40, 30, seed=7)
    product = torch.zeros(weight.shape, dtype=F64)
    product[weight >= torch.finfo(dtype).max / 2] = -float(torch.finfo(dtype).max)
    correction = assert_same_artefacts(weight, product)
    assert correction.patch_indices.numel() > 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_lzma_codec_and_odd_shapes_give_the_same_artefacts(dtype):
    weight = adversarial_weight(dtype, 30, 40, seed=8)
    assert_same_artefacts(weight, grid_product(weight, 4, 2.0, seed=9), codec=step_codec.LZMA_INT8)
    vector = weight.reshape(-1)[:333]
    assert_same_artefacts(vector, torch.randn(333, generator=gen(10), dtype=F64) * 0.01)
    cube = weight.reshape(6, 10, 20)
    assert_same_artefacts(cube, torch.randn(cube.shape, generator=gen(11), dtype=F64) * 0.01)
    empty = weight[:0]
    assert_same_artefacts(empty, torch.zeros(empty.shape, dtype=F64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_a_tensor_over_one_default_row_block_gives_the_same_artefacts(dtype):
    weight = (torch.randn(1100, 1000, generator=gen(12), dtype=F64) * 0.03).to(dtype)
    assert weight.numel() > exact.BLOCK_ENTRIES
    weight[-1, -20:] = specials(dtype)[:20]
    assert_same_artefacts(weight, grid_product(weight, 4, 2.0, seed=13))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_nudged_w_res_gives_the_same_artefacts(dtype, block_entries):
    """W0 one step below the largest finite value and P = -1.5 of its steps: W0 - P is the tie
    above the largest finite value and rounds to inf; one step down, the largest finite value
    rebuilds W0 (the tie at W0 - 0.5 steps rounds to even), so the nudge finds it."""
    largest = torch.tensor(torch.finfo(dtype).max, dtype=dtype)
    below = torch.nextafter(largest, -largest)
    weight = (torch.randn(70, 90, generator=gen(16), dtype=F64) * 0.05).to(dtype)
    product = grid_product(weight, 4, 1.0, seed=17)
    spots = torch.randperm(weight.numel(), generator=gen(18))[:40]
    signs = torch.where(spots % 2 == 0, 1.0, -1.0)
    weight.view(-1)[spots] = below * signs.to(dtype)
    product.view(-1)[spots] = -1.5 * (largest.double() - below.double()) * signs.to(F64)
    correction = assert_same_artefacts(weight, product)
    w_res, _ = exact.residual_and_correction(weight, product)
    assert torch.equal(w_res.reshape(-1)[spots].abs(), largest.expand(spots.numel()))  # nudged off inf
    assert not bool(torch.isin(spots, correction.patch_indices.long()).any())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ordered_int_and_coarse_positions_equal_the_old_ones_on_every_bit_pattern_class(dtype):
    width = torch.empty(0, dtype=dtype).element_size() * 8
    if width == 16:  # every pattern
        patterns = torch.arange(-(2 ** 15), 2 ** 15, dtype=torch.int32)
    else:
        patterns = torch.randint(-(2 ** 31), 2 ** 31, (200000,), generator=gen(14), dtype=torch.int64)
        patterns = torch.cat([patterns, torch.tensor([0, -(2 ** 31), 2 ** 31 - 1, -1, 0x7F7FFFFF, 0x7F800000, -0x00800000])])
    values = patterns.to(exact.INT_FOR_SIZE[width // 8]).view(dtype)
    assert torch.equal(exact.ordered_int(values), old_ordered_int(values))
    partners = values[torch.randperm(values.numel(), generator=gen(15))]
    top_binade = exact.FORMATS[dtype][1] >> exact.FORMATS[dtype][0]
    below_top = old_exponent_field(values) < top_binade
    for w_res, dense in ((values, partners), (values[below_top], partners[below_top])):  # careful path, fast path
        keys = old_coarse_keys(w_res, dense)
        where, gaps = exact.coarse_positions(w_res, dense)
        assert torch.equal(where, keys.coarse.nonzero().squeeze(1))
        assert torch.equal(gaps, keys.gaps(where))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_from_ordered_int_equals_the_old_one_in_and_out_of_range(dtype):
    width = torch.empty(0, dtype=dtype).element_size() * 8
    inside = torch.randint(-(2 ** (width - 1)), 2 ** (width - 1), (100000,), generator=gen(19), dtype=torch.int64)
    edges = torch.tensor([0, -1, 2 ** (width - 1) - 1, -(2 ** (width - 1)), 2 ** (width - 1), -(2 ** (width - 1)) - 1,
                          2 ** 62, -(2 ** 62), 2 ** 63 - 1, -(2 ** 63)])
    outside = torch.randint(-(2 ** 62), 2 ** 62, (100000,), generator=gen(20), dtype=torch.int64)
    for ordered in (inside, edges, outside):
        assert torch.equal(bits(exact.from_ordered_int(ordered, dtype)), bits(old_from_ordered_int(ordered, dtype)))
    assert torch.equal(exact.ordered_int(exact.from_ordered_int(inside, dtype)), inside)
