"""Keep freed host memory for reuse during training instead of handing it back to the OS each step.

PyTorch's CPU allocator takes every tensor from ``malloc`` and gives it back with ``free``.
glibc's defaults then return memory to the kernel as soon as enough of it is free at the top of
the heap (128 KiB, raised dynamically) and serve large blocks with ``mmap``/``munmap``. A training
step that frees its activations and gradients and allocates them again in the next step can so
page-fault through megabytes of fresh memory every step: on ``benchmarks/bench_overhead.py``'s
model (batch 128, 2 cores) that was about 750 page faults and 1.6 ms of kernel time per 8 ms step
(whether it happens depends on where the heap's last live block lies, so it comes and goes with
unrelated changes). jemalloc and tcmalloc avoid it but must be preloaded; this does the same with
two ``mallopt`` settings: blocks up to 32 MiB come from the heap, and up to 256 MiB of free memory
at its top is kept. The cost is that the process keeps its peak heap instead of shrinking back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Free memory at the top of the heap kept for reuse.
TRIM_THRESHOLD = 256 << 20
#: Blocks smaller than this come from the heap, not from their own mmap; 32 MiB is glibc's maximum.
MMAP_THRESHOLD = 32 << 20


@functools.lru_cache(maxsize=1)
def retain_freed_memory() -> bool:
    """Apply the settings above to this process (once; they last for the process's life).

    Returns True when they took effect; False where the C library is not glibc (macOS, Windows,
    musl), which have their own allocators and are left alone.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success. Both are needed: setting either one stops glibc adjusting the
    # mmap threshold, so the trim threshold alone would leave it at 128 KiB and every larger block
    # would be mmapped afresh (measured: about 3,000 page faults per step instead of 750).
    mmap_set = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    trim_set = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return mmap_set and trim_set
