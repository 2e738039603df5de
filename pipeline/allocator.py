"""glibc malloc settings for the large tensors of 3D inference and training.

glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it
on ``free``; the kernel then zero-fills the new mapping page by page on first touch. A 3D network's
activations are hundreds of MB, so every forward pass pays page faults by the hundred thousand, a large part
of its time on a small CPU (measured in ``benchmarks/results.md``).
Neither torch (whose CPU allocator is malloc) nor MONAI changes this; jemalloc or tcmalloc would, at
the price of another dependency. Here big blocks come from the heap and freed memory is kept for the
next pass: the process's resident memory then stays at its high-water mark instead of shrinking
between cases (the peak itself does not grow).

Set ``PIPELINE_MALLOC=default`` in the environment to leave glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

# The environment form, read by glibc when a process starts (for subprocesses: monai.bundle, torchrun).
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}
OPT_OUT = "PIPELINE_MALLOC"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)


def keep_freed_memory() -> bool:
    """Apply :data:`MALLOC_ENV` to this process (glibc ``mallopt``) and to the subprocesses it starts.

    Returns:
        True when applied; False on a C library other than glibc (nothing changed) or when the
        environment variable ``PIPELINE_MALLOC`` is ``default``. Never raises.
    """
    if os.environ.get(OPT_OUT) == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        applied = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        return False
    if applied:
        for key, value in MALLOC_ENV.items():
            os.environ.setdefault(key, value)
    return applied
