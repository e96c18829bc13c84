"""One batch job turned into an outcome (output bytes, losses, timings), and the local runner.

run_job is what runs wherever the work happens, on this machine or on a Dask worker; it
never writes into the output folder, it returns the bytes (outdir.record writes them).
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import StyleConfig
from ..errors import VggstyleError
from ..files import png_bytes
from .jobs import Task, is_video

@dataclass
class Outcome:
    """What a runner hands back for one job."""

    status: str  # done, failed or stopped (Ctrl-C: nothing to write)
    data: bytes | None = None  # the output file's bytes
    error: str = ""
    losses: dict = field(default_factory=dict)  # the final weighted terms: content, style, tv, total
    timings: dict = field(default_factory=dict)  # setup, optimize, encode, total (seconds)
    worker: str = ""  # the device, or the Dask worker's address


def _stylize(content, style, config, on_step):
    from ..optimize import stylize  # torch is imported here, on whichever machine does the work
    return stylize(content, style, config, on_step=on_step)


def run_job(content: Path, style: Path, config: StyleConfig, batch_hash: str, *, stop=None,
            catch_all: bool = True, cluster: dict | None = None) -> Outcome:
    """Stylize one pair; a user-fixable error (bad image, bad option) becomes a failed outcome.

    stop: a threading.Event; when set, the optimization ends after the current iteration and the
    outcome is 'stopped'. catch_all=False lets unexpected errors (out of memory, bugs) raise, so
    that Dask's retries= can run them again elsewhere. cluster: stylize_video's scheduler,
    resources and retries, for a clip spread over a cluster from here.
    """
    start = time.perf_counter()
    last = {}

    def on_step(progress):
        last["progress"] = progress
        return not (stop is not None and stop.is_set())

    try:
        if is_video(content):
            return _run_video(content, style, config, batch_hash, start, stop, cluster or {})
        image = _stylize(content, style, config, on_step)
        if stop is not None and stop.is_set():
            return Outcome("stopped")
        encode_start = time.perf_counter()
        data = png_bytes(image, {**image.info.get("vggstyle", config.to_dict()), "batch_hash": batch_hash})
    except VggstyleError as exc:
        return Outcome("failed", error=str(exc), timings={"total": time.perf_counter() - start})
    except Exception as exc:  # noqa: BLE001 - one job's crash (out of memory, ...) must not end the batch
        if not catch_all:
            raise
        return Outcome("failed", error=describe(exc), timings={"total": time.perf_counter() - start})
    end = time.perf_counter()
    progress = last.get("progress")
    optimize = progress.elapsed if progress else 0.0
    timings = {"total": end - start, "encode": end - encode_start, "optimize": optimize,
               "setup": encode_start - start - optimize}
    return Outcome("done", data, losses=dict(progress.losses) if progress else {}, timings=timings)


def describe(exc: BaseException) -> str:
    """One line for results.csv: the kind of error and its first line."""
    text = str(exc).strip().splitlines()
    kind = "out of memory" if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower() \
        else type(exc).__name__
    return f"{kind}: {text[0]}" if text else kind


def video_work_dir(batch_hash: str) -> Path:
    """Where a video job keeps its finished frames until its MP4 is written: named by the job's
    hash, so a batch run again after a stop (or a crash) resumes the clip where it was, on this
    machine; a finished job's frames are removed."""
    return Path(tempfile.gettempdir()) / f"vggstyle-batch-{batch_hash[:24]}.frames"


def _run_video(content: Path, style: Path, config: StyleConfig, batch_hash: str, start: float, stop,
               cluster: dict) -> Outcome:
    """A video content goes through stylize_video (flicker-free, frame rate and sound kept); the
    MP4 records batch_hash in its metadata, as a PNG result does, so a rerun skips it."""
    from ..video import VideoConfig, stylize_video

    work = video_work_dir(batch_hash)
    with tempfile.TemporaryDirectory(prefix="vggstyle-video-") as folder:
        output = Path(folder) / f"{content.stem}__{style.stem}.mp4"
        summary = stylize_video(content, [style], output, config, video=VideoConfig(work_dir=str(work)),
                                on_step=lambda progress: not (stop is not None and stop.is_set()),
                                tags={"batch_hash": batch_hash}, **cluster)
        if summary.stopped:
            return Outcome("stopped")
        data = output.read_bytes()
    shutil.rmtree(work, ignore_errors=True)
    losses = summary.losses[-1] if summary.losses else {}
    return Outcome("done", data, losses=dict(losses), timings={"total": time.perf_counter() - start},
                   error="; ".join(summary.warnings))


class LocalRunner:
    """This machine: one worker thread per device, each running one job at a time.

    Outcomes are yielded to the caller's thread as they finish. Closing the generator (Ctrl-C
    in the caller) stops the running jobs after their current iteration and waits for them.
    """

    def __init__(self, devices=("auto",)):
        self.devices = list(devices) or ["auto"]

    def __call__(self, tasks: list[Task]):
        if not tasks:
            return
        import torch

        from ..device import physical_cores, set_threads
        threads = tasks[0].config.threads  # the entry point's job: the library leaves threads alone
        cpu_jobs = sum(device == "cpu" for device in self.devices)
        before = torch.get_num_threads()  # given back when the batch ends: a library call leaves no trace
        set_threads(threads or (max(1, physical_cores() // cpu_jobs) if cpu_jobs > 1 else None))
        todo: queue.Queue = queue.Queue()
        for task in tasks:
            todo.put(task)
        done: queue.Queue = queue.Queue()
        stop = threading.Event()
        threads = [threading.Thread(target=self._work, args=(device, todo, done, stop), daemon=True,
                                    name=f"vggstyle-batch-{device}") for device in self.devices]
        for thread in threads:
            thread.start()
        try:
            for _ in tasks:
                yield _next(done)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            torch.set_num_threads(before)

    @staticmethod
    def _work(device: str, todo: queue.Queue, done: queue.Queue, stop: threading.Event) -> None:
        where = _device_name(device)
        while not stop.is_set():
            try:
                task = todo.get_nowait()
            except queue.Empty:
                return
            config = task.config if device == "auto" else task.config.replace(device=device)
            outcome = run_job(task.job.content, task.job.style, config, task.hash, stop=stop)
            outcome.worker = where
            if outcome.status != "stopped":
                done.put((task, outcome))


def _next(done: queue.Queue):
    """The next outcome; waits in short slices so that Ctrl-C reaches this (main) thread at once."""
    while True:
        try:
            return done.get(timeout=0.2)
        except queue.Empty:
            continue


def _device_name(device: str) -> str:
    if device != "auto":
        return device
    try:
        from ..device import resolve_device
        return str(resolve_device("auto"))
    except Exception:  # noqa: BLE001 - only a label for results.csv
        return device
