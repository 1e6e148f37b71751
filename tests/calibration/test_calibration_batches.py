"""Samples split across ranks: disjoint, complete, deterministic, longest first."""

from __future__ import annotations

import torch

from sclora_tools.calibration import batches


def samples(lengths: list[int]) -> list[batches.Sample]:
    return sorted((batches.Sample(i, list(range(1, n + 1))) for i, n in enumerate(lengths)), key=lambda s: (-len(s.ids), s.position))


def test_ranks_take_disjoint_round_robin_shares_that_cover_every_sample():
    ordered = samples([5, 9, 2, 9, 7, 1, 4])
    assert [s.position for s in ordered] == [1, 3, 4, 0, 6, 2, 5]
    positions = batches.shard_positions(ordered, 3)
    assert positions == [[0, 1, 5], [3, 6], [2, 4]]
    assert [s.position for s in batches.shard(ordered, 1, 3)] == [3, 6]
    assert batches.token_count(ordered) == sum(batches.token_count(batches.shard(ordered, r, 3)) for r in range(3))


def test_padded_batches_mark_only_real_tokens():
    ids, mask = batches.padded(samples([3, 1]), pad_id=0, device=torch.device("cpu"))
    assert ids.tolist() == [[1, 2, 3], [1, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
