"""The gap-grouped step codec (core.step_codec) writes the same bytes and reads back the same
stream as its simple definition (below: one boolean mask per gap group), empty groups, escapes
and out-of-range gaps included, and refuses damaged blobs with the same messages."""

from __future__ import annotations

import pytest
import torch

from sclora_tools.core import step_codec


def ref_encode(stream, gaps):
    groups = gaps.clamp(1, step_codec.GAP_GROUPS).to(torch.int8)
    parts = []
    for group in range(1, step_codec.GAP_GROUPS + 1):
        section = step_codec.huffman(stream[groups == group].numpy().tobytes())
        parts += [step_codec.LENGTH.pack(len(section)), section]
    return b"".join(parts)


def ref_decode(blob, gaps):
    groups = gaps.clamp(1, step_codec.GAP_GROUPS).to(torch.int8)
    stream, offset = torch.empty(gaps.numel(), dtype=torch.int8), 0
    for group in range(1, step_codec.GAP_GROUPS + 1):
        raw, offset = step_codec.section_at(blob, offset)
        where = groups == group
        if len(raw) != int(where.sum()):
            raise ValueError(f"correction stream of binade gap {group} holds {len(raw)} entries, the weights need {int(where.sum())}")
        if raw:
            stream[where] = torch.frombuffer(bytearray(raw), dtype=torch.int8)
    return stream


def random_stream(count, seed, groups=range(-1, 12)):
    """Steps spread wider at larger gaps, some escaped; gaps drawn from `groups` (0, -1 and
    those above GAP_GROUPS fold into the end groups)."""
    generator = torch.Generator().manual_seed(seed)
    choices = torch.tensor(list(groups), dtype=torch.int64)
    gaps = choices[torch.randint(0, len(choices), (count,), generator=generator)]
    steps = (torch.randn(count, generator=generator) * 2.0 ** gaps.clamp(0, 9)).round().to(torch.int64)
    stream, escapes = step_codec.to_stream(steps)
    return stream, escapes, gaps


CASES = {
    "every group": (5000, range(-1, 12)),
    "empty groups": (3000, (2, 5, 8)),
    "one group": (1000, (1,)),
    "one entry": (1, (9,)),
    "nothing": (0, (1,)),
}


@pytest.mark.parametrize("case", CASES)
def test_encode_writes_the_bytes_of_the_simple_definition_and_decode_reads_them_back(case):
    count, groups = CASES[case]
    for seed in range(3):
        stream, escapes, gaps = random_stream(count, seed, groups)
        blob = step_codec.encode(stream, gaps)
        assert blob == ref_encode(stream, gaps)
        decoded = step_codec.decode(blob, gaps, step_codec.ZLIB_BY_GAP)
        assert decoded.dtype == torch.int8 and torch.equal(decoded, ref_decode(blob, gaps))
        assert torch.equal(decoded, stream)
        assert torch.equal(step_codec.from_stream(decoded, escapes), step_codec.from_stream(stream, escapes))


def test_the_stream_has_escapes_and_every_group_holds_entries():
    stream, escapes, gaps = random_stream(5000, 0)
    assert escapes.numel() > 0 and bool((stream == step_codec.ESCAPE).any())
    assert set(gaps.clamp(1, step_codec.GAP_GROUPS).tolist()) == set(range(1, step_codec.GAP_GROUPS + 1))


def test_a_blob_for_other_gaps_is_refused_with_the_simple_definitions_message():
    stream, _, gaps = random_stream(2000, 1)
    blob = step_codec.encode(stream, gaps)
    other = gaps.clone()
    other[gaps == 3] = 4
    with pytest.raises(ValueError) as expected:
        ref_decode(blob, other)
    with pytest.raises(ValueError, match="binade gap 3 holds") as got:
        step_codec.decode(blob, other, step_codec.ZLIB_BY_GAP)
    assert str(got.value) == str(expected.value)
    with pytest.raises(ValueError, match="trailing bytes"):
        step_codec.decode(blob + b"\0", gaps, step_codec.ZLIB_BY_GAP)
    with pytest.raises(ValueError, match="truncated"):
        step_codec.decode(blob[:-1], gaps, step_codec.ZLIB_BY_GAP)


def test_a_stream_and_gaps_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="step stream holds 3 entries and the gaps 2"):
        step_codec.encode(torch.zeros(3, dtype=torch.int8), torch.ones(2, dtype=torch.int32))
