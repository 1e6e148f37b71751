"""Storage forms of a symmetric covariance matrix: tensors in, tensors out, no files.

A covariance is accumulated in float64; what is stored can be smaller. Every form keeps only the
upper triangle (the matrix is symmetric), except `float64`, the full matrix as older artefacts
hold it; `float64-packed` is its lossless upper triangle. The lossy forms:

- `float32`: the upper triangle in float32 (relative error 2^-24 per entry).
- `float24`: float32 rounded to 15 mantissa bits, 3 bytes per entry (relative error 2^-16).
- `corr16` / `corr24`: the diagonal in float64 (exact variances) and the correlations
  C_ij / sqrt(C_ii C_jj), which lie in [-1, 1], as 16- or 24-bit fixed point (absolute error
  2^-16 / 2^-24 of sqrt(C_ii C_jj)). Independent of the scale of each channel, so outlier
  channels cost no precision elsewhere.

`encode` returns named parts (the main part is named ""), `decode` turns them back into a full
float64 symmetric matrix.

`auto` (the default) picks `corr24` when every covariance is well determined (at least
WELL_DETERMINED tokens per dimension in each dataset) and `float32` otherwise: measured on
SmolLM2-135M (bench/covariance_storage.py), corr24 changes the reward R(S) of the chosen
subspaces by < 1e-7 relative at ~2-15 tokens per dimension, but by up to 2e-4 with fewer tokens
than dimensions, where Cov- has a null space and the top eigenvalues of dCov are separated by
gaps below the storage's resolution; float32 stays below 1e-11 there.
"""

from __future__ import annotations

import functools

import numpy
import torch

FORMATS = ("float64", "float64-packed", "float32", "float24", "corr24", "corr16")
LOSSLESS = ("float64", "float64-packed")
BYTES_PER_ENTRY = {"float64": 8, "float64-packed": 8, "float32": 4, "float24": 3, "corr24": 3, "corr16": 2}
CHOICES = ("auto", *FORMATS)
WELL_DETERMINED = 2
CORR24_SCALE = 2**23 - 1
CORR16_SCALE = 2**15 - 1


def resolve_form(requested: str, fewest_tokens: int, largest_dim: int) -> str:
    """The storage form for `requested` (a form, or auto) given the smaller dataset's token count."""
    if requested != "auto":
        return requested
    return "corr24" if fewest_tokens >= WELL_DETERMINED * largest_dim else "float32"


def packed_length(dim: int) -> int:
    return dim * (dim + 1) // 2


def stored_bytes(dim: int, form: str) -> int:
    """Bytes one (dim x dim) covariance takes in `form` (tensor data only, no header)."""
    if form == "float64":
        return dim * dim * 8
    if form.startswith("corr"):
        return (packed_length(dim) - dim) * BYTES_PER_ENTRY[form] + dim * 8
    return packed_length(dim) * BYTES_PER_ENTRY[form]


@functools.lru_cache(maxsize=4)
def upper_indices(dim: int, diagonal: int, device: torch.device) -> torch.Tensor:
    """Flat (row-major) positions of the upper triangle of a (dim x dim) matrix, row by row."""
    return torch.ones(dim, dim, dtype=torch.bool, device=device).triu(diagonal).flatten().nonzero().squeeze(1)


def pack_upper(matrix: torch.Tensor, diagonal: int = 0) -> torch.Tensor:
    """The upper triangle of a square matrix, row by row, as a 1-D tensor."""
    return matrix.contiguous().flatten().take(upper_indices(matrix.shape[0], diagonal, matrix.device))


CACHED_INDEX_DIM = 8192  # the decode indices take 8 dim^2 bytes: 0.5 GB at 8192, rebuilt per call above


def cached_up_to_dim(function):
    """Memoise an index builder of (dim, ...) for dims up to CACHED_INDEX_DIM (two dims at a time);
    larger ones (an input-side 28672 at 70B: 6.6 GB of indices) are rebuilt on each call."""
    cached = functools.lru_cache(maxsize=2)(function)

    @functools.wraps(function)
    def build(dim: int, *args):
        return cached(dim, *args) if dim <= CACHED_INDEX_DIM else function(dim, *args)

    build.cache = cached
    return build


@cached_up_to_dim
def upper_rows_and_columns(dim: int, diagonal: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of each entry of pack_upper(matrix, diagonal), as index tensors."""
    rows, columns = torch.triu_indices(dim, dim, diagonal, device=device).to(index_dtype(dim))
    return rows, columns


@cached_up_to_dim
def symmetric_gather_index(dim: int, diagonal: int, device: torch.device) -> torch.Tensor:
    """For each flat position of a symmetric (dim x dim) matrix, the slot of its value in
    pack_upper(matrix, diagonal), with (diagonal=1) the dim diagonal entries appended."""
    rows, columns = upper_rows_and_columns(dim, diagonal, device)
    slots = torch.empty(dim, dim, dtype=rows.dtype, device=device)
    packed_slots = torch.arange(rows.numel(), dtype=rows.dtype, device=device)
    slots[rows, columns] = packed_slots
    slots[columns, rows] = packed_slots
    if diagonal == 1:
        slots.diagonal().copy_(torch.arange(rows.numel(), rows.numel() + dim, dtype=rows.dtype, device=device))
    return slots.view(-1)


def release_decode_indices() -> None:
    """Forget the memoised decode indices (a process that goes on after reading covariances)."""
    upper_rows_and_columns.cache.cache_clear()
    symmetric_gather_index.cache.cache_clear()


def index_dtype(dim: int) -> torch.dtype:
    return torch.int32 if dim * dim < 2**31 else torch.int64


def symmetric_from_packed(values: torch.Tensor, dim: int, diagonal: torch.Tensor | None = None) -> torch.Tensor:
    """The symmetric matrix whose upper triangle is `values` (strict upper part when `diagonal`
    is given), entries copied bit for bit."""
    if diagonal is not None:
        values = torch.cat([values, diagonal.to(values)])
    index = symmetric_gather_index(dim, 0 if diagonal is None else 1, values.device)
    return values.index_select(0, index).view(dim, dim)


def unpack_symmetric(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of pack_upper (float64). A stored -0.0 comes back as +0.0, as it always has."""
    return symmetric_from_packed(packed.to(torch.float64) + 0.0, dim)


def pair_products(scales: torch.Tensor) -> torch.Tensor:
    """scales[i] * scales[j] for each entry (i, j) of the strict upper triangle, packed."""
    rows, columns = upper_rows_and_columns(scales.numel(), 1, scales.device)
    return scales.index_select(0, rows) * scales.index_select(0, columns)


def encode(covariance: torch.Tensor, form: str) -> dict[str, torch.Tensor]:
    """Named parts of `covariance` (symmetric, float64) in storage form `form`."""
    if form == "float64":
        return {"": covariance.to(torch.float64).contiguous()}
    if form == "float64-packed":
        return {"": pack_upper(covariance.to(torch.float64))}
    if form == "float32":
        return {"": pack_upper(covariance).to(torch.float32)}
    if form == "float24":
        return {"": float24_bytes(pack_upper(covariance).to(torch.float32))}
    if form in ("corr24", "corr16"):
        diagonal, correlations = correlation_parts(covariance)
        return {"": quantize_correlations(correlations, form), "diag": diagonal}
    raise ValueError(f"unknown covariance storage form {form!r}; use one of {', '.join(FORMATS)}")


def decode(parts: dict[str, torch.Tensor], dim: int, form: str) -> torch.Tensor:
    """The float64 symmetric (dim x dim) matrix stored as `parts` in form `form`."""
    main = parts[""]
    if form == "float64":
        return main.to(torch.float64)
    if form in ("float64-packed", "float32"):
        return unpack_symmetric(main, dim)
    if form == "float24":
        return unpack_symmetric(float24_values(main), dim)
    if form in ("corr24", "corr16"):
        diagonal = parts["diag"].to(torch.float64)
        covariances = dequantize_correlations(main, form).mul_(pair_products(diagonal.clamp_min(0).sqrt()))
        return symmetric_from_packed(covariances, dim, diagonal)
    raise ValueError(f"unknown covariance storage form {form!r}; use one of {', '.join(FORMATS)}")


def correlation_parts(covariance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(diagonal, strict upper correlations); a channel with zero variance correlates 0."""
    matrix = covariance.to(torch.float64)
    diagonal = matrix.diagonal().clone()
    inverse_scales = torch.where(diagonal > 0, diagonal.clamp_min(torch.finfo(torch.float64).tiny).rsqrt(), 0.0)
    scaled = matrix * inverse_scales[:, None]
    scaled *= inverse_scales[None, :]
    return diagonal, pack_upper(scaled, 1).clamp_(-1.0, 1.0)


def quantize_correlations(correlations: torch.Tensor, form: str) -> torch.Tensor:
    if form == "corr16":
        return torch.round(correlations * CORR16_SCALE).to(torch.int16)
    return int24_bytes(torch.round(correlations * CORR24_SCALE).to(torch.int32))


def dequantize_correlations(stored: torch.Tensor, form: str) -> torch.Tensor:
    if form == "corr16":
        return stored.to(torch.float64) / CORR16_SCALE
    return int24_values(stored).to(torch.float64) / CORR24_SCALE


def int24_bytes(values: torch.Tensor) -> torch.Tensor:
    """Low three bytes (little-endian, two's complement) of int32 values, as uint8 (n x 3)."""
    return values.to(torch.int32).contiguous().view(torch.uint8).reshape(-1, 4)[:, :3].contiguous()


def int24_values(stored: torch.Tensor) -> torch.Tensor:
    """Inverse of int24_bytes: sign-extended int32 values."""
    return int24_high_words(stored) >> 8


def int24_high_words(stored: torch.Tensor) -> torch.Tensor:
    """int32 words whose top three bytes are the stored entries; the low byte is not specified."""
    if stored.device.type == "cpu":
        return int24_words_overlapping(stored)
    return int24_words_padded(stored)


def int24_words_overlapping(stored: torch.Tensor) -> torch.Tensor:
    """Each entry read as the four bytes that end with it, after one leading zero byte: no copy
    into a wider buffer (CPU only)."""
    data = numpy.empty(stored.numel() + 1, dtype=numpy.uint8)
    data[0] = 0
    data[1:] = stored.contiguous().view(-1).numpy()
    words = numpy.ndarray((stored.numel() // 3,), dtype="<i4", buffer=data, strides=(3,))
    return torch.from_numpy(words.astype(numpy.int32))


def int24_words_padded(stored: torch.Tensor) -> torch.Tensor:
    """Each entry in bytes 1..3 of a zeroed four-byte word."""
    return torch.nn.functional.pad(stored.reshape(-1, 3), (1, 0)).view(torch.int32).view(-1)


def float24_bytes(values: torch.Tensor) -> torch.Tensor:
    """float32 rounded to nearest at 15 mantissa bits; the top three bytes of its bit pattern."""
    bits = values.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    rounded = (bits + 0x80) >> 8  # a carry out of the mantissa moves the exponent up: still nearest
    return int24_bytes(rounded.to(torch.int32))


def float24_values(stored: torch.Tensor) -> torch.Tensor:
    """Inverse of float24_bytes: the float32 values (low mantissa byte zero)."""
    return (int24_high_words(stored) & -256).view(torch.float32)
