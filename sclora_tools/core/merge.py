"""Merging as pure functions on tensors: W0 rebuilt, merged weight, rank-2r LoRA export."""

from __future__ import annotations

import math

import torch

from . import exact


def lora_scale(alpha: float, rank: int, rslora: bool) -> float:
    """PEFT's scaling s of B A: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    return alpha / (math.sqrt(rank) if rslora else rank)


def adapter_delta(b: torch.Tensor, a: torch.Tensor, b_init: torch.Tensor, a_init: torch.Tensor, scale: float) -> torch.Tensor:
    """s (B A - B_init A_init) in float64, worked out in place in the first product (a d_out x d_in
    float64 tensor is 0.1-0.9 GB at 7B-70B shapes: each temporary is a pass over memory).

    Computed as (B_init A_init - B A) (-s): the same bits as s (B A - B_init A_init) wherever the
    delta is not zero, and -0.0 wherever the two products have the same bits (an untrained entry),
    so that W0 + delta keeps W0's own bits there, -0.0 included (+0.0 would turn a -0.0 weight
    into +0.0)."""
    delta = b_init.double() @ a_init.double()
    return delta.sub_(b.double() @ a.double()).mul_(-scale)


def merged_weight(w0: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """W0 + delta in W0's dtype, summed into `delta` (which it consumes; W0 widens exactly inside the
    add). The delta of an untrained adapter gives W0 bit for bit."""
    return exact.to_dtype(delta.add_(w0), w0.dtype)


def lora_against_base(b: torch.Tensor, a: torch.Tensor, b_init: torch.Tensor, a_init: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B', A') of rank 2r with B' A' = B A - B_init A_init: B' = [B, -B_init], A' = [A; A_init].
    With alpha' = 2 alpha the PEFT scale alpha'/2r equals alpha/r, so W0 + s' B' A' is the merge."""
    return torch.cat([b, -b_init], dim=1), torch.cat([a, a_init], dim=0)
