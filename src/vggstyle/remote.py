"""What both sides of a Dask task need, for every wing that uses a cluster (batch, video): the
client's connection, with one clear line when there is no scheduler, and on the worker its
address, its thread count and the flag that says the client has cancelled the task.

Imported only with a scheduler: `distributed` is the [cluster] extra.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

from distributed import Client, get_worker
from distributed.worker import thread_state

from .errors import ConfigError

CONNECT_TIMEOUT = "20s"
# Dask's nanny starts each worker with MALLOC_TRIM_THRESHOLD_=65536 (to hand memory back to the OS).
# glibc then stops adapting its mmap threshold, so every tensor of 128 KB or more is mmapped and
# unmapped, page-faulted and zeroed anew at each use: one stylize call at 128 px took 21.0 s in a
# worker against 11.7 s in a plain process (AMD EPYC, 1 thread, fp32). Set back for the worker
# process at its first task: 13.4 s, the rest is Dask's own threads.
HEAP_TRIM_BYTES = 256 * 1024 * 1024
HEAP_MMAP_BYTES = 64 * 1024 * 1024
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (glibc's malloc.h)
_heap_tuned = False
# The scheduler unpickles each task, so it needs vggstyle importable too, as every worker does.
ENVIRONMENT_HINT = " (install the same vggstyle on the scheduler and on every worker)"


def connect(address: str) -> Client:
    """A client of the scheduler at ``address``; one clear line when there is none."""
    try:
        return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"--scheduler {address}: cannot reach a Dask scheduler there ({exc}); start one "
                          "with `dask scheduler` or fix the address") from None


class Cancelled:
    """Set once the client has cancelled this task (Ctrl-C): Dask cannot stop a running thread,
    but the optimization checks this after every iteration and ends, freeing the worker."""

    def __init__(self, worker, key):
        self.worker, self.key = worker, key

    def is_set(self) -> bool:
        task = self.worker.state.tasks.get(self.key) if self.key is not None else None
        return self.key is not None and (task is None or task.state == "cancelled")


@contextlib.contextmanager
def worker_context():
    """Inside a task: (the worker's address, its --nthreads, the cancel flag), with torch's threads
    set to the worker's --nthreads (not every core) for the task."""
    from .device import set_threads

    worker = get_worker()
    _tune_heap()
    set_threads(worker.state.nthreads)
    yield worker.address, worker.state.nthreads, Cancelled(worker, getattr(thread_state, "key", None))


def _tune_heap() -> None:
    """Undo a small MALLOC_TRIM_THRESHOLD_ in this worker process (glibc only; elsewhere nothing)."""
    global _heap_tuned
    if _heap_tuned:
        return
    _heap_tuned = True
    small = os.environ.get("MALLOC_TRIM_THRESHOLD_", "").isdigit() and \
        int(os.environ["MALLOC_TRIM_THRESHOLD_"]) < HEAP_TRIM_BYTES
    if not small:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_BYTES)
        libc.mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_BYTES)
    except (OSError, AttributeError):  # not glibc: its allocator is not the one Dask tuned
        pass

