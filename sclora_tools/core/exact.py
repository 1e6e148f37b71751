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
3. W_res = to_dtype(W0 - P), the nearest value to W0 - P. Where W_res is in a higher binade than
   W0 its grid is coarser than W0's and in general no W_res value hits W0: those entries need
   W0's low bits stored. The decoder can tell which entries those may be (W_res's spacing
   coarser than the rebuilt value's), so only a stream of integer step corrections for them is
   stored, in flat order, no indices, compressed; they keep the nearest W_res. Any other entry
   whose rebuild misses W0 moves up to two steps away (first hit in NUDGE_STEPS order) and, if
   none hits, goes to an explicit sparse patch (rare). The stream's byte codec is
   recorded with it (core.step_codec); older runs' lzma streams still decode.

Speed: the elementwise work runs in row blocks of about a million entries (cache-sized, and
memory stays flat whatever the layer's size), float64 intermediates are never materialised
for a whole tensor, the grid comparison masks exponent bits in place instead of computing
spacings, only the few missed or coarse entries are touched a second time (their positions
found in one scan, their binade gaps computed there alone), and an empty set is seen with one
reduction instead of a scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import step_codec
from .finite import all_finite

B_FRACTION_BITS = 21
EXACT_INTEGER_BITS = 53
FLOAT32_SIGNIFICAND_BITS = 24
NUDGE_STEPS = (1, -1, 2, -2)
UNIT_NORM_TOLERANCE = 2.0**-20
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
INT_FOR_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
BLOCK_ENTRIES = 1 << 20
# per dtype: significand bits stored, and the magnitude bits of the largest finite value
FORMATS = {torch.float32: (23, 0x7F7FFFFF), torch.bfloat16: (7, 0x7F7F), torch.float16: (10, 0x7BFF)}


@dataclass(frozen=True)
class Correction:
    """What rebuilds W0 exactly from to_dtype(W_res + P).

    steps: the int8 stream, one value per "coarse" entry (flat order): how many representable
      numbers W0 lies above the dense rebuild; ESCAPE means "see escapes". Encoded by `codec`.
    escapes: int64 step values that did not fit in int8, in order.
    patch_indices / patch_values: flat positions and exact values of any other miss.
    """

    steps: bytes
    escapes: torch.Tensor
    patch_indices: torch.Tensor
    patch_values: torch.Tensor
    codec: str = step_codec.ZLIB_BY_GAP

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
    if not (all_finite(b) and all_finite(a)):
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
    of two values is the number of representable steps between them. A negative pattern
    (sign | m) becomes -m - 1 by flipping its magnitude bits, in t's own width."""
    bits = bit_view(t)
    width = t.element_size() * 8
    return (bits ^ ((bits >> (width - 1)) & ((1 << (width - 1)) - 1))).to(torch.int64)


def from_ordered_int(ordered: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The inverse of ordered_int: a negative value -m - 1 gets its magnitude bits flipped back
    and the sign bit set, then the low bits are kept (what any out-of-range value gives too)."""
    size = torch.empty(0, dtype=dtype).element_size()
    sign_bit = 1 << (size * 8 - 1)
    ordered = ordered.to(torch.int64)
    negative = ordered >> 63
    bits = (ordered ^ (negative & (sign_bit - 1))) | (negative & sign_bit)
    return bits.to(INT_FOR_SIZE[size]).view(dtype)


def spacing(t: torch.Tensor) -> torch.Tensor:
    """Distance from |t| to the next representable number above it, in float64."""
    magnitude = t.abs()
    return torch.nextafter(magnitude, torch.full_like(magnitude, math.inf)).to(torch.float64) - magnitude.to(torch.float64)


def exponent_bits(t: torch.Tensor) -> torch.Tensor:
    """Each entry's exponent bits in place, sign and significand cleared: the biased exponent
    times 2^significand_bits (integer tensor of t's width, never negative)."""
    significand_bits, largest = FORMATS[t.dtype]
    return bit_view(t) & (((largest >> significand_bits) + 1) << significand_bits)


def magnitude_bits(t: torch.Tensor) -> torch.Tensor:
    return bit_view(t) & (2 ** (t.element_size() * 8 - 1) - 1)


def binade_key(t: torch.Tensor) -> torch.Tensor:
    """Per entry, an integer that orders spacing(t): max(exponent field, 1), one more for the
    largest finite value (whose spacing is infinite: the next number up is inf). Integer ops."""
    significand_bits, largest = FORMATS[t.dtype]
    magnitude = magnitude_bits(t)
    return (magnitude >> significand_bits).clamp_min_(1) + (magnitude == largest)


def finite_entries(t: torch.Tensor) -> torch.Tensor:
    return magnitude_bits(t) <= FORMATS[t.dtype][1]


def binade_gaps(w_res: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """How many binades W_res lies above the rebuilt value (int32; the step codec's groups)."""
    return binade_key(w_res).to(torch.int32) - binade_key(dense).to(torch.int32)


def largest_entry(t: torch.Tensor) -> int:
    return int(t.max()) if t.numel() else 0


def any_true(mask: torch.Tensor) -> bool:
    """mask.any(), read as bytes: one max() reduction, far cheaper than any() on a bool tensor."""
    return largest_entry(mask.view(torch.uint8)) > 0


def flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """int64 positions of the True entries of a flat mask; on CPU through numpy, whose scan is
    several times faster than torch's nonzero."""
    if mask.device.type != "cpu":
        return mask.nonzero().squeeze(1)
    return torch.from_numpy(mask.numpy().nonzero()[0]).to(torch.int64)


def coarse_entries(w_res: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Entries where W_res's grid is coarser than the rebuilt value's: the only ones where
    to_dtype(W_res + P) can miss W0 for every choice of W_res. Computable by the decoder.
    Equals spacing(w_res) > spacing(dense). While every W_res lies below the top binade that
    is max(e_res, 1) > max(e_dense, 1), i.e. e_res > max(e_dense, 1), compared on the exponent
    bits in place: a dense value in the top binade, or not finite, has e_dense >= that binade >
    e_res, as the careful path says too. A W_res there (spacing maybe infinite) or not finite
    takes the careful path."""
    significand_bits, largest = FORMATS[w_res.dtype]
    exponents_res = exponent_bits(w_res)
    if largest_entry(exponents_res) >= (largest >> significand_bits) << significand_bits:
        return (binade_key(w_res) > binade_key(dense)) & finite_entries(w_res) & finite_entries(dense)
    return exponents_res > exponent_bits(dense).clamp_min_(1 << significand_bits)


def coarse_positions(w_res: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions of the coarse entries and, for each, how many binades W_res lies above the
    rebuilt value (the step codec's groups)."""
    w_res, dense = w_res.reshape(-1), dense.reshape(-1)
    where = flat_nonzero(coarse_entries(w_res, dense))
    return where, binade_gaps(w_res[where], dense[where])


def nudge(values: torch.Tensor, steps: int) -> torch.Tensor:
    """Move each value `steps` representable numbers up (steps > 0) or down, in its own dtype."""
    target = torch.full_like(values, math.inf if steps > 0 else -math.inf)
    for _ in range(abs(steps)):
        values = torch.nextafter(values, target)
    return values


def rounded_sum(w: torch.Tensor, p: torch.Tensor, dtype: torch.dtype, sign: float = 1.0) -> torch.Tensor:
    """to_dtype(w.double() + sign * p), with one block-sized float64 temporary worked in place."""
    wide = w.to(torch.float64)
    (wide.add_ if sign > 0 else wide.sub_)(p)
    return to_dtype(wide, dtype)


@dataclass
class Block:
    """One flat block's residual choice: W_res, the dense rebuild from it, the coarse set, and
    the flat positions of the entries outside it whose rebuild still misses W0."""

    w_res: torch.Tensor
    dense: torch.Tensor
    coarse: torch.Tensor
    outside: torch.Tensor


def choose_block(weight: torch.Tensor, product: torch.Tensor) -> Block:
    """W_res for one flat block (module docstring, step 3), the dense rebuild from it, the
    coarse set, and the misses outside it that no nudge fixes."""
    w_res = rounded_sum(weight, product, weight.dtype, sign=-1.0)
    dense = rounded_sum(w_res, product, weight.dtype)
    coarse = coarse_entries(w_res, dense)
    block = Block(w_res=w_res, dense=dense, coarse=coarse, outside=torch.zeros(0, dtype=torch.int64, device=weight.device))
    fixable = (bit_view(dense) != bit_view(weight)) > coarse  # bools: missed & ~coarse in one pass
    if any_true(fixable):
        where = flat_nonzero(fixable)
        block.outside = nudge_into(block, where, weight[where], product[where])
    return block


def nudge_into(block: Block, where: torch.Tensor, target: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """Move W_res at `where` to the first of NUDGE_STEPS whose rebuild hits W0, in place;
    returns the positions where none does (they keep their W_res, dense value and coarse flag)."""
    start = block.w_res[where]
    chosen, open_ = start, torch.ones(where.numel(), dtype=torch.bool, device=where.device)
    for steps in NUDGE_STEPS:
        candidate = nudge(start, steps)
        hit = open_ & same_bits(rebuild_dense(candidate, part), target)
        chosen = torch.where(hit, candidate, chosen)
        open_ &= ~hit
    dense = torch.where(open_, block.dense[where], target)
    block.w_res[where], block.dense[where] = chosen, dense
    block.coarse[where] = coarse_entries(chosen, dense)
    return where[open_]


def row_blocks(rows: int, columns: int) -> list[tuple[int, int]]:
    step = max(1, BLOCK_ENTRIES // max(columns, 1))
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def as_rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1) if t.dim() >= 1 and t.numel() else t.reshape(1, -1)


def check_dtype(weight: torch.Tensor) -> None:
    if weight.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"exact rebuild supports {SUPPORTED_DTYPES}, not {weight.dtype}")


@dataclass
class EncodedBlock:
    """What one row block adds to the correction: its steps and gaps in flat order, and the
    flat positions (within the block) of misses outside the coarse set."""

    steps: torch.Tensor
    gaps: torch.Tensor
    outside: torch.Tensor


def encode_block(weight: torch.Tensor, product: torch.Tensor, w_res_out: torch.Tensor) -> EncodedBlock:
    block = choose_block(weight, product)
    w_res_out.copy_(block.w_res)
    where = flat_nonzero(block.coarse)
    dense = block.dense[where]
    steps = ordered_int(weight[where]) - ordered_int(dense)
    return EncodedBlock(steps=steps, gaps=binade_gaps(block.w_res[where], dense), outside=block.outside)


def residual_and_correction(weight: torch.Tensor, product: torch.Tensor,
                            codec: str = step_codec.ZLIB_BY_GAP) -> tuple[torch.Tensor, Correction]:
    """W_res for the residual model plus what rebuild() needs to give W0 bit for bit."""
    check_dtype(weight)
    rows_w, rows_p = as_rows(weight), as_rows(product)
    w_res = torch.empty_like(rows_w)
    steps, gaps, outside = [], [], []
    for start, stop in row_blocks(*rows_w.shape):
        part = encode_block(rows_w[start:stop].reshape(-1), rows_p[start:stop].reshape(-1), w_res[start:stop].view(-1))
        steps.append(part.steps)
        gaps.append(part.gaps)
        outside.append(part.outside + start * rows_w.shape[1])
    stream, escapes = step_codec.to_stream(torch.cat(steps))
    patch = torch.cat(outside)
    index_dtype = torch.int32 if weight.numel() < 2**31 else torch.int64
    return w_res.reshape(weight.shape), Correction(
        steps=step_codec.encode(stream, torch.cat(gaps), codec),
        escapes=escapes,
        patch_indices=patch.to(index_dtype),
        patch_values=weight.reshape(-1)[patch].clone(),
        codec=codec,
    )


def rebuild(w_res: torch.Tensor, product: torch.Tensor, correction: Correction) -> torch.Tensor:
    """W0 from W_res, P and the correction: deterministic, exact."""
    check_dtype(w_res)
    rows_res, rows_p = as_rows(w_res), as_rows(product)
    dense = torch.empty_like(rows_res)
    for start, stop in row_blocks(*rows_res.shape):
        dense[start:stop] = rounded_sum(rows_res[start:stop], rows_p[start:stop], w_res.dtype)
    rebuilt = dense.reshape(-1)
    where, gaps = coarse_positions(w_res, rebuilt)
    values = rebuilt[where]
    try:
        stream = step_codec.decode(correction.steps, gaps, correction.codec)
    except Exception as exc:  # lzma and zlib raise their own error types on damaged data
        raise ValueError(f"correction stream is damaged ({exc})") from exc
    steps = step_codec.from_stream(stream, correction.escapes)
    rebuilt[where] = from_ordered_int(ordered_int(values) + steps, w_res.dtype)
    if correction.patch_indices.numel():
        rebuilt[correction.patch_indices.long()] = correction.patch_values.to(rebuilt.dtype)
    return rebuilt.reshape(w_res.shape)
