import types

import pytest

from sclora_tools.io import memory


class FakeLibc:
    """Records malloc_trim calls; reports `free` bytes through mallinfo2 when `free` is not None."""

    def __init__(self, free: int | None) -> None:
        self.trims = 0
        if free is not None:
            self.mallinfo2 = lambda: types.SimpleNamespace(fordblks=free)

    def malloc_trim(self, pad: int) -> int:
        self.trims += 1
        return 1


@pytest.mark.parametrize(("free", "trims"), [(0, 0), (memory.FREE_HEAP_TRIM_BYTES, 0), (memory.FREE_HEAP_TRIM_BYTES + 1, 1), (None, 1)])
def test_trim_hands_memory_back_only_once_the_heaps_keep_enough_free(monkeypatch, free, trims):
    libc = FakeLibc(free)
    monkeypatch.setattr(memory, "_libc", lambda: libc)
    memory.trim()
    assert libc.trims == trims


def test_free_heap_bytes_reads_glibc_when_it_is_the_allocator():
    libc = memory._libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("not glibc >= 2.33")
    assert memory.free_heap_bytes(libc) >= 0


def test_stream_trimmer_checks_the_heaps_once_per_stretch_of_streamed_bytes(monkeypatch):
    libc = FakeLibc(free=memory.FREE_HEAP_TRIM_BYTES + 1)
    monkeypatch.setattr(memory, "_libc", lambda: libc)
    trimmer = memory.StreamTrimmer(every_bytes=100)
    for _ in range(4):
        trimmer.after(30)
    assert libc.trims == 1  # after 120 bytes; the fourth tensor starts the next stretch
    trimmer.after(70)
    assert libc.trims == 1
    trimmer.after(60)
    assert libc.trims == 2
