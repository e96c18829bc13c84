"""What both sides of a Dask task need, for every wing that uses a cluster (batch, video): the
client's connection, with one clear line when there is no scheduler, and on the worker its
address, its thread count and the flag that says the client has cancelled the task.

Imported only with a scheduler: `distributed` is the [cluster] extra.
"""

from __future__ import annotations

import contextlib

from distributed import Client, get_worker
from distributed.worker import thread_state

from .errors import ConfigError
from .heap import tune_heap

CONNECT_TIMEOUT = "20s"
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
    tune_heap(large_blocks=False)  # the nanny's MALLOC_TRIM_THRESHOLD_=65536 mmaps every tensor (heap.py)
    set_threads(worker.state.nthreads)
    yield worker.address, worker.state.nthreads, Cancelled(worker, getattr(thread_state, "key", None))
