"""The output folder of a batch: each finished output written whole, then its results.csv row, and
the hash in each output's metadata that lets a rerun skip what is done (the same options and the
same input bytes). Only the client writes here, so a cluster needs no shared filesystem."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import StyleConfig
from ..errors import OutputError
from ..files import file_sha256, write_atomically
from ..image import unwritable
from .jobs import Job, Task

RESULTS_NAME = "results.csv"
RESULT_COLUMNS = ("content", "style", "output", "status", "error", "seconds", "content_loss", "style_loss",
                  "tv_loss", "total_loss", "worker", "finished")
# Options that change how a result is computed but not what it is: left out of the hash, so
# that rerunning a batch on another device or with more threads still skips finished jobs.
NOT_HASHED = {"device", "threads", "checkpoint", "max_input_pixels"}
HASH_VERSION = 1


@dataclass
class JobResult:
    """What happened to one job: one row of results.csv, and what on_result receives."""

    job: Job
    status: str  # done, failed or skipped
    output: Path
    error: str = ""
    seconds: float = 0.0
    losses: dict = field(default_factory=dict)
    worker: str = ""
    timings: dict = field(default_factory=dict)  # setup, optimize, encode, transfer (seconds)

    def row(self) -> dict:
        losses = {f"{k}_loss": f"{self.losses[k]:.6g}" for k in ("content", "style", "tv", "total")
                  if k in self.losses}
        return {"content": str(self.job.content), "style": str(self.job.style), "output": self.output.name,
                "status": self.status, "error": self.error, "seconds": f"{self.seconds:.2f}", **losses,
                "worker": self.worker, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}



# ------------------------------------------------------------------ resumability
def job_hash(job: Job, config: StyleConfig, digests: dict) -> str:
    """A hash of everything that decides the result: the hashed options and both inputs' bytes."""
    options = {k: v for k, v in config.to_dict().items() if k not in NOT_HASHED}
    record = {"version": HASH_VERSION, "options": options,
              "content": file_digest(job.content, digests), "style": file_digest(job.style, digests)}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: Path, cache: dict) -> str:
    """sha256 of a file's bytes (cached: a style is shared by many jobs); '' if it cannot be read."""
    if path not in cache:
        try:
            cache[path] = file_sha256(path)
        except OSError:
            cache[path] = ""
    return cache[path]


def already_done(output: Path, wanted_hash: str) -> bool:
    """True when ``output`` exists and carries ``wanted_hash`` in its metadata (a PNG's text chunk,
    an MP4's comment tag)."""
    if not output.is_file():
        return False
    if output.suffix.lower() == ".mp4":
        from ..video.writer import read_parameters  # PyAV, only when there is a video to look at
        return (read_parameters(output) or {}).get("batch_hash") == wanted_hash
    if output.suffix.lower() != ".png":
        return False
    try:
        from PIL import Image
        with Image.open(output) as image:
            text = image.info.get("vggstyle")
        return bool(text) and json.loads(text).get("batch_hash") == wanted_hash
    except Exception:  # noqa: BLE001 - a damaged or foreign file is simply not a finished job
        return False



# ------------------------------------------------------------------ writing results
def prepare_outdir(outdir) -> Path:
    """Create the output folder if needed; fail early and clearly if it cannot be written."""
    outdir = Path(outdir).expanduser()
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"output folder {outdir}: is a file; give a folder")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"output folder {outdir}: cannot create it ({exc.strerror or exc}); "
                          "choose another folder") from None
    reason = unwritable(outdir)
    if reason:
        raise OutputError(f"output folder {outdir}: cannot write there ({reason}); choose another folder")
    return outdir


def append_row(path: Path, row: dict) -> None:
    """One whole CSV line per os.write on an O_APPEND file: rows never interleave or tear."""
    line = io.StringIO()
    writer = csv.DictWriter(line, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size == 0:
            writer.writeheader()
        writer.writerow(row)
        os.write(fd, line.getvalue().encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def record(task: Task, outcome, outdir: Path) -> JobResult:
    """Write a finished job's output (atomically) and then its results.csv row."""
    output = outdir / task.job.output
    status, error = outcome.status, outcome.error
    with _interrupt_deferred():
        if status == "done":
            try:
                write_atomically(output, outcome.data)
            except OSError as exc:
                status, error = "failed", f"output {output}: cannot write ({exc.strerror or exc})"
        result = JobResult(task.job, status, output, error, outcome.timings.get("total", 0.0),
                           outcome.losses, outcome.worker, outcome.timings)
        append_row(outdir / RESULTS_NAME, result.row())
    return result


@contextlib.contextmanager
def _interrupt_deferred():
    """Ctrl-C between an output and its row waits until both are written (never an output without
    its row, which a rerun would skip). Only the main thread can handle signals; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt here
