"""OpenMP's idle threads told to go to sleep sooner, because NNPACK's threads need the same cores.

torch's CPU wheel runs its own ops (ReLU masks, pooling, the Gram matmuls, oneDNN's convolutions)
on libgomp's OpenMP threads, and NNPACK's Winograd convolutions (kernels.py) on a second pool of
its own. After each parallel region libgomp's workers busy-wait before they sleep: by default
GOMP_SPINCOUNT = 300,000 pause instructions, several milliseconds. So each NNPACK convolution that
follows a ReLU or a pooling starts with an OpenMP thread spinning on a core that one of NNPACK's
threads needs. Measured (AMD EPYC, 2 threads, oneDNN limited to AVX2, float32 at 512 px, the
profile over 4 iterations): NNPACK's convolutions 719 ms per iteration, 518 ms for the same calls
timed alone; with a spin count of 10,000 they take 520 ms in the network and a whole iteration
963-996 ms -> 738-814 ms. With oneDNN alone (bf16) 10,000 changed nothing measurable; a count of
1,000 made 128 px iterations 10-50% slower (a small image's ops are short, and waking a sleeping
thread costs more than the op), and no spinning at all (OMP_WAIT_POLICY=PASSIVE) made bf16 ones at
512 px 3-6% slower. docs/speed.md.

libgomp reads the setting from the environment once, when it is loaded, which is when torch is
imported: so the package sets it on import, before any of its modules imports torch. Where torch
was imported first, this process keeps libgomp's default (the processes it starts, Dask's local
workers among them, get the setting). A spin count or wait policy the user set is theirs and kept.
"""

from __future__ import annotations

import os

SPIN_COUNT_ENV = "GOMP_SPINCOUNT"
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
# Pause instructions before an idle OpenMP thread sleeps: 0.2-0.5 ms on current x86 cores.
SPIN_COUNT = 10_000


def spin_less() -> None:
    """Set libgomp's spin count for this process (if torch is not loaded yet) and its children,
    unless the user chose a spin count or a wait policy."""
    if SPIN_COUNT_ENV not in os.environ and WAIT_POLICY_ENV not in os.environ:
        os.environ[SPIN_COUNT_ENV] = str(SPIN_COUNT)
