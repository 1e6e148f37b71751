"""Keep streamed stages' memory flat on glibc.

glibc raises its mmap threshold after large blocks are freed, so later tensor-sized blocks come
from the heap and are kept after free: a tensor-by-tensor loop then grows like the whole model.
Fixing the threshold at 32 MiB (glibc's own ceiling for it) makes blocks above it mmapped, so
returned on free, and malloc_trim hands back what the heap kept once that is worth it. Both are
no-ops where glibc is not the allocator.

The threshold is not lower, and the heap is not trimmed after every tensor, because each of
those makes the next layer's float64 temporaries fault in fresh zeroed pages: on SmolLM2 (rank 16)
a 1 MiB threshold with a trim per tensor spent 11.6 s of init's 22.3 s as system time; 32 MiB
with a trim only past FREE_HEAP_TRIM_BYTES takes 15.9 s (2.7 s system), for 0.1 GB more peak
memory (0.17 GB on a random Llama of hidden 2048). glibc's own sliding threshold stops at 32 MiB
too, but reaches it only after blocks of that size were freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 32 << 20
FREE_HEAP_TRIM_BYTES = 256 << 20
CHECK_EVERY_BYTES = 64 << 20


class MallocInfo(ctypes.Structure):
    """glibc's struct mallinfo2 (2.33 and later), summed over all arenas."""

    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not (hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt")):
        return None
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = MallocInfo
    return libc


def return_large_blocks_to_the_os() -> None:
    """Serve blocks of >= LARGE_BLOCK_BYTES with mmap from now on, so freeing them returns the memory."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)


def trim() -> None:
    """Give memory that glibc's heaps kept after free back to the OS, once they keep more than
    FREE_HEAP_TRIM_BYTES (always, where that cannot be read)."""
    libc = _libc()
    if libc is None:
        return
    free = free_heap_bytes(libc)
    if free is None or free > FREE_HEAP_TRIM_BYTES:
        libc.malloc_trim(0)


def free_heap_bytes(libc) -> int | None:
    """Bytes glibc's heaps hold free (mallinfo2's fordblks), or None without mallinfo2."""
    if not hasattr(libc, "mallinfo2"):
        return None
    return int(libc.mallinfo2().fordblks)


class StreamTrimmer:
    """trim() once per CHECK_EVERY_BYTES of tensors streamed rather than after each: mallinfo2
    walks every free chunk, 0.5-2 ms a call on a fragmented heap (0.2 s of init on SmolLM2's
    272 tensors), and the heaps cannot gain FREE_HEAP_TRIM_BYTES over so few bytes of weights."""

    def __init__(self, every_bytes: int = CHECK_EVERY_BYTES) -> None:
        self.every_bytes, self.pending_bytes = every_bytes, 0

    def after(self, nbytes: int) -> None:
        self.pending_bytes += nbytes
        if self.pending_bytes >= self.every_bytes:
            self.pending_bytes = 0
            trim()
