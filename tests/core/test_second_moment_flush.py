"""The fast accumulation path (float32 pending sums flushed into float64 every N tokens) gives
the simple path's answer: one float64 add of each batch's float32 product."""

from __future__ import annotations

import torch

from sclora_tools.core.covariance import SecondMoment, add_upper_gram, mirror_upper


def batches(seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(int(n), 32, generator=generator) * 3 for n in torch.randint(1, 300, (40,), generator=generator)]


def simple_sum(rows: list[torch.Tensor]) -> torch.Tensor:
    total = torch.zeros(32, 32, dtype=torch.float64)
    for batch in rows:
        total += (batch.T @ batch).to(torch.float64)
    return total


def test_pending_sums_flushed_at_any_interval_equal_per_batch_float64_adds():
    rows = batches(0)
    reference = simple_sum(rows)
    for flush_tokens, leaf_width in ((1, 512), (500, 8), (10**9, 5)):
        moment = SecondMoment(32, flush_tokens=flush_tokens, leaf_width=leaf_width)
        for batch in rows:
            moment.add(batch)
        assert moment.tokens == sum(len(b) for b in rows)
        torch.testing.assert_close(moment.total, reference, rtol=1e-6, atol=1e-6 * reference.abs().max().item())
        assert torch.equal(moment.total, moment.total)  # reading flushes; reading again changes nothing


def test_restore_continues_a_saved_sum():
    rows = batches(1)
    straight = SecondMoment(32)
    for batch in rows:
        straight.add(batch)
    first = SecondMoment(32)
    for batch in rows[:15]:
        first.add(batch)
    resumed = SecondMoment(32)
    resumed.restore(first.total.clone(), first.tokens)
    for batch in rows[15:]:
        resumed.add(batch)
    assert resumed.tokens == straight.tokens
    torch.testing.assert_close(resumed.total, straight.total, rtol=1e-6, atol=1e-6 * straight.total.abs().max().item())


def test_upper_block_gram_equals_the_full_product_once_mirrored():
    rows = torch.randn(300, 70, generator=torch.Generator().manual_seed(2))
    for leaf_width in (4, 9, 35, 512):  # deep recursion, odd splits, one split, none
        accumulator = torch.full((70, 70), 7.0)
        add_upper_gram(accumulator, rows, leaf_width)
        assert bool((accumulator.triu() != 7.0).all())
        mirror_upper(accumulator)
        expected = torch.full((70, 70), 7.0) + rows.T @ rows
        torch.testing.assert_close(accumulator, expected, rtol=1e-5, atol=1e-4)
        assert torch.equal(accumulator, accumulator.T)


def test_reading_the_total_between_batches_keeps_it_exact():
    rows = batches(3)
    moment = SecondMoment(32, flush_tokens=100, leaf_width=8)
    for batch in rows:
        moment.add(batch)
        _ = moment.total  # mirrored in place; later batches must still land in the right cells
    reference = simple_sum(rows)
    torch.testing.assert_close(moment.total, reference, rtol=1e-6, atol=1e-6 * reference.abs().max().item())
