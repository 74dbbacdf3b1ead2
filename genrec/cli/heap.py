"""Give freed tensor memory back to the operating system as it is freed.

A decoder training step allocates and frees a few hundred MB of activations. glibc's allocator raises its
mmap threshold each time a large block is freed (up to 32 MB), so later blocks come from the heap, and the
heap keeps what is freed: on the Beauty config ``genrec train``'s resident memory sat at 2.2 GB after a
step while the live memory (after ``malloc_trim``) was 0.73 GB (docs/scaling.md, "Memory"). A fixed mmap
threshold turns each large block into its own mapping, returned on free, so the resident size follows what
is alive. Set once per process, before the model stack allocates (``genrec.cli.main``); Arrow's tables get
the same allocator (``arrow_system_pool``)."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt's parameter numbers (malloc.h)
M_TRIM_THRESHOLD = -1
THRESHOLD = 256 * 1024  # blocks from this size on get their own mapping
ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")  # a user's own choice wins
ARROW_ENV = "ARROW_DEFAULT_MEMORY_POOL"  # Arrow's own switch: a user's choice wins here too


def return_freed_memory(threshold: int = THRESHOLD) -> bool:
    """Fix glibc's mmap and trim thresholds at ``threshold`` bytes; True when set. A no-op off Linux/glibc
    and where the user tuned malloc through its environment variables."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in ENV):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries without mallopt
        return False
    ok = mallopt(M_MMAP_THRESHOLD, threshold) == 1 and mallopt(M_TRIM_THRESHOLD, 2 * threshold) == 1
    log.debug("malloc thresholds %s", "set" if ok else "refused")
    return ok


def arrow_system_pool() -> bool:
    """Arrow's buffers from the system allocator (glibc's, with the thresholds above) instead of the mimalloc
    it bundles, which keeps what a dropped table freed resident until asked to release it: reading a
    500k-product catalog with 384-d vectors (1 GB in Arrow) left 2.3 GB resident after the table was gone,
    0.4 GB with the system pool (docs/scaling.md, "Memory"). True when set; a user's own
    ``ARROW_DEFAULT_MEMORY_POOL`` wins."""
    if ARROW_ENV in os.environ:
        return False
    os.environ[ARROW_ENV] = "system"  # what Arrow's C++ side (the parquet readers) reads when pyarrow loads
    if "pyarrow" in sys.modules:  # loaded already: its Python-level default at least
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
    return True
