"""glibc's heap, tuned for tensors of tens to hundreds of megabytes.

glibc serves every allocation above its mmap threshold with a fresh mmap and unmaps it on free.
The threshold adapts, but never above 32 MiB, and VGG's first activations are larger at any
useful size (64 x 384 x 512 float32 is 48 MiB; at 1024 px, 192 MiB): each forward and backward
then page-faults and zeroes them anew. Measured on 1x64x384x512 (benchmarks/allocator.py, AMD
EPYC, 2 threads, quiet): a ReLU mask 18.9 -> 3.5 ms, empty + fill 16.1 -> 0.8 ms, an NNPACK
64->64 convolution 54.2 -> 35.8 ms, with the threshold raised to 1 GiB.

It costs memory: freed blocks stay in the heap for the next iteration, with holes between them,
instead of going back to the system. Per iteration and peak RSS, AMD EPYC, bf16, 2 threads: at
1024 px 2966 -> 2143 ms for 1800 -> 2127 MB; at 2048 px, a checkpointed scale, 18279 -> 9484 ms
but 3450 -> 6589 MB. So the step loop asks for large blocks only on a scale that is not
checkpointed (checkpointing means the user asked for less memory, or the image is past
CHECKPOINT_AUTO_PIXELS), and sets glibc's own ceiling back on one that is.

Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which stops the adapting: every
tensor of 128 KiB and up is mmapped (one stylize call at 128 px took 21.0 s in a worker against
11.7 s in a plain process, AMD EPYC, 1 thread, fp32). remote.worker_context sets glibc's ceiling
back before a worker's first task.

A process-wide setting, like NNPACK's thread pool: not undone after a call. An mmap threshold the
user set in the environment is theirs and is kept; off glibc (musl, macOS, Windows) nothing is
done: their allocators are not glibc's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

# (mmap threshold, trim threshold): every activation of a scale that is not checkpointed (up to
# ~1400 px) from the heap, with up to 256 MiB free at its top kept rather than handed back and
# re-faulted each iteration; or where glibc's adaptive thresholds end up by themselves.
LARGE_BLOCKS = (1 << 30, 256 << 20)
GLIBC_CEILING = (32 << 20, 64 << 20)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (glibc's malloc.h)
MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"

_thresholds: tuple[int, int] | None = None  # what this process's were last set to (None: never)


@functools.lru_cache(maxsize=1)
def glibc():
    """glibc's C library, or None where the process runs on another one (looked up once: a video
    asks at every frame)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_heap(large_blocks: bool) -> tuple[int, int] | None:
    """glibc's (mmap, trim) thresholds to LARGE_BLOCKS (a scale that is not checkpointed) or to
    GLIBC_CEILING; nothing where the user named an mmap threshold in the environment, or off glibc.
    Returns the thresholds now set by our hand (None: glibc's own, or the user's)."""
    global _thresholds
    wanted = LARGE_BLOCKS if large_blocks else GLIBC_CEILING
    if wanted == _thresholds or os.environ.get(MMAP_ENV):
        return _thresholds
    libc = glibc()
    if libc is None:
        return None
    mmap_bytes, trim_bytes = wanted
    # mallopt returns 1 when it took the value; a glibc that refuses one keeps its own.
    if libc.mallopt(M_MMAP_THRESHOLD, mmap_bytes) == 1 and libc.mallopt(M_TRIM_THRESHOLD, trim_bytes) == 1:
        _thresholds = wanted
    return _thresholds
