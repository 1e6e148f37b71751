"""Byte codecs for the exact rebuild's step stream (core.exact): one int8 per coarse entry, in
flat order, with ESCAPE where the step does not fit (those go to a separate int64 list).

- "lzma-int8": the whole stream, lzma preset 6. What init wrote before the codec was recorded;
  decoded for old runs, never written.
- "zlib-huffman-by-gap": the stream split by the entry's binade gap g (how many binades W_res
  lies above the rebuilt value, 1..GAP_GROUPS, larger gaps share the last group), each part in
  flat order and Huffman-coded (zlib, Z_HUFFMAN_ONLY), each prefixed by its length (uint32 LE).
  The decoder knows every entry's gap from W_res and the dense rebuild, so the split costs no
  bytes; a step's spread grows with its gap, so coding per gap is ~15% smaller than one stream
  and ~30x faster than lzma, decompression included.
"""

from __future__ import annotations

import itertools
import lzma
import struct
import zlib

import numpy
import torch

ESCAPE = -128
LZMA_INT8 = "lzma-int8"
ZLIB_BY_GAP = "zlib-huffman-by-gap"
CODECS = (LZMA_INT8, ZLIB_BY_GAP)
GAP_GROUPS = 8
LENGTH = struct.Struct("<I")


def to_stream(steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 stream (ESCAPE where |step| >= 128) and the escaped steps (int64, in order)."""
    small = steps.abs() < 128
    stream = torch.where(small, steps, torch.full_like(steps, ESCAPE)).to(torch.int8)
    return stream, steps[~small].to(torch.int64)


def from_stream(stream: torch.Tensor, escapes: torch.Tensor) -> torch.Tensor:
    steps = stream.to(torch.int64)
    escaped = steps == ESCAPE
    if int(escaped.sum()) != escapes.numel():
        raise ValueError("correction stream and its escape list disagree")
    steps[escaped] = escapes.to(torch.int64)
    return steps


def huffman(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    return packer.compress(data) + packer.flush()


def gap_groups(gaps: torch.Tensor) -> torch.Tensor:
    return gaps.clamp(1, GAP_GROUPS).to(torch.int8)


def group_order(gaps: torch.Tensor) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The entries' positions grouped by gap group, each group in flat order, and where each
    group starts in that order (GAP_GROUPS + 1 bounds)."""
    groups = gap_groups(gaps).reshape(-1).cpu().numpy()
    order = numpy.argsort(groups, kind="stable")
    bounds = numpy.searchsorted(groups[order], numpy.arange(1, GAP_GROUPS + 2, dtype=numpy.int8))
    return order, bounds


def encode(stream: torch.Tensor, gaps: torch.Tensor, codec: str = ZLIB_BY_GAP) -> bytes:
    """The int8 stream as bytes; `gaps` (one per entry) is what the decoder will recompute."""
    if codec == LZMA_INT8:
        return lzma.compress(stream.numpy().tobytes(), preset=6)
    if codec != ZLIB_BY_GAP:
        raise ValueError(f"unknown correction codec {codec!r}")
    if stream.numel() != gaps.numel():
        raise ValueError(f"the step stream holds {stream.numel()} entries and the gaps {gaps.numel()}")
    order, bounds = group_order(gaps)
    ordered = stream.numpy()[order]
    parts = []
    for start, end in itertools.pairwise(bounds):
        section = huffman(ordered[start:end].tobytes())
        parts += [LENGTH.pack(len(section)), section]
    return b"".join(parts)


def decode(blob: bytes, gaps: torch.Tensor, codec: str) -> torch.Tensor:
    """The int8 stream back, one entry per element of `gaps` (flat order)."""
    count = gaps.numel()
    if codec == LZMA_INT8:
        raw = lzma.decompress(blob) if blob else b""
        if len(raw) != count:
            raise ValueError(f"correction stream holds {len(raw)} entries, the weights need {count}")
        return torch.frombuffer(bytearray(raw), dtype=torch.int8) if count else torch.zeros(0, dtype=torch.int8)
    if codec != ZLIB_BY_GAP:
        raise ValueError(f"unknown correction codec {codec!r}; this sclora is too old to read it")
    order, bounds = group_order(gaps)
    sections, offset = [], 0
    for group in range(1, GAP_GROUPS + 1):
        raw, offset = section_at(blob, offset)
        needed = int(bounds[group] - bounds[group - 1])
        if len(raw) != needed:
            raise ValueError(f"correction stream of binade gap {group} holds {len(raw)} entries, the weights need {needed}")
        sections.append(raw)
    if offset != len(blob):
        raise ValueError("correction stream has trailing bytes")
    stream = numpy.empty(count, dtype=numpy.int8)
    stream[order] = numpy.frombuffer(b"".join(sections), dtype=numpy.int8)
    return torch.from_numpy(stream)


def section_at(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + LENGTH.size > len(blob):
        raise ValueError("correction stream is truncated")
    (length,) = LENGTH.unpack_from(blob, offset)
    start = offset + LENGTH.size
    if start + length > len(blob):
        raise ValueError("correction stream is truncated")
    try:
        return zlib.decompress(blob[start:start + length]), start + length
    except zlib.error as exc:
        raise ValueError(f"correction stream is damaged ({exc})") from exc
