"""Adapter initialisations: (W0, subspace or nothing) -> initial factors (B, A), float64.

Every method satisfies W_res + s B A = W0 at init once the stage computes W_res from them
(exactly, via core.exact). Only the factors differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .subspace import Subspace


@dataclass(frozen=True)
class Factors:
    """B (d_out x r) and A (r x d_in), float64."""

    b: torch.Tensor
    a: torch.Tensor


def sclora_factors(weight: torch.Tensor, subspace: Subspace) -> Factors:
    """B_init = Q_r, A_init = Q_r^T W0 (paper eqs. 6-7), so B A x = P_S(W0 x)."""
    # A unit-norm column may hold an entry of 1 + 1 ulp after the eigensolver's rounding; the
    # exact-rebuild grid needs |B| <= 1, so clamp (a change of at most one ulp).
    q = subspace.basis.to(torch.float64).clamp(-1.0, 1.0)
    return Factors(b=q, a=q.T @ weight.to(torch.float64))


def lora_factors(weight: torch.Tensor, rank: int, seed: int) -> Factors:
    """Vanilla LoRA: A Kaiming-uniform (a = sqrt(5), as PEFT does), B = 0, so W_res = W0."""
    d_out, d_in = weight.shape
    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(d_in)  # kaiming_uniform_ with a=sqrt(5) on fan_in = d_in
    a = (torch.rand(rank, d_in, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    return Factors(b=torch.zeros(d_out, rank, dtype=torch.float64), a=a)


METHODS = ("sclora", "lora")
SUBSPACE_METHODS = ("sclora",)
