"""The Dask runner: one task per image job on a `dask scheduler` / `dask worker` cluster, and each
clip spread over the cluster by the video wing (one task per chunk and pass).

Inputs travel as bytes in the task's arguments and results come back as bytes, so the
workers need no shared filesystem and no access to the client's paths. At most
``max_in_flight`` tasks exist at once (as_completed + submit), so a 10,000-job batch does
not sit in the scheduler's memory. A task that raises is retried (``retries``); a task whose
worker dies is rescheduled by the scheduler itself. Each worker process keeps the VGG
weights (and the network, where the library caches it) between tasks.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

from distributed import Client, as_completed

from ..config import StyleConfig
from ..remote import ENVIRONMENT_HINT, connect, worker_context
from .jobs import Task, is_video
from .work import Outcome, describe, run_job


def remote_job(content_name: str, content_bytes: bytes, style_name: str, style_bytes: bytes,
               config: StyleConfig, batch_hash: str) -> dict:
    """The task: runs on a worker, returns the outcome as plain data (bytes, numbers, text)."""
    start = time.perf_counter()
    with worker_context() as (address, _, stop), tempfile.TemporaryDirectory(prefix="vggstyle-task-") as folder:
        content = _write(Path(folder) / "content", content_name, content_bytes)
        style = _write(Path(folder) / "style", style_name, style_bytes)
        outcome = run_job(content, style, config, batch_hash, stop=stop, catch_all=False)
        for path, name in ((content, content_name), (style, style_name)):  # messages name the user's files
            outcome.error = outcome.error.replace(str(path), name)
    outcome.timings["worker_total"] = time.perf_counter() - start
    return {"status": outcome.status, "data": outcome.data, "error": outcome.error, "losses": outcome.losses,
            "timings": outcome.timings, "worker": address}


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir()
    path = folder / Path(name).name
    path.write_bytes(data)
    return path


class DaskRunner:
    """Submits tasks as earlier ones finish and yields (task, Outcome) in completion order."""

    def __init__(self, address: str, *, resources: dict | None = None, retries: int = 2,
                 max_in_flight: int | None = None):
        self.address = address
        self.resources = resources or None
        self.retries = retries
        self.max_in_flight = max_in_flight

    def __call__(self, tasks: list[Task]):
        """The images first, one task each; then each clip spread over the whole cluster from here
        (stylize_video with this scheduler: its chunks are the tasks, its work dir is here)."""
        yield from self._images([task for task in tasks if not is_video(task.job.content)])
        for task in (task for task in tasks if is_video(task.job.content)):
            outcome = run_job(task.job.content, task.job.style, task.config, task.hash,
                              cluster={"scheduler": self.address, "resources": self.resources, "retries": self.retries})
            outcome.worker = outcome.worker or f"spread over {self.address}"
            yield task, outcome

    def _images(self, tasks: list[Task]):
        if not tasks:
            return
        client = connect(self.address)
        running: dict = {}  # key -> (task, submit time, future)
        try:
            limit = self.max_in_flight or max(4, 2 * sum(client.nthreads().values()))
            numbered = iter(enumerate(tasks))
            futures = as_completed(loop=client.loop)
            for index, task in itertools.islice(numbered, limit):
                yield from self._submit(client, index, task, futures, running)
            for future in futures:
                task, submitted, _ = running.pop(future.key)
                yield task, self._outcome(future, submitted)
                future.release()
                for index, task in itertools.islice(numbered, 1):
                    yield from self._submit(client, index, task, futures, running)
        finally:
            if running:  # stopped early (Ctrl-C): nothing left behind on the cluster
                client.cancel([future for _, _, future in running.values()], force=True)
            client.close()

    def _submit(self, client: Client, index: int, task: Task, futures, running: dict):
        """Send one job, or yield its failure at once when an input cannot be read here."""
        try:
            content_bytes, style_bytes = task.job.content.read_bytes(), task.job.style.read_bytes()
        except OSError as exc:
            yield task, Outcome("failed", error=f"{exc.filename}: cannot read ({exc.strerror or exc})")
            return
        key = f"vggstyle-batch-{index}-{task.hash[:16]}"
        future = client.submit(remote_job, str(task.job.content), content_bytes, str(task.job.style),
                               style_bytes, task.config, task.hash, key=key, retries=self.retries,
                               resources=self.resources)
        running[key] = (task, time.perf_counter(), future)
        futures.add(future)

    @staticmethod
    def _outcome(future, submitted: float) -> Outcome:
        try:
            reply = future.result()
        except Exception as exc:  # noqa: BLE001 - retries spent or worker killed too often: record it, go on
            hint = ENVIRONMENT_HINT if "deserializ" in str(exc).lower() else ""
            return Outcome("failed", error=describe(exc) + hint)
        if reply["status"] == "stopped":  # cancelled on its worker though this client still wants it
            return Outcome("failed", error="the task was cancelled on its worker; run the batch again")
        reply["timings"]["client"] = time.perf_counter() - submitted
        return Outcome(reply["status"], reply["data"], reply["error"], reply["losses"], reply["timings"],
                       reply["worker"])
