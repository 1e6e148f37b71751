"""Bit-exact rebuild of W0 from W_res and the initial adapter, on any device or BLAS.

The scheme (SPEC section 3):

1. The initial factors are put on fixed-point grids. Column k of B_init gets a power-of-two range
   2^e_k (e_k = 0 for a unit-norm column, so an orthonormal basis keeps plain multiples of 2^-21;
   otherwise the smallest power of two >= its largest entry) and lies on multiples of
   2^(e_k - 21). Row k of A_init is first scaled by 2^e_k, then each column of that scaled A
   goes on a power-of-two grid with at most `a_bits` significant bits, then the row is scaled
   back by 2^-e_k. Power-of-two scalings are exact, so every product B[i,k] A[k,j] equals
   (B[i,k] 2^-e_k)(A[k,j] 2^e_k): an integer multiple of one quantum per column j of the
   product, and every partial sum of B_init @ A_init stays an integer multiple of it below
   2^53. So a float64 matmul is EXACT whatever its summation order, blocking, FMA use or thread
   count. The factors are never rescaled (PiSSA's U sqrt(S) keeps its norm): the grid adapts to
   them. The grid is a function of the stored B alone, so merge needs no record of it. Both
   factors stay exactly representable in float32, the dtype PEFT stores.
2. P = s * (B_init @ A_init) in float64 (the scale multiplies elementwise: IEEE-rounded,
   deterministic), then W0 = to_dtype(W_res + P) with a fixed rounding path (float64 -> float32
   -> dtype). So the rebuild is a deterministic function of the stored bytes.
3. W_res is chosen per entry among the nearest values of the checkpoint dtype so that the rebuild
   gives W0. Where W_res is in a higher binade than W0 its grid is coarser than W0's and no W_res
   value may hit W0: those entries need W0's low bits stored. The decoder can tell which
   entries those may be (W_res's spacing coarser than the rebuilt value's), so only a stream of
   integer step corrections for them is stored, in flat order, no indices, compressed. Any miss
   outside that set (none expected) goes to an explicit sparse patch.
"""

from __future__ import annotations

import lzma
import math
from dataclasses import dataclass

import torch

B_FRACTION_BITS = 21
EXACT_INTEGER_BITS = 53
FLOAT32_SIGNIFICAND_BITS = 24
NUDGE_STEPS = (1, -1, 2, -2)
UNIT_NORM_TOLERANCE = 2.0**-20
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ESCAPE = -128
INT_FOR_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass(frozen=True)
class Correction:
    """What rebuilds W0 exactly from to_dtype(W_res + P).

    steps: lzma-compressed int8 stream, one value per "coarse" entry (flat order): how many
      representable numbers W0 lies above the dense rebuild; ESCAPE means "see escapes".
    escapes: int64 step values that did not fit in int8, in order.
    patch_indices / patch_values: flat positions and exact values of any other miss.
    """

    steps: bytes
    escapes: torch.Tensor
    patch_indices: torch.Tensor
    patch_values: torch.Tensor

    @property
    def nbytes(self) -> int:
        tensors = (self.escapes, self.patch_indices, self.patch_values)
        return len(self.steps) + sum(t.numel() * t.element_size() for t in tensors)


def a_significant_bits(rank: int) -> int:
    """Bits allowed per A_init entry so that r products of B and A sum exactly in float64."""
    bits = EXACT_INTEGER_BITS - B_FRACTION_BITS - max(1, math.ceil(math.log2(max(rank, 2))))
    return min(FLOAT32_SIGNIFICAND_BITS, bits)


def quantize_b(b: torch.Tensor) -> torch.Tensor:
    """Round B (entries in [-1, 1]) to multiples of 2^-21, in float64."""
    b = b.to(torch.float64)
    if bool((b.abs() > 1.0).any()):
        raise ValueError("B_init entries must lie in [-1, 1] for the exact-rebuild grid")
    step = 2.0**B_FRACTION_BITS
    return torch.round(b * step) / step


def quantize_a(a: torch.Tensor, rank: int) -> torch.Tensor:
    """Round each column of A (r x d_in) to a power-of-two grid with a_significant_bits(rank)."""
    a = a.to(torch.float64)
    column_max = a.abs().amax(dim=0)
    exponent = torch.ceil(torch.log2(torch.where(column_max > 0, column_max, torch.ones_like(column_max))))
    quantum = torch.pow(2.0, exponent - a_significant_bits(rank))
    return torch.round(a / quantum) * quantum


def b_column_exponents(b: torch.Tensor) -> torch.Tensor:
    """e_k per column of B: 0 for a unit-norm (or zero) column, else ceil(log2(max |B[:, k]|)).

    Unit-norm columns (an orthonormal basis: SC-LoRA, OLoRA) keep the plain 2^-21 grid; a column
    of any other norm gets 21 fraction bits below its own power-of-two range."""
    b = b.to(torch.float64)
    column_max = b.abs().amax(dim=0)
    unit = ((b.norm(dim=0) - 1.0).abs() <= UNIT_NORM_TOLERANCE) & (column_max <= 1.0)
    mantissa, exponent = torch.frexp(column_max)  # column_max = mantissa 2^exponent, mantissa in [0.5, 1)
    ceil_log2 = (exponent - (mantissa == 0.5).to(exponent.dtype)).to(torch.float64)  # exact, no log2 rounding
    return torch.where(unit | (column_max == 0), torch.zeros_like(ceil_log2), ceil_log2)


def quantize_factors(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Put (B, A) on the exact grids (module docstring, step 1) for any finite factors; returns
    float64 tensors whose values fit float32 exactly and whose product is exact in float64."""
    b, a = b.to(torch.float64), a.to(torch.float64)
    if not (bool(torch.isfinite(b).all()) and bool(torch.isfinite(a).all())):
        raise ValueError("the initial factors hold NaN or Inf")
    power = torch.pow(2.0, b_column_exponents(b))
    b_scaled = quantize_b(b / power.unsqueeze(0))
    a_scaled = quantize_a(a * power.unsqueeze(1), b.shape[1])
    b_out, a_out = b_scaled * power.unsqueeze(0), a_scaled / power.unsqueeze(1)
    if not (torch.equal(b_out.float().double(), b_out) and torch.equal(a_out.float().double(), a_out)):
        raise ValueError("the initial factors span too many binades to be stored exactly in float32")
    return b_out, a_out


def init_product(b: torch.Tensor, a: torch.Tensor, scale: float) -> torch.Tensor:
    """P = scale * (B @ A) in float64. Exact and device-independent for quantised factors."""
    product = b.to(torch.float64) @ a.to(torch.float64)
    return product if scale == 1.0 else product * scale


def to_dtype(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round float64 to `dtype` along one fixed path (float64 -> float32 -> dtype)."""
    as_float32 = values.to(torch.float32)
    return as_float32 if dtype == torch.float32 else as_float32.to(dtype)


def rebuild_dense(w_res: torch.Tensor, product: torch.Tensor) -> torch.Tensor:
    """to_dtype(W_res + P): the rebuild before corrections."""
    return to_dtype(w_res.to(torch.float64) + product, w_res.dtype)


def bit_view(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(INT_FOR_SIZE[t.element_size()])


def same_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise bit equality (tells -0.0 from 0.0)."""
    return bit_view(a) == bit_view(b)


def ordered_int(t: torch.Tensor) -> torch.Tensor:
    """Map floats to int64 monotonically and bijectively (-0.0 -> -1, +0.0 -> 0): the difference
    of two values is the number of representable steps between them."""
    bits = bit_view(t).to(torch.int64)
    magnitude_mask = (1 << (t.element_size() * 8 - 1)) - 1
    return torch.where(bits >= 0, bits, -(bits & magnitude_mask) - 1)


def from_ordered_int(ordered: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    size = torch.empty(0, dtype=dtype).element_size()
    sign_bit = 1 << (size * 8 - 1)
    bits = torch.where(ordered >= 0, ordered, (-(ordered + 1)) | sign_bit)
    wrapped = torch.where(bits >= sign_bit, bits - 2 * sign_bit, bits)
    return wrapped.to(INT_FOR_SIZE[size]).view(dtype)


def spacing(t: torch.Tensor) -> torch.Tensor:
    """Distance from |t| to the next representable number above it, in float64."""
    magnitude = t.abs()
    return torch.nextafter(magnitude, torch.full_like(magnitude, math.inf)).to(torch.float64) - magnitude.to(torch.float64)


def coarse_entries(w_res: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Entries where W_res's grid is coarser than the rebuilt value's: the only ones where
    to_dtype(W_res + P) can miss W0 for every choice of W_res. Computable by the decoder."""
    return spacing(w_res) > spacing(dense)


def nudge(values: torch.Tensor, steps: int) -> torch.Tensor:
    """Move each value `steps` representable numbers up (steps > 0) or down, in its own dtype."""
    target = torch.full_like(values, math.inf if steps > 0 else -math.inf)
    for _ in range(abs(steps)):
        values = torch.nextafter(values, target)
    return values


def choose_residual(weight: torch.Tensor, product: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W_res in weight's dtype, nearest to W0 - P among values with to_dtype(W_res + P) == W0
    where such a value lies within two steps; returns W_res and the mask of entries that miss."""
    if weight.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"exact rebuild supports {SUPPORTED_DTYPES}, not {weight.dtype}")
    w_res = to_dtype(weight.to(torch.float64) - product, weight.dtype)
    missed = ~same_bits(rebuild_dense(w_res, product), weight)
    nearest = w_res.clone()
    for steps in NUDGE_STEPS:
        if not bool(missed.any()):
            break
        where = missed.nonzero(as_tuple=True)
        candidate = nudge(nearest[where], steps)
        fixed = same_bits(rebuild_dense(candidate, product[where]), weight[where])
        hit = tuple(index[fixed] for index in where)
        w_res[hit] = candidate[fixed]
        missed[hit] = False
    return w_res, missed


def encode_steps(steps: torch.Tensor) -> tuple[bytes, torch.Tensor]:
    small = steps.abs() < 128
    stream = torch.where(small, steps, torch.full_like(steps, ESCAPE)).to(torch.int8)
    return lzma.compress(stream.numpy().tobytes(), preset=6), steps[~small].to(torch.int64)


def decode_steps(blob: bytes, escapes: torch.Tensor, count: int) -> torch.Tensor:
    raw = lzma.decompress(blob) if blob else b""
    if len(raw) != count:
        raise ValueError(f"correction stream holds {len(raw)} entries, the weights need {count}")
    steps = torch.frombuffer(bytearray(raw), dtype=torch.int8).to(torch.int64) if count else torch.zeros(0, dtype=torch.int64)
    escaped = steps == ESCAPE
    if int(escaped.sum()) != escapes.numel():
        raise ValueError("correction stream and its escape list disagree")
    steps[escaped] = escapes.to(torch.int64)
    return steps


def residual_and_correction(weight: torch.Tensor, product: torch.Tensor) -> tuple[torch.Tensor, Correction]:
    """W_res for the residual model plus what rebuild() needs to give W0 bit for bit."""
    w_res, missed = choose_residual(weight, product)
    dense = rebuild_dense(w_res, product)
    coarse = coarse_entries(w_res, dense)
    steps = (ordered_int(weight) - ordered_int(dense))[coarse]
    blob, escapes = encode_steps(steps)
    outside = (missed & ~coarse).reshape(-1).nonzero().squeeze(1)
    index_dtype = torch.int32 if weight.numel() < 2**31 else torch.int64
    return w_res, Correction(
        steps=blob,
        escapes=escapes,
        patch_indices=outside.to(index_dtype),
        patch_values=weight.reshape(-1)[outside].clone(),
    )


def rebuild(w_res: torch.Tensor, product: torch.Tensor, correction: Correction) -> torch.Tensor:
    """W0 from W_res, P and the correction: deterministic, exact."""
    dense = rebuild_dense(w_res, product)
    coarse = coarse_entries(w_res, dense)
    ordered = ordered_int(dense)
    ordered[coarse] += decode_steps(correction.steps, correction.escapes, int(coarse.sum()))
    rebuilt = from_ordered_int(ordered, w_res.dtype).reshape(-1)
    if correction.patch_indices.numel():
        rebuilt[correction.patch_indices.long()] = correction.patch_values.to(rebuilt.dtype)
    return rebuilt.reshape(w_res.shape)
