"""The fast accumulation path (float32 pending sums flushed into float64 every N tokens) gives
the simple path's answer: one float64 add of each batch's float32 product."""

from __future__ import annotations

import torch

from sclora_tools.core.covariance import SecondMoment


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
    for flush_tokens in (1, 500, 10**9):
        moment = SecondMoment(32, flush_tokens=flush_tokens)
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
