"""Keep streamed stages' memory flat on glibc.

glibc raises its mmap threshold after large blocks are freed, so later tensor-sized blocks come
from the heap and are kept after free: a tensor-by-tensor loop then grows like the whole model.
Fixing the threshold makes large blocks mmapped (returned on free), and malloc_trim hands back
what the heap kept. Both are no-ops where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 1 << 20


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def return_large_blocks_to_the_os() -> None:
    """Serve blocks of >= 1 MiB with mmap from now on, so freeing them returns the memory."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)


def trim() -> None:
    """Give memory that glibc's heap kept after free back to the OS."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
