"""The web app's job queue: one worker thread per device, jobs run in the order they came.

Everything a job needs is decoded and checked before it is queued (server.py), so a
worker only ever sees well-formed input; anything that still goes wrong inside a run
marks that one job failed and the worker takes the next. Memory and disk stay
bounded: at most ``max_queued`` jobs wait, each holding images already shrunk to
the size it asked for; finished results live as PNG files in a private temporary
directory (mode 0700) for ``keep_seconds`` and at most ``keep_results`` of them.
Job ids are ``secrets.token_urlsafe`` strings and are only ever dictionary keys;
file names come from a counter, never from anything a client sent.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..config import StyleConfig
from ..errors import VggstyleError
from ..files import png_bytes

log = logging.getLogger("vggstyle.web")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
# The error of a job the server cancelled because it is stopping (the page offers to run it again).
STOPPED_BY_SHUTDOWN = "the server is shutting down: it stopped this job and keeps no result; run it again when it is back"
FINISHED = frozenset({DONE, FAILED, CANCELLED})

Runner = Callable[..., Image.Image]  # stylize's signature: (content, styles, config, *, on_step, masks=None)


class QueueFull(Exception):
    """The bounded queue has no room; the client should try again later (HTTP 503)."""


@dataclass
class Seat:
    """A place in the queue held for an upload still being read (JobBook.seat)."""

    used: bool = False


@dataclass(eq=False)
class Job:
    id: str
    number: int  # 1, 2, ...: names the result file and orders the queue
    config: StyleConfig
    content: Image.Image | None  # dropped once the job has run
    styles: list[Image.Image] | None
    size: tuple[int, int]  # (width, height) of the result
    masks: list[Image.Image] | None = None  # one per style, or None; dropped once the job has run
    working_size: tuple[int, int] | None = None  # of the scale being optimized (coarse to fine)
    scale: tuple[int, int] | None = None  # (1-based scale, number of scales)
    created: float = field(default_factory=time.time)
    state: str = QUEUED
    started: float | None = None
    finished: float | None = None
    device: str | None = None  # as resolved by the worker ("cpu", "cuda:0"), never "auto"
    step: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    iterations_per_second: float = 0.0
    error: str | None = None
    preview: bytes | None = None
    preview_version: int = 0
    result_path: Path | None = None
    parameters: dict | None = None  # what the run reports (result.info["vggstyle"]) once it has ended
    version: int = 0  # bumped on every change; the event stream sends when it moves
    cancel: threading.Event = field(default_factory=threading.Event)
    first_step: tuple[float, float] | None = None  # (elapsed, work units) when the first iteration was recorded
    partial_result: Path | None = None  # what a run that failed midway kept (a video: the frames done)

    kind = "image"  # what the content and the result are (video_jobs.VideoJob: "video")
    media_type = "image/png"
    suffix = ".png"
    poster = None  # a video job's last finished frame

    @property
    def total(self) -> int:
        return self.config.iterations

    def units_done(self) -> float:
        return self.work_done(self.step)

    def seconds_per_unit(self) -> float | None:
        """The speed since the first iteration: the time before it (the network, the style targets,
        a first-run kernel calibration) is paid once, and extrapolating it made the first ETA
        100 times too long. None until a second iteration is done."""
        if self.first_step is None:
            return None
        elapsed, units = self.first_step
        if self.units_done() <= units or self.elapsed <= elapsed:
            return None
        return (self.elapsed - elapsed) / (self.units_done() - units)

    def seconds_left(self) -> float | None:
        """At the speed shown so far (per pixel, so that the finer scales still to come count for
        what they cost); None until it can be measured."""
        rate = self.seconds_per_unit()
        return None if rate is None else (self.cost - self.units_done()) * rate

    def release(self) -> None:
        """Drop what the job held to run (images, a clip on disk) once it has ended."""
        self.content = self.styles = self.masks = None

    def finish(self, state: str) -> None:
        """End in ``state`` (done, failed, cancelled): the inputs and the preview go."""
        self.state = state
        self.finished = time.time()
        self.release()
        self.preview = None
        self.version += 1

    def drop_result(self) -> None:
        if self.result_path is not None:
            self.result_path.unlink(missing_ok=True)
            self.result_path = None
        self.version += 1

    def extra_snapshot(self) -> dict:
        return {}

    def execute(self, queue, config: StyleConfig) -> tuple[Path | None, dict]:
        """Run this job in ``queue``'s worker: the image runner, progress recorded on every step,
        the result written to the queue's store. Returns (the result file, its parameters)."""
        data, parameters = run_one(queue.image_runner, self, config, lambda p: queue.on_step(self, p))
        return queue.store.write(self.number, data), parameters

    @property
    def cost(self) -> float:
        """Work units (pixels x iterations): the time per unit is about constant on one device."""
        return self.work_done(self.total)

    @functools.cached_property
    def schedule(self) -> list[tuple[int, int]]:
        """The library's scale schedule, computed once: snapshots and ETAs are taken under the
        queue's lock, many times a second."""
        return self.config.scale_schedule()

    def work_done(self, steps: int) -> float:
        """Work units in the first ``steps`` iterations, scale by scale from the library's schedule:
        coarse scales cost less per iteration."""
        done, left = 0.0, steps
        pixels, long_side = self.size[0] * self.size[1], max(self.size)
        for side, iterations in self.schedule:
            n = min(left, iterations)
            done += pixels * (side / long_side) ** 2 * n
            left -= n
        return done + left * pixels


def snapshot(job: Job, position: int | None, eta: float | None) -> dict:
    """A JSON-able record of a job: what GET /api/jobs/{id} and the event stream send."""
    return {
        "id": job.id, "state": job.state, "queue_position": position, "step": job.step, "total": job.total,
        "losses": dict(job.losses), "size": list(job.size),
        "working_size": list(job.working_size) if job.working_size else None,
        "scale": list(job.scale) if job.scale else None,
        "elapsed": round(job.elapsed, 3), "iterations_per_second": round(job.iterations_per_second, 3),
        "eta_seconds": eta, "cancel_requested": job.cancel.is_set(), "error": job.error,
        "preview_version": job.preview_version, "has_result": job.result_path is not None,
        "created": job.created, "started": job.started, "finished": job.finished, "device": job.device,
        "parameters": job.parameters or job.config.to_dict(), "kind": job.kind, **job.extra_snapshot(),
    }


def default_runner(content, styles, config, *, on_step, masks=None):
    """A still job unless create_app is given another runner: vggstyle.stylize, on the server's threads."""
    from ..device import set_threads
    from ..optimize import stylize  # torch is imported with the first job, not with the server
    set_threads(config.threads)  # the server's process-wide choice (physical cores), made here, not by stylize
    return stylize(content, styles, config, on_step=on_step, masks=masks)


def _resolve_device(name: str) -> str:
    """The worker's device as the run will use it ("auto" -> "cpu" or "cuda"), for what jobs report."""
    from ..device import resolve_device
    return str(resolve_device(name))


def _error_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, (VggstyleError, FloatingPointError)):
        return first or type(exc).__name__
    if isinstance(exc, MemoryError) or "out of memory" in first.lower():
        return "out of memory: try a smaller image size"
    return f"internal error ({type(exc).__name__}{': ' + first if first else ''}); see the server log"


class Estimator:
    """Seconds per work unit and per-job overhead, learnt from the jobs that ran; ETAs from them."""

    def __init__(self):
        self.seconds_per_unit: float | None = None  # None until a job has run
        self.setup_seconds = 0.0  # network, targets, result encoding

    def learn(self, job: Job) -> None:
        rate = job.seconds_per_unit()
        if rate is None or job.started is None or job.finished is None:
            return
        old = self.seconds_per_unit
        self.seconds_per_unit = rate if old is None else 0.5 * (old + rate)
        overhead = max(0.0, job.finished - job.started - job.units_done() * rate)
        self.setup_seconds = 0.5 * (self.setup_seconds + overhead) if self.setup_seconds else overhead

    def left(self, job: Job) -> float | None:
        """Seconds a running job still needs: at its own speed once it has shown one, else at the
        speed learnt from earlier jobs."""
        if (left := job.seconds_left()) is not None:
            return left
        if self.seconds_per_unit is None:
            return None
        setup = self.setup_seconds if job.first_step is None else 0.0
        return setup + (job.cost - job.units_done()) * self.seconds_per_unit

    def eta(self, job: Job, running: list[Job], pending, workers: int) -> float | None:
        """Seconds until the job is done: measured speed while it runs; for a waiting job, the
        work ahead of it spread over the workers at the speed measured on earlier jobs."""
        if job.state in FINISHED:
            return 0.0
        if job.state == RUNNING:
            return None if (left := self.left(job)) is None else round(left, 2)
        if self.seconds_per_unit is None:
            return None
        busy = [0.0] * workers
        for i, other in enumerate(running):
            left = self.left(other)
            busy[i] = other.cost * self.seconds_per_unit if left is None else left
        for waiting in pending:
            slot = busy.index(min(busy))
            busy[slot] += self.setup_seconds + waiting.cost * self.seconds_per_unit
            if waiting is job:
                return round(busy[slot], 2)
        return None


class ResultStore:
    """Result PNGs in a private temporary directory (mode 0700), removed with the store."""

    def __init__(self):
        self.directory = Path(tempfile.mkdtemp(prefix="vggstyle-web-"))
        self.remove = weakref.finalize(self, shutil.rmtree, str(self.directory), ignore_errors=True)

    def write(self, number: int, data: bytes) -> Path:
        path = self.directory / f"result-{number:06d}.png"
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path


def run_one(runner: Runner, job: Job, config: StyleConfig, on_step) -> tuple[bytes, dict]:
    """Run a job's stylization; return the result as PNG bytes and the parameters it reports."""
    extra = {"masks": job.masks} if job.masks else {}  # a runner without masks need not take them
    result = runner(job.content, job.styles, config, on_step=on_step, **extra)
    parameters = result.info.get("vggstyle", config.to_dict())
    return png_bytes(result, parameters), parameters


class JobBook:
    """The jobs and their states under one lock: what clients submit, ask about and cancel.
    JobQueue adds the worker threads that run them."""

    def __init__(self, *, max_queued: int, keep_results: int, keep_seconds: float, workers: int):
        self.max_queued, self.keep_results, self.keep_seconds = max_queued, keep_results, keep_seconds
        self._lock = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._pending: deque[Job] = deque()
        self._running: dict[str, Job] = {}
        self._numbers = itertools.count(1)
        self._speed = Estimator()
        self._worker_count = workers
        self._seats = 0  # uploads being read or decoded, each holding a place (seat())
        self.closing = False  # set by stop(): no new jobs, running ones cancelled, event streams end

    # ------------------------------------------------------------------ client side
    @contextlib.contextmanager
    def seat(self):
        """A place in the queue held while an upload is read and decoded, taken before its body is
        read: so no more bodies are read at once than the queue has room for, and a client the
        queue cannot take is refused (QueueFull) before it has sent its files. Yields a Seat that
        submit() turns into the job's place; left unused, it is given back on exit."""
        with self._lock:
            if self.closing:
                raise QueueFull("the server is shutting down")
            if not self._has_room():
                raise QueueFull(f"the queue is full ({self.max_queued} jobs waiting or being uploaded); "
                                "try again in a few minutes")
            self._seats += 1
        held = Seat()
        try:
            yield held
        finally:
            with self._lock:
                if not held.used:
                    self._seats -= 1

    @property
    def lock(self) -> threading.Condition:
        """The lock every change to a job is made under (a video job's hooks take it too)."""
        return self._lock

    def submit(self, config: StyleConfig, content: Image.Image, styles: list[Image.Image],
               size: tuple[int, int], masks: list[Image.Image] | None = None, *, job_type=Job,
               seat: Seat | None = None, **extra) -> Job:
        """Queue a job (config validated, images decoded and shrunk) or raise QueueFull.
        seat: the place taken with seat() before the upload was read (it guarantees the room);
        job_type/extra: a Job subclass and its own fields (video_jobs.VideoJob: the clip)."""
        with self._lock:
            if self.closing:
                raise QueueFull("the server is shutting down")
            self._purge()
            if seat is not None and not seat.used:
                seat.used = True
                self._seats -= 1
            elif not self._has_room():
                raise QueueFull(f"the queue is full ({len(self._pending)} jobs waiting); try again in a few minutes")
            job = job_type(secrets.token_urlsafe(16), next(self._numbers), config, content, list(styles), size,
                           masks=list(masks) if masks else None, **extra)
            self._jobs[job.id] = job
            self._pending.append(job)
            self._lock.notify()
            return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            self._purge()
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a waiting or running job (a running one stops after its current iteration and
        keeps the image it had). Idempotent: a finished job is left as it is, result and all."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.state == QUEUED:
                self._pending.remove(job)
                job.finish(CANCELLED)
            elif job.state == RUNNING and not job.cancel.is_set():
                job.cancel.set()
                job.version += 1
            self._lock.notify_all()
            return job

    def discard(self, job_id: str) -> Job | None:
        """Forget a finished job and delete its result; a job still waiting or running is returned
        untouched (the caller refuses: cancel it first)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.state in FINISHED:
                self._discard(job)
            return job

    def describe(self, job: Job) -> dict:
        """A JSON-able snapshot: state, queue position, progress, losses and ETA."""
        with self._lock:
            position = None
            if job.state == QUEUED:
                position = next((i for i, j in enumerate(self._pending, 1) if j is job), None)
            eta = self._speed.eta(job, list(self._running.values()), self._pending, self._worker_count)
            return snapshot(job, position, eta)

    # ------------------------------------------------------------------ bookkeeping (lock held)
    def _has_room(self) -> bool:
        """Room for one more: max_queued may wait, and an idle worker takes one at once."""
        idle = max(0, self._worker_count - len(self._running))
        return len(self._pending) + self._seats < self.max_queued + idle

    def _discard(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        job.drop_result()

    def _purge(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.state in FINISHED), key=lambda j: j.finished)
        deadline = time.time() - self.keep_seconds
        excess = len(finished) - self.keep_results
        for i, job in enumerate(finished):
            if i < excess or job.finished < deadline:
                self._discard(job)


class JobQueue(JobBook):
    """Runs stylizations one at a time per device, in submission order: one worker thread each."""

    def __init__(self, devices=("auto",), *, max_queued: int = 16, keep_results: int = 50,
                 keep_seconds: float = 3600.0, preview_every: int = 5, runner: Runner | None = None,
                 video_runner=None, scheduler: str | None = None):
        if not devices:
            raise ValueError("give at least one device")
        super().__init__(max_queued=max_queued, keep_results=keep_results, keep_seconds=keep_seconds,
                         workers=len(devices))
        self.preview_every = max(1, preview_every)
        self.image_runner = runner or default_runner  # stylize's signature
        self.video_runner = video_runner  # stylize_video's signature; None: vggstyle.stylize_video
        self.scheduler = scheduler  # a Dask scheduler the video jobs are spread over; None: this machine
        self.store = ResultStore()  # where each job kind writes its result (Job.execute)
        self.directory = self.store.directory
        self.devices = tuple(devices)
        self._workers = [threading.Thread(target=self._work, args=(device,), daemon=True,
                                          name=f"vggstyle-worker-{i}-{device}")
                         for i, device in enumerate(self.devices)]
        for worker in self._workers:
            worker.start()

    def stats(self) -> dict:
        with self._lock:
            return {"workers": self._worker_count, "devices": list(self.devices), "queued": len(self._pending),
                    "running": len(self._running), "uploading": self._seats, "max_queued": self.max_queued,
                    "kept_results": sum(1 for j in self._jobs.values() if j.state in FINISHED)}

    def stop(self) -> None:
        """Begin shutting down without waiting: refuse new jobs, cancel the waiting ones, ask the
        running ones to stop after their current iteration. Safe to call from a signal handler."""
        with self._lock:
            self.closing = True
            while self._pending:
                job = self._pending.popleft()
                job.error = STOPPED_BY_SHUTDOWN
                job.finish(CANCELLED)
            for job in self._running.values():
                job.error = STOPPED_BY_SHUTDOWN
                job.cancel.set()
                job.version += 1
            self._lock.notify_all()

    def close(self, timeout: float = 30.0) -> bool:
        """stop(), wait up to ``timeout`` seconds in all for the workers, delete the results
        directory. Returns whether every worker ended (one stuck in a long step may not have)."""
        self.stop()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            if worker is not threading.current_thread():
                worker.join(max(0.0, deadline - time.monotonic()))
        self.store.remove()
        return not any(w.is_alive() for w in self._workers if w is not threading.current_thread())

    # ------------------------------------------------------------------ worker side
    def _work(self, device: str) -> None:
        resolved = None
        while True:
            with self._lock:
                while not self._pending and not self.closing:
                    self._lock.wait(timeout=60.0)
                    self._purge()  # an idle server still forgets old results on time
                if self.closing:
                    return
                job = self._pending.popleft()
                job.state, job.started, job.device = RUNNING, time.time(), resolved or device
                job.version += 1
                self._running[job.id] = job
            try:
                resolved = self._run(job, device, resolved)
            except Exception as exc:  # noqa: BLE001 - a bug in the bookkeeping must not stop the queue
                log.exception("job %s: the worker's bookkeeping failed", job.number)
                with self._lock:
                    self._running.pop(job.id, None)
                    if job.state not in FINISHED:
                        job.error = _error_message(exc)
                        job.finish(FAILED)

    def _run(self, job: Job, device: str, resolved: str | None) -> str | None:
        state, error, path, parameters = DONE, None, None, None
        try:
            resolved = resolved or _resolve_device(device)
            config = job.config.replace(device=resolved)
            with self._lock:
                job.config, job.device = config, resolved
            path, parameters = job.execute(self, config)  # each kind runs itself: the queue knows none
            state = CANCELLED if job.cancel.is_set() else DONE
        except Exception as exc:  # noqa: BLE001 - one bad job must not take the worker down
            state, error, path = FAILED, _error_message(exc), job.partial_result
            log_failure(job, exc)
        with self._lock:
            self._running.pop(job.id, None)
            if self.closing and path is not None:  # the results directory goes with the server
                path.unlink(missing_ok=True)
                path = None
            job.result_path, job.error, job.parameters = path, error or job.error, parameters
            job.finish(state)
            if job.id not in self._jobs and path is not None:  # discarded while it ran
                path.unlink(missing_ok=True)
            self._purge()
            try:
                self._speed.learn(job)
            except Exception:  # noqa: BLE001 - an ETA is worth less than the jobs behind this one
                log.exception("job %s: could not learn its speed", job.number)
        return resolved

    def on_step(self, job: Job, progress) -> bool:
        """stylize's on_step for an image job."""
        return self.record_step(job, progress.step, progress.total, progress.image,
                                lambda: record_progress(job, progress))

    def record_step(self, job: Job, step: int, total: int, image: Callable, record: Callable[[], None]) -> bool:
        """One iteration of ``job`` is done (and in the image its run returns, whatever we answer):
        a preview from ``image()`` at the first step and every preview_every-th but the last, then
        ``record()`` copies the step onto the job under the lock, and the version moves. Every kind
        of job reports through this. Returns whether the run goes on (not cancelled, not stopping)."""
        stop = job.cancel.is_set() or self.closing
        preview = None
        if not stop and (step == 1 or (step % self.preview_every == 0 and step < total)):
            picture = image()
            preview = None if picture is None else png_bytes(picture, compress_level=1)
        with self._lock:
            record()
            if preview is not None:
                job.preview = preview
                job.preview_version += 1
            job.version += 1
        return not stop


def record_progress(job: Job, progress) -> None:
    """Copy what a still's Progress reports onto the job (the queue's lock held)."""
    job.step = progress.step
    job.losses = dict(progress.losses)
    job.working_size = tuple(progress.size)
    if getattr(progress, "num_scales", 1) > 1:
        job.scale = (progress.scale, progress.num_scales)
    job.elapsed = progress.elapsed
    job.iterations_per_second = progress.iterations_per_second
    if job.first_step is None:
        job.first_step = (job.elapsed, job.units_done())


def log_failure(job: Job, exc: Exception) -> None:
    """A user's mistake is one warning line; anything else is a bug and gets its traceback."""
    if isinstance(exc, VggstyleError):
        log.warning("job %s failed: %s", job.number, exc)
    else:
        log.exception("job %s failed", job.number)
    _free_device_memory()


def _free_device_memory() -> None:
    """After a failure (often out of memory), hand cached GPU blocks back so the next job can start."""
    torch = sys.modules.get("torch")  # never imported just for this
    try:
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort; the next job reports what it still lacks
        log.debug("could not empty the CUDA cache", exc_info=True)
