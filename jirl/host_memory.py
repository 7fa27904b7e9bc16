"""Host memory that a CPU training step reuses instead of faulting in afresh every step.

XLA:CPU gives each execution of a compiled step one temporary buffer (694 MiB for the d=256,
4-layer step of `benchmarks/peer_step.py`), allocated on a worker thread. glibc serves an
allocation that large from a fresh `mmap` and returns it with `munmap`, so every step the kernel
faults in and zeroes every page again: 172k minor faults and 0.28 s of system time a step there,
15% of its wall time. With one malloc arena, no `mmap` for large blocks and a high trim threshold,
the freed buffer stays in the heap and the next step reuses it (no faults). The price: the
process keeps its peak host memory until it exits, and every thread shares one arena; so the CLI
applies it only where JAX will run on the CPU (`reuse_freed_memory_if_cpu`). It must happen before
JAX starts its backend: threads that have allocated keep their own arenas.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os

# mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_KEEP = 2**31 - 1  # the largest trim threshold mallopt takes: never give freed heap back


@functools.cache
def reuse_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse (one arena, no mmap, no trimming); once per
    process, before the first step runs. Returns False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _KEEP))
    return all(mallopt(param, value) == 1 for param, value in settings)


def accelerator_expected() -> bool:
    """Whether JAX will run on a GPU or TPU, decided without starting JAX: the first platform of
    JAX_PLATFORMS when set, else whether this host has a GPU or TPU device file."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() != "cpu"
    return any(
        glob.glob(pattern) for pattern in ("/dev/nvidia[0-9]*", "/dev/accel[0-9]*", "/dev/vfio/[0-9]*")
    )


def reuse_freed_memory_if_cpu() -> bool:
    """`reuse_freed_memory()` where JAX will run on the CPU; True when applied."""
    return not accelerator_expected() and reuse_freed_memory()
