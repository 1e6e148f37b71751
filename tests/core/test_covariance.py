"""sclora_tools.core.covariance: second moments accumulated over batches, and their normalisation."""

from __future__ import annotations

import pytest
import torch

from sclora_tools.core.covariance import NORMALIZATIONS, SecondMoment, normalize
from tests.core.matrices import F64, gen, psd, randn


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


def test_the_float64_sum_is_allocated_at_the_first_flush_and_totals_do_not_depend_on_it():
    x = torch.randint(-8, 9, (60, 40), generator=gen(11)).to(F64)  # integers: every sum exact, so equality is exact
    never, often = SecondMoment(40, flush_tokens=10_000, leaf_width=8), SecondMoment(40, flush_tokens=7, leaf_width=8)
    for chunk in torch.split(x, 6):
        never.add(chunk)
        often.add(chunk)
    assert never.accumulator is None  # fewer tokens than one flush: only the float32 sum was ever held
    assert often.accumulator is not None and often.accumulator.dtype == F64
    assert torch.equal(never.total, x.T @ x)
    assert torch.equal(often.total, x.T @ x)


def test_take_total_lets_go_of_the_buffers_and_refuses_more_rows():
    x = torch.randint(-8, 9, (30, 12), generator=gen(12)).to(F64)
    moment = SecondMoment(12)
    moment.add(x)
    assert torch.equal(moment.take_total(), x.T @ x)
    assert moment.accumulator is None and moment.pending is None
    with pytest.raises(RuntimeError, match="taken"):
        moment.add(x)
    empty = SecondMoment(5)
    assert torch.equal(empty.take_total(), torch.zeros(5, 5, dtype=F64))


def test_sums_made_under_inference_mode_are_mirrored_and_reduced_outside_it():
    """Hooks add rows under inference_mode; the first flush (and a checkpoint's `total`) may
    happen there, and the sum is mirrored and all-reduced in place after it."""
    x = torch.randint(-8, 9, (40, 300), generator=gen(13)).to(F64)
    flushed, checkpointed = SecondMoment(300, flush_tokens=10), SecondMoment(300)
    with torch.inference_mode():
        flushed.add(x[:20])
        checkpointed.add(x[:20])
        assert torch.equal(checkpointed.total, x[:20].T @ x[:20])  # a checkpoint mid-way
        checkpointed.add(x[20:])
    flushed.add(x[20:])
    for moment in (flushed, checkpointed):
        total = moment.take_total()
        assert not total.is_inference()
        total.mul_(1.0)  # what an all-reduce does in place
        assert torch.equal(total, x.T @ x)


def test_restore_after_take_total_starts_a_running_sum_again():
    x = torch.randint(-8, 9, (20, 12), generator=gen(14)).to(F64)
    moment = SecondMoment(12)
    moment.add(x)
    saved = moment.take_total().clone()
    moment.restore(saved, 20)
    moment.add(x)
    assert torch.equal(moment.total, 2 * (x.T @ x)) and moment.tokens == 40
