"""Calibration samples as token ids: tokenised, split across ranks, grouped into padded batches.

Samples are ordered longest first (ties by position), so a rank's first batch shows its peak
memory and padding stays small; rank r of W takes every W-th sample of that order, and records
which samples it took (their positions in the dataset as rendered).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import data
from ..errors import InputError
from ..features import cut_ids, right_padded


@dataclass(frozen=True)
class Sample:
    position: int
    ids: list[int]
    truncated: bool = False  # cut at --max-length


def tokenize(examples: list[data.Example], tokenizer, max_length: int) -> list[Sample]:
    """Token ids of every non-empty example, longest first."""
    samples = []
    for position, example in enumerate(examples):
        ids, cut = cut_ids(example.text, tokenizer, max_length, example.add_special_tokens)
        if ids:
            samples.append(Sample(position, list(ids), cut))
    if not samples:
        raise InputError("every sample tokenised to zero tokens; check the dataset's text fields.")
    return sorted(samples, key=lambda sample: (-len(sample.ids), sample.position))


def shard(samples: list[Sample], rank: int, world_size: int) -> list[Sample]:
    """This rank's disjoint share: every world_size-th sample of the longest-first order."""
    return samples[rank::world_size]


def shard_positions(samples: list[Sample], world_size: int) -> list[list[int]]:
    """For the manifest: the sample positions each rank took, rank by rank."""
    return [sorted(sample.position for sample in shard(samples, rank, world_size)) for rank in range(world_size)]


def token_count(samples: list[Sample]) -> int:
    return sum(len(sample.ids) for sample in samples)


def truncated_count(samples: list[Sample]) -> int:
    return sum(sample.truncated for sample in samples)


def batched(samples: list[Sample], batch_size: int) -> list[list[Sample]]:
    return [samples[start : start + batch_size] for start in range(0, len(samples), batch_size)]


def padded(batch: list[Sample], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids and the boolean mask of real tokens (batch x longest)."""
    input_ids, mask = right_padded([sample.ids for sample in batch], pad_id)
    return input_ids.to(device), mask.to(device)
